//! The endpoint's connection deadlines.

use std::time::Instant;

/// The connections' next deadlines in order, and which connections changed since they were
/// last read (their deadlines are read again before the next look).
#[derive(Debug, Default)]
pub(super) struct Timers {
    pub(super) set: std::collections::BTreeSet<(Instant, usize)>,
    at: Vec<Option<Instant>>,
    pub(super) dirty: Vec<usize>,
    is_dirty: Vec<bool>,
    /// Scratch space for the connections due in one `handle_timeout`.
    pub(super) due: Vec<usize>,
}

impl Timers {
    /// Whether connection `idx` is marked already.
    #[inline]
    pub(super) fn is_dirty(&self, idx: usize) -> bool {
        self.is_dirty.get(idx).copied().unwrap_or(false)
    }

    /// Marks connection `idx`'s deadline to be read again.
    #[inline]
    pub(super) fn touch(&mut self, idx: usize) {
        if idx >= self.is_dirty.len() {
            self.is_dirty.resize(idx + 1, false);
            self.at.resize(idx + 1, None);
        }
        if !self.is_dirty[idx] {
            self.is_dirty[idx] = true;
            self.dirty.push(idx);
        }
    }

    /// Records connection `idx`'s deadline `t`, read again now.
    ///
    /// A deadline that moved later keeps its earlier entry: when that entry comes due the
    /// connection is handed to its `handle_timeout` (which finds nothing due and does
    /// nothing) and its deadline is read again. A connection that keeps sending moves its
    /// deadline (the PTO, RFC 9002 §6.2.1) later with each packet, and its entry would
    /// otherwise be taken out of the tree and put back twice per message of a ping-pong,
    /// about 500 instructions of 22.7k (callgrind); now that happens once per PTO period.
    pub(super) fn set(&mut self, idx: usize, t: Option<Instant>) {
        self.is_dirty[idx] = false;
        match (self.at[idx], t) {
            // Unchanged (many a touch moves nothing): no tree work.
            (old, new) if old == new => return,
            (Some(old), Some(new)) if new > old => return,
            _ => {}
        }
        if let Some(old) = self.at[idx].take() {
            self.set.remove(&(old, idx));
        }
        if let Some(t) = t {
            self.set.insert((t, idx));
            self.at[idx] = Some(t);
        }
    }

    /// Takes out the entries due at `now`, oldest first, into `due` (cleared first): their
    /// connections' deadlines are recorded afresh at the next look, even when they lie later
    /// than the entries did.
    pub(super) fn take_due(&mut self, now: Instant, due: &mut Vec<usize>) {
        due.clear();
        while let Some(&(t, idx)) = self.set.first() {
            if t > now {
                break;
            }
            self.set.pop_first();
            self.at[idx] = None;
            due.push(idx);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::Timers;
    use std::time::{Duration, Instant};

    fn first(t: &Timers) -> Option<(Instant, usize)> {
        t.set.first().copied()
    }

    #[test]
    #[allow(clippy::disallowed_methods)] // One real Instant as the time origin.
    fn a_later_deadline_keeps_its_entry_until_due() {
        let t0 = Instant::now();
        let ms = |n| t0 + Duration::from_millis(n);
        let mut t = Timers::default();
        t.touch(0);
        t.touch(1);
        t.set(0, Some(ms(10)));
        t.set(1, Some(ms(20)));
        assert!(!t.is_dirty(0));
        // Later: the entry stays where it was, so the endpoint wakes early, never late.
        t.touch(0);
        t.set(0, Some(ms(30)));
        assert_eq!(first(&t), Some((ms(10), 0)));
        // Earlier: moved at once.
        t.touch(1);
        t.set(1, Some(ms(5)));
        assert_eq!(first(&t), Some((ms(5), 1)));
        assert_eq!(t.set.len(), 2);
        let mut due = vec![7];
        t.take_due(ms(9), &mut due);
        assert_eq!(due, [1]);
        t.take_due(ms(10), &mut due);
        assert_eq!(due, [0]);
        assert!(t.set.is_empty());
        // Read afresh after it came due: the real deadline, although later than the entry.
        t.touch(0);
        t.set(0, Some(ms(30)));
        assert_eq!(first(&t), Some((ms(30), 0)));
        // No deadline any more: the entry goes.
        t.touch(0);
        t.set(0, None);
        assert!(t.set.is_empty());
        t.take_due(ms(100), &mut due);
        assert!(due.is_empty());
    }
}
