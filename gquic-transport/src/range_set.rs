//! A set of `u64` values stored as disjoint, non-adjacent half-open ranges.
//!
//! Used for received packet numbers (ACK generation, RFC 9000 §13.2), acknowledged and lost
//! stream data, and out-of-order reassembly. Operations are `O(log n)` in the number of ranges;
//! the set never stores two ranges that touch.

use std::collections::BTreeMap;
use std::ops::Range;

/// Disjoint half-open ranges of `u64`, merged on insertion.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RangeSet {
    /// start -> end (exclusive).
    map: BTreeMap<u64, u64>,
}

impl RangeSet {
    /// An empty set.
    pub fn new() -> Self {
        Self::default()
    }

    /// Number of disjoint ranges.
    pub fn len(&self) -> usize {
        self.map.len()
    }

    /// Whether the set is empty.
    pub fn is_empty(&self) -> bool {
        self.map.is_empty()
    }

    /// Whether `value` is in the set.
    pub fn contains(&self, value: u64) -> bool {
        self.map
            .range(..=value)
            .next_back()
            .is_some_and(|(_, &end)| value < end)
    }

    /// Whether every value of `range` is in the set.
    pub fn contains_range(&self, range: Range<u64>) -> bool {
        if range.is_empty() {
            return true;
        }
        self.map
            .range(..=range.start)
            .next_back()
            .is_some_and(|(_, &end)| range.end <= end)
    }

    /// Adds `range`; returns whether any value was new.
    pub fn insert(&mut self, range: Range<u64>) -> bool {
        if range.is_empty() {
            return false;
        }
        let mut start = range.start;
        let mut end = range.end;
        // In order (packet numbers, acknowledged stream data): at or after the start of the
        // last range, only the last range can touch it, and it grows in place.
        if let Some(mut last) = self.map.last_entry() {
            if start >= *last.key() {
                let e = *last.get();
                if end <= e {
                    return false;
                }
                if start <= e {
                    *last.get_mut() = end;
                } else {
                    self.map.insert(start, end);
                }
                return true;
            }
        }
        // Merge with a range that starts before and touches or overlaps.
        if let Some((&s, &e)) = self.map.range(..=start).next_back() {
            if e >= end {
                return false;
            }
            if e >= start {
                start = s;
                self.map.remove(&s);
            }
        }
        // Merge with ranges that start inside [start, end].
        while let Some((&s, &e)) = self.map.range(start..=end).next() {
            self.map.remove(&s);
            end = end.max(e);
        }
        self.map.insert(start, end);
        true
    }

    /// Adds one value; returns whether it was new.
    pub fn insert_one(&mut self, value: u64) -> bool {
        self.insert(value..value.saturating_add(1))
    }

    /// Removes `range`; returns whether anything was removed.
    pub fn remove(&mut self, range: Range<u64>) -> bool {
        if range.is_empty() {
            return false;
        }
        let mut removed = false;
        // A range starting before `range.start` may need splitting.
        if let Some((&s, &e)) = self.map.range(..range.start).next_back() {
            if e > range.start {
                removed = true;
                self.map.insert(s, range.start);
                if e > range.end {
                    self.map.insert(range.end, e);
                    return true;
                }
            }
        }
        while let Some((&s, &e)) = self.map.range(range.start..range.end).next() {
            removed = true;
            self.map.remove(&s);
            if e > range.end {
                self.map.insert(range.end, e);
                break;
            }
        }
        removed
    }

    /// The smallest value.
    pub fn min(&self) -> Option<u64> {
        self.map.keys().next().copied()
    }

    /// The largest value.
    pub fn max(&self) -> Option<u64> {
        self.map.values().next_back().map(|&e| e - 1)
    }

    /// The lowest range.
    pub fn first(&self) -> Option<Range<u64>> {
        self.map.iter().next().map(|(&s, &e)| s..e)
    }

    /// Removes and returns the lowest range.
    pub fn pop_first(&mut self) -> Option<Range<u64>> {
        self.map.pop_first().map(|(s, e)| s..e)
    }

