//! A set of `u64` values stored as disjoint, non-adjacent half-open ranges.
//!
//! Used for received packet numbers (ACK generation, RFC 9000 §13.2), acknowledged and lost
//! stream data, and out-of-order reassembly. Operations are `O(log n)` in the number of ranges;
//! the set never stores two ranges that touch.

use std::collections::BTreeMap;
use std::ops::Range;

/// Disjoint half-open ranges of `u64`, merged on insertion.
///
/// Zero or one range is held inline; a set that needs two apart moves into a `BTreeMap` (one
/// 192-byte node for up to eleven ranges) and stays there until [`RangeSet::shrink`]. Most sets
/// are one range for their whole life (packet numbers received in order, stream data
/// acknowledged in order), so they never allocate.
#[derive(Clone)]
pub struct RangeSet(Repr);

#[derive(Clone)]
enum Repr {
    /// `start..end`; empty when they are equal.
    One(u64, u64),
    /// start -> end (exclusive); the ranges never touch.
    Many(BTreeMap<u64, u64>),
}

/// An empty map to range over when the set is inline (`BTreeMap::new` does not allocate).
static EMPTY: BTreeMap<u64, u64> = BTreeMap::new();

impl Default for RangeSet {
    fn default() -> Self {
        Self::new()
    }
}

impl PartialEq for RangeSet {
    fn eq(&self, other: &Self) -> bool {
        self.iter().eq(other.iter())
    }
}

impl Eq for RangeSet {}

impl std::fmt::Debug for RangeSet {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_set().entries(self.iter()).finish()
    }
}

impl RangeSet {
    /// An empty set.
    pub const fn new() -> Self {
        Self(Repr::One(0, 0))
    }

    /// Number of disjoint ranges.
    pub fn len(&self) -> usize {
        match &self.0 {
            Repr::One(s, e) => usize::from(s < e),
            Repr::Many(map) => map.len(),
        }
    }

    /// Whether the set is empty.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Whether `value` is in the set.
    #[inline]
    pub fn contains(&self, value: u64) -> bool {
        match &self.0 {
            Repr::One(s, e) => (*s..*e).contains(&value),
            Repr::Many(map) => {
                // In order (a packet number past all received so far): the last range
                // decides, found without a search.
                if let Some((&s, &e)) = map.last_key_value() {
                    if value >= s {
                        return value < e;
                    }
                }
                map.range(..=value)
                    .next_back()
                    .is_some_and(|(_, &end)| value < end)
            }
        }
    }

    /// Whether every value of `range` is in the set.
    pub fn contains_range(&self, range: Range<u64>) -> bool {
        if range.is_empty() {
            return true;
        }
        match &self.0 {
            Repr::One(s, e) => *s <= range.start && range.end <= *e,
            Repr::Many(map) => map
                .range(..=range.start)
                .next_back()
                .is_some_and(|(_, &end)| range.end <= end),
        }
    }

    /// Adds `range`; returns whether any value was new.
    pub fn insert(&mut self, range: Range<u64>) -> bool {
        if range.is_empty() {
            return false;
        }
        let map = match &mut self.0 {
            Repr::One(s, e) => {
                if s == e {
                    (*s, *e) = (range.start, range.end);
                    return true;
                }
                if range.start <= *e && range.end >= *s {
                    // Touches or overlaps: still one range.
                    let grown = range.start < *s || range.end > *e;
                    (*s, *e) = ((*s).min(range.start), (*e).max(range.end));
                    return grown;
                }
                let map = BTreeMap::from([(*s, *e), (range.start, range.end)]);
                self.0 = Repr::Many(map);
                return true;
            }
            Repr::Many(map) => map,
        };
        let mut start = range.start;
        let mut end = range.end;
        // In order (packet numbers, acknowledged stream data): at or after the start of the
        // last range, only the last range can touch it, and it grows in place.
        if let Some(mut last) = map.last_entry() {
            if start >= *last.key() {
                let e = *last.get();
                if end <= e {
                    return false;
                }
                if start <= e {
                    *last.get_mut() = end;
                } else {
                    map.insert(start, end);
                }
                return true;
            }
        }
        // Merge with a range that starts before and touches or overlaps.
        if let Some((&s, &e)) = map.range(..=start).next_back() {
            if e >= end {
                return false;
            }
            if e >= start {
                start = s;
                map.remove(&s);
            }
        }
        // Merge with ranges that start inside [start, end].
        while let Some((&s, &e)) = map.range(start..=end).next() {
            map.remove(&s);
            end = end.max(e);
        }
        map.insert(start, end);
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
        let map = match &mut self.0 {
            Repr::One(s, e) => {
                if s == e || range.end <= *s || range.start >= *e {
                    return false;
                }
                let left = (*s < range.start).then_some((*s, range.start));
                let right = (range.end < *e).then_some((range.end, *e));
                self.0 = match (left, right) {
                    (Some(l), Some(r)) => Repr::Many(BTreeMap::from([l, r])),
                    (Some((s, e)), None) | (None, Some((s, e))) => Repr::One(s, e),
                    (None, None) => Repr::One(0, 0),
                };
                return true;
            }
            Repr::Many(map) => map,
        };
        let mut removed = false;
        // A range starting before `range.start` may need splitting.
        if let Some((&s, &e)) = map.range(..range.start).next_back() {
            if e > range.start {
                removed = true;
                map.insert(s, range.start);
                if e > range.end {
                    map.insert(range.end, e);
                    return true;
                }
            }
        }
        while let Some((&s, &e)) = map.range(range.start..range.end).next() {
            removed = true;
            map.remove(&s);
            if e > range.end {
                map.insert(range.end, e);
                break;
            }
        }
        removed
    }

