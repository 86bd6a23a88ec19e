//! A queue that keeps its front element inline.
//!
//! A stream's send buffer and its receive queue hold one chunk most of the time (a small
//! request or answer is one write and one STREAM frame). A `VecDeque` allocates on its first
//! push; this queue allocates only once it holds two elements at the same time, which a small
//! stream never does.

use std::collections::VecDeque;

/// A FIFO queue whose front element lives inline (see the module documentation).
#[derive(Debug, Clone)]
pub(crate) struct SmallDeque<T> {
    /// The front element; `None` only when the queue is empty.
    front: Option<T>,
    /// The elements after the front one, in order.
    rest: VecDeque<T>,
}

impl<T> Default for SmallDeque<T> {
    fn default() -> Self {
        Self {
            front: None,
            rest: VecDeque::new(),
        }
    }
}

impl<T> SmallDeque<T> {
    /// Whether the queue is empty.
    pub(crate) fn is_empty(&self) -> bool {
        self.front.is_none()
    }

    /// The number of elements.
    pub(crate) fn len(&self) -> usize {
        usize::from(self.front.is_some()) + self.rest.len()
    }

    /// Appends `value` at the back.
    pub(crate) fn push_back(&mut self, value: T) {
        if self.front.is_none() {
            self.front = Some(value);
        } else {
            self.rest.push_back(value);
        }
    }

    /// The front element.
    pub(crate) fn front_mut(&mut self) -> Option<&mut T> {
        self.front.as_mut()
    }

    /// Removes and returns the front element.
    pub(crate) fn pop_front(&mut self) -> Option<T> {
        let value = self.front.take()?;
        self.front = self.rest.pop_front();
        Some(value)
    }

    /// Whether the next push allocates: an element held inline and no spill room yet.
    pub(crate) fn wants_spill(&self) -> bool {
        self.front.is_some() && self.rest.capacity() == 0
    }

    /// Gives the queue spill room (an empty `VecDeque` another queue let go), if it has none.
    pub(crate) fn give_spill(&mut self, room: VecDeque<T>) {
        if self.rest.capacity() == 0 && room.is_empty() {
            self.rest = room;
        }
    }

    /// Takes the spill room out, for another queue, if it has room and nothing in it.
    pub(crate) fn take_spill(&mut self) -> Option<VecDeque<T>> {
        if self.rest.capacity() == 0 || !self.rest.is_empty() {
            return None;
        }
        Some(std::mem::take(&mut self.rest))
    }

    /// Removes every element; the spill memory is kept for reuse.
    pub(crate) fn clear(&mut self) {
        self.front = None;
        self.rest.clear();
    }

    /// The index of the first element for which `pred` is false, the queue being
    /// partitioned by it (all `true` first), as [`VecDeque::partition_point`].
    pub(crate) fn partition_point(&self, mut pred: impl FnMut(&T) -> bool) -> usize {
        match &self.front {
            None => 0,
            Some(f) if !pred(f) => 0,
            Some(_) => 1 + self.rest.partition_point(pred),
        }
    }

    /// The elements from index `first` on, in order.
    pub(crate) fn iter_from(&self, first: usize) -> impl Iterator<Item = &T> {
        let front = self.front.iter().take(usize::from(first == 0));
        let skip = first.saturating_sub(1).min(self.rest.len());
        front.chain(self.rest.range(skip..))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn one_element_at_a_time_never_allocates() {
        let mut q = SmallDeque::default();
        for i in 0..100 {
            q.push_back(i);
            assert_eq!(q.pop_front(), Some(i));
        }
        assert!(q.is_empty() && q.rest.capacity() == 0);
    }

    #[test]
    fn spill_room_moves_between_queues() {
        let mut a = SmallDeque::default();
        a.push_back(1);
        assert!(a.wants_spill());
        a.push_back(2);
        assert!(!a.wants_spill());
        // Not while it holds elements beyond the front.
        assert!(a.take_spill().is_none());
        assert_eq!((a.pop_front(), a.pop_front()), (Some(1), Some(2)));
        let room = a.take_spill().expect("room, empty");
        assert!(room.capacity() > 0 && a.rest.capacity() == 0);
        let mut b = SmallDeque::default();
        b.push_back(3);
        let cap = room.capacity();
        b.give_spill(room);
        assert!(!b.wants_spill());
        b.push_back(4);
        assert_eq!(b.rest.capacity(), cap);
        assert_eq!(
            (b.pop_front(), b.pop_front(), b.pop_front()),
            (Some(3), Some(4), None)
        );
    }

    #[derive(Debug, Clone)]
    enum Op {
        Push(u32),
        Pop,
        Bump,
        Clear,
    }

    fn op() -> impl Strategy<Value = Op> {
        prop_oneof![
            4 => any::<u32>().prop_map(Op::Push),
            3 => Just(Op::Pop),
            1 => Just(Op::Bump),
            1 => Just(Op::Clear),
        ]
    }

    proptest! {
        /// Any sequence of operations leaves the queue as a `VecDeque` would be.
        #[test]
        fn behaves_as_a_vecdeque(ops in proptest::collection::vec(op(), 0..200), cut in any::<u32>()) {
            let mut q = SmallDeque::default();
            let mut model = VecDeque::new();
            for op in ops {
                match op {
                    Op::Push(v) => {
                        q.push_back(v);
                        model.push_back(v);
                    }
                    Op::Pop => prop_assert_eq!(q.pop_front(), model.pop_front()),
                    Op::Bump => {
                        if let (Some(a), Some(b)) = (q.front_mut(), model.front_mut()) {
                            *a = a.wrapping_add(1);
                            *b = b.wrapping_add(1);
                        }
                    }
                    Op::Clear => {
                        q.clear();
                        model.clear();
                    }
                }
                prop_assert_eq!(q.len(), model.len());
                prop_assert_eq!(q.is_empty(), model.is_empty());
                for first in 0..=model.len() + 1 {
                    let got: Vec<u32> = q.iter_from(first).copied().collect();
                    let want: Vec<u32> = model.iter().skip(first).copied().collect();
                    prop_assert_eq!(got, want);
                }
            }
            // partition_point on a sorted queue.
            let mut s = SmallDeque::default();
            let mut values: Vec<u32> = model.iter().copied().collect();
            values.sort_unstable();
            for v in &values {
                s.push_back(*v);
            }
            let sorted_model: VecDeque<u32> = values.into_iter().collect();
            prop_assert_eq!(
                s.partition_point(|v| *v < cut),
                sorted_model.partition_point(|v| *v < cut)
            );
        }
    }
}
