//! A queue that keeps its front element inline.
//!
//! A stream's send buffer and its receive queue hold one chunk most of the time (a small
//! request or answer is one write and one STREAM frame). A `VecDeque` allocates on its first
//! push; this queue allocates only once it holds two elements at the same time, which a small
//! stream never does. Without spill room, emptying and dropping it checks one `Option` (an
//! empty `VecDeque` costs some 35 instructions to drop, and a stream has three).

use std::collections::VecDeque;

/// A FIFO queue whose front element lives inline (see the module documentation).
#[derive(Debug, Clone)]
pub(crate) struct SmallDeque<T> {
    /// The front element; `None` only when the queue is empty.
    front: Option<T>,
    /// The elements after the front one, in order; `None` until the queue spills (its room
    /// is kept once it has one).
    rest: Option<VecDeque<T>>,
}

impl<T> Default for SmallDeque<T> {
    fn default() -> Self {
        Self {
            front: None,
            rest: None,
        }
    }
}

impl<T> SmallDeque<T> {
    /// Whether the queue is empty.
    #[inline]
    pub(crate) fn is_empty(&self) -> bool {
        self.front.is_none()
    }

    /// The number of elements.
    #[inline]
    pub(crate) fn len(&self) -> usize {
        usize::from(self.front.is_some()) + self.rest.as_ref().map_or(0, VecDeque::len)
    }

    /// Appends `value` at the back.
    #[inline]
    pub(crate) fn push_back(&mut self, value: T) {
        if self.front.is_none() {
            self.front = Some(value);
        } else {
            self.rest.get_or_insert_with(VecDeque::new).push_back(value);
        }
    }

    /// The front element.
    #[inline]
    pub(crate) fn front_mut(&mut self) -> Option<&mut T> {
        self.front.as_mut()
    }

    /// Removes and returns the front element.
    #[inline]
    pub(crate) fn pop_front(&mut self) -> Option<T> {
        let value = self.front.take()?;
        self.front = self.rest.as_mut().and_then(VecDeque::pop_front);
        Some(value)
    }

    /// Whether the next push allocates: an element held inline and no spill room yet.
    #[inline]
    pub(crate) fn wants_spill(&self) -> bool {
        self.front.is_some() && self.room() == 0
    }

    /// The spill room's capacity (elements).
    #[inline]
    fn room(&self) -> usize {
        self.rest.as_ref().map_or(0, VecDeque::capacity)
    }

    /// Removes every element; the spill memory is kept for reuse.
    pub(crate) fn clear(&mut self) {
        self.front = None;
        if let Some(rest) = &mut self.rest {
            rest.clear();
        }
    }

    /// The index of the first element for which `pred` is false, the queue being
    /// partitioned by it (all `true` first), as [`VecDeque::partition_point`].
    pub(crate) fn partition_point(&self, mut pred: impl FnMut(&T) -> bool) -> usize {
        match &self.front {
            None => 0,
            Some(f) if !pred(f) => 0,
            Some(_) => 1 + self.rest.as_ref().map_or(0, |r| r.partition_point(pred)),
        }
    }

    /// The elements from index `first` on, in order.
    pub(crate) fn iter_from(&self, first: usize) -> impl Iterator<Item = &T> {
        let front = self.front.iter().take(usize::from(first == 0));
        let skip = first.saturating_sub(1);
        front.chain(
            self.rest
                .iter()
                .flat_map(move |r| r.range(skip.min(r.len())..)),
        )
    }
}

/// A spill room larger than this (elements) is let go rather than kept: a burst's room would
/// hold its memory for queues that need little.
const KEEP_ROOM: usize = 64;

/// Spill rooms that finished queues let go, lent to the next queues that hold two elements
/// at once: those then allocate nothing. Holds at most `MAX` rooms of at most 64 elements.
#[derive(Debug)]
pub(crate) struct SpillPool<T, const MAX: usize> {
    rooms: Vec<VecDeque<T>>,
}

impl<T, const MAX: usize> Default for SpillPool<T, MAX> {
    fn default() -> Self {
        Self { rooms: Vec::new() }
    }
}

impl<T, const MAX: usize> SpillPool<T, MAX> {
    /// Gives `q` a room if its next push would allocate one and the pool holds one.
    #[inline]
    pub(crate) fn lend(&mut self, q: &mut SmallDeque<T>) {
        if q.wants_spill() {
            if let Some(room) = self.rooms.pop() {
                q.rest = Some(room);
            }
        }
    }

    /// Takes back `q`'s room, emptied, if it is small and the pool has space (`q` is done
    /// with: its elements beyond the front are dropped).
    #[inline]
    pub(crate) fn keep(&mut self, q: &mut SmallDeque<T>) {
        let cap = q.room();
        if cap == 0 || cap > KEEP_ROOM || self.rooms.len() >= MAX {
            return;
        }
        if let Some(mut room) = q.rest.take() {
            room.clear();
            self.rooms.push(room);
        }
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
        assert!(q.is_empty() && q.room() == 0);
    }

    #[test]
    fn spill_room_moves_between_queues_through_the_pool() {
        let mut pool = SpillPool::<_, 1>::default();
        let mut a = SmallDeque::default();
        a.push_back(1);
        assert!(a.wants_spill());
        pool.lend(&mut a);
        assert_eq!(a.room(), 0, "an empty pool lends nothing");
        a.push_back(2);
        assert!(!a.wants_spill() && a.room() > 0);
        let cap = a.room();
        pool.keep(&mut a);
        assert!(a.room() == 0 && pool.rooms.len() == 1 && pool.rooms[0].is_empty());
        // Full: a second room is let go.
        let mut c = SmallDeque::default();
        c.push_back(5);
        c.push_back(6);
        pool.keep(&mut c);
        assert_eq!(pool.rooms.len(), 1);
        let mut b = SmallDeque::default();
        b.push_back(3);
        pool.lend(&mut b);
        assert!(pool.rooms.is_empty() && !b.wants_spill());
        b.push_back(4);
        assert_eq!(b.room(), cap);
        assert_eq!(b.iter_from(0).copied().collect::<Vec<_>>(), [3, 4]);
        assert_eq!(
            (b.pop_front(), b.pop_front(), b.pop_front()),
            (Some(3), Some(4), None)
        );
        // A room grown past the bound is not kept.
        let mut big = SmallDeque::default();
        for i in 0..=KEEP_ROOM as u32 + 1 {
            big.push_back(i);
        }
        let mut pool = SpillPool::<_, 4>::default();
        pool.keep(&mut big);
        assert!(pool.rooms.is_empty());
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