    /// The smallest value.
    pub fn min(&self) -> Option<u64> {
        self.first().map(|r| r.start)
    }

    /// The largest value.
    pub fn max(&self) -> Option<u64> {
        self.iter().next_back().map(|r| r.end - 1)
    }

    /// The lowest range.
    pub fn first(&self) -> Option<Range<u64>> {
        self.iter().next()
    }

    /// Removes and returns the lowest range.
    pub fn pop_first(&mut self) -> Option<Range<u64>> {
        match &mut self.0 {
            Repr::One(s, e) => {
                let r = (*s < *e).then_some(*s..*e);
                self.0 = Repr::One(0, 0);
                r
            }
            Repr::Many(map) => map.pop_first().map(|(s, e)| s..e),
        }
    }

    /// Removes the lowest ranges until at most `max` remain (bounded ACK state, RFC 9000
    /// §13.2.3 allows forgetting old ranges).
    #[inline]
    pub fn truncate_low(&mut self, max: usize) {
        while self.len() > max {
            self.pop_first();
        }
    }

    /// The ranges in ascending order.
    pub fn iter(&self) -> Iter<'_> {
        match &self.0 {
            Repr::One(s, e) => Iter(IterRepr::One((*s < *e).then_some(*s..*e))),
            Repr::Many(map) => Iter(IterRepr::Many(map.iter())),
        }
    }

    /// The ranges of the set that overlap `range`, clipped to it, ascending.
    pub fn overlapping(&self, range: Range<u64>) -> impl Iterator<Item = Range<u64>> + '_ {
        let (before, map) = match &self.0 {
            Repr::One(s, e) => {
                let overlaps = s < e && *s < range.end && *e > range.start;
                (overlaps.then_some(*s..*e), &EMPTY)
            }
            Repr::Many(map) => (
                map.range(..range.start)
                    .next_back()
                    .filter(|(_, &e)| e > range.start)
                    .map(|(&s, &e)| s..e),
                map,
            ),
        };
        let inside = map
            .range(range.start..range.end.max(range.start))
            .map(|(&s, &e)| s..e);
        before
            .into_iter()
            .chain(inside)
            .map(move |r| r.start.max(range.start)..r.end.min(range.end))
    }

    #[cfg(any(feature = "aws-lc-rs", feature = "ring"))]
    /// Writes the ranges out (connection hibernation).
    pub(crate) fn pack(&self, p: &mut crate::pack::Packer) {
        p.u64(self.len() as u64);
        let mut last = 0;
        for r in self.iter() {
            // Deltas: most are small.
            p.u64(r.start - last);
            p.u64(r.end - r.start);
            last = r.end;
        }
    }

    #[cfg(any(feature = "aws-lc-rs", feature = "ring"))]
    /// Reads back what [`RangeSet::pack`] wrote.
    pub(crate) fn unpack(u: &mut crate::pack::Unpacker<'_>) -> Option<Self> {
        let mut set = Self::new();
        let mut last = 0u64;
        for _ in 0..u.u64()? {
            let start = last.checked_add(u.u64()?)?;
            let end = start.checked_add(u.u64()?)?;
            set.insert(start..end);
            last = end;
        }
        Some(set)
    }

    /// Removes everything.
    pub fn clear(&mut self) {
        self.0 = Repr::One(0, 0);
    }

    /// Lets the map go if at most one range is left in it (an idle connection's received
    /// packet numbers, see `Connection::compact`).
    pub fn shrink(&mut self) {
        if let Repr::Many(map) = &self.0 {
            if map.len() <= 1 {
                let (s, e) = map.first_key_value().map_or((0, 0), |(&s, &e)| (s, e));
                self.0 = Repr::One(s, e);
            }
        }
    }
}