    /// Removes the lowest ranges until at most `max` remain (bounded ACK state, RFC 9000
    /// §13.2.3 allows forgetting old ranges).
    pub fn truncate_low(&mut self, max: usize) {
        while self.map.len() > max {
            self.map.pop_first();
        }
    }

    /// The ranges in ascending order.
    pub fn iter(&self) -> impl DoubleEndedIterator<Item = Range<u64>> + ExactSizeIterator + '_ {
        self.map.iter().map(|(&s, &e)| s..e)
    }

    /// The ranges of the set that overlap `range`, clipped to it, ascending.
    pub fn overlapping(&self, range: Range<u64>) -> impl Iterator<Item = Range<u64>> + '_ {
        let before = self
            .map
            .range(..range.start)
            .next_back()
            .filter(|(_, &e)| e > range.start)
            .map(|(&s, &e)| s..e);
        let inside = self.map.range(range.start..range.end).map(|(&s, &e)| s..e);
        before
            .into_iter()
            .chain(inside)
            .map(move |r| r.start.max(range.start)..r.end.min(range.end))
    }

    /// Removes everything.
    pub fn clear(&mut self) {
        self.map.clear();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::collections::BTreeSet;

    #[test]
    fn merges_and_splits() {
        let mut s = RangeSet::new();
        assert!(s.insert(10..20));
        assert!(s.insert(30..40));
        assert!(!s.insert(12..18));
        assert!(s.insert(20..30), "touching ranges merge");
        assert_eq!(s.iter().collect::<Vec<_>>(), vec![10..40]);
        assert!(s.remove(15..25));
        assert_eq!(s.iter().collect::<Vec<_>>(), vec![10..15, 25..40]);
        assert!(s.contains(14) && !s.contains(15) && s.contains(25));
        assert!(s.contains_range(26..40) && !s.contains_range(14..26));
        assert_eq!((s.min(), s.max()), (Some(10), Some(39)));
        assert_eq!(
            s.overlapping(12..30).collect::<Vec<_>>(),
            vec![12..15, 25..30]
        );
        s.insert(0..1);
        s.truncate_low(2);
        assert_eq!(s.iter().collect::<Vec<_>>(), vec![10..15, 25..40]);
    }

    #[test]
    fn in_order_inserts_grow_the_last_range() {
        let mut s = RangeSet::new();
        for pn in 0..1000 {
            assert!(s.insert_one(pn));
        }
        assert!(!s.insert_one(999) && !s.insert(500..1000));
        assert!(s.insert(998..1010) && s.insert(1020..1030) && s.insert(1025..1040));
        assert_eq!(s.iter().collect::<Vec<_>>(), vec![0..1010, 1020..1040]);
        assert!(s.insert(1040..1041) && s.insert(1010..1020));
        assert_eq!(s.iter().collect::<Vec<_>>(), vec![0..1041]);
    }

    proptest! {
        /// The set behaves exactly like a set of integers under any sequence of operations, and
        /// never stores touching ranges.
        #[test]
        fn matches_model(ops in proptest::collection::vec((any::<bool>(), 0u64..200, 0u64..20), 0..60)) {
            let mut s = RangeSet::new();
            let mut model = BTreeSet::new();
            for (insert, start, len) in ops {
                let r = start..start + len;
                if insert {
                    let new = r.clone().any(|v| !model.contains(&v));
                    prop_assert_eq!(s.insert(r.clone()), new);
                    model.extend(r);
                } else {
                    let had = r.clone().any(|v| model.contains(&v));
                    prop_assert_eq!(s.remove(r.clone()), had);
                    for v in r { model.remove(&v); }
                }
                let flat: BTreeSet<u64> = s.iter().flatten().collect();
                prop_assert_eq!(&flat, &model);
                let ranges: Vec<_> = s.iter().collect();
                for w in ranges.windows(2) {
                    prop_assert!(w[0].end < w[1].start);
                }
                for v in 0..220 {
                    prop_assert_eq!(s.contains(v), model.contains(&v));
                }
            }
        }
    }
}