/// The ranges of a [`RangeSet`], ascending.
#[derive(Debug, Clone)]
pub struct Iter<'a>(IterRepr<'a>);

#[derive(Debug, Clone)]
enum IterRepr<'a> {
    One(Option<Range<u64>>),
    Many(std::collections::btree_map::Iter<'a, u64, u64>),
}

impl Iterator for Iter<'_> {
    type Item = Range<u64>;

    fn next(&mut self) -> Option<Range<u64>> {
        match &mut self.0 {
            IterRepr::One(r) => r.take(),
            IterRepr::Many(it) => it.next().map(|(&s, &e)| s..e),
        }
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        match &self.0 {
            IterRepr::One(r) => (r.iter().len(), Some(r.iter().len())),
            IterRepr::Many(it) => it.size_hint(),
        }
    }
}

impl DoubleEndedIterator for Iter<'_> {
    fn next_back(&mut self) -> Option<Range<u64>> {
        match &mut self.0 {
            IterRepr::One(r) => r.take(),
            IterRepr::Many(it) => it.next_back().map(|(&s, &e)| s..e),
        }
    }
}

impl ExactSizeIterator for Iter<'_> {}

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
    fn one_range_stays_inline_and_shrink_lets_the_map_go() {
        let mut s = RangeSet::new();
        for pn in 0..100 {
            s.insert_one(pn);
        }
        s.insert(50..150);
        assert!(matches!(s.0, Repr::One(0, 150)), "{s:?}");
        s.insert(200..210);
        assert!(matches!(s.0, Repr::Many(_)));
        s.shrink();
        assert!(matches!(s.0, Repr::Many(_)), "two ranges keep the map");
        s.insert(150..200);
        assert_eq!(s.iter().collect::<Vec<_>>(), vec![0..210]);
        s.shrink();
        assert!(matches!(s.0, Repr::One(0, 210)));
        assert!(s.remove(100..110) && matches!(s.0, Repr::Many(_)));
        assert_eq!(s, {
            let mut t = RangeSet::new();
            t.insert(100..210);
            t.insert(0..100);
            t.remove(100..110);
            t
        });
        assert_eq!(format!("{s:?}"), "{0..100, 110..210}");
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
        fn matches_model(ops in proptest::collection::vec((0u8..8, 0u64..200, 0u64..20), 0..60)) {
            let mut s = RangeSet::new();
            let mut model = BTreeSet::new();
            for (op, start, len) in ops {
                let r = start..start + len;
                match op {
                    0..=3 => {
                        let new = r.clone().any(|v| !model.contains(&v));
                        prop_assert_eq!(s.insert(r.clone()), new);
                        model.extend(r);
                    }
                    4..=5 => {
                        let had = r.clone().any(|v| model.contains(&v));
                        prop_assert_eq!(s.remove(r.clone()), had);
                        for v in r { model.remove(&v); }
                    }
                    // Inline and map forms must not differ in behaviour.
                    6 => s.shrink(),
                    _ => {
                        if let Some(first) = s.pop_first() {
                            prop_assert_eq!(Some(first.start), model.first().copied());
                            for v in first { prop_assert!(model.remove(&v)); }
                        } else {
                            prop_assert!(model.is_empty());
                        }
                    }
                }
                prop_assert_eq!(s.min(), model.first().copied());
                prop_assert_eq!(s.max(), model.last().copied());
                prop_assert_eq!(s.is_empty(), model.is_empty());
                prop_assert_eq!(s.iter().len(), s.len());
                let window = start..start + 2 * len;
                let clipped: BTreeSet<u64> = s.overlapping(window.clone()).flatten().collect();
                let expected: BTreeSet<u64> = model.range(window).copied().collect();
                prop_assert_eq!(clipped, expected);
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
