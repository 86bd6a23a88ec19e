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
    pub(super) fn set(&mut self, idx: usize, t: Option<Instant>) {
        self.is_dirty[idx] = false;
        if self.at[idx] == t {
            // Unchanged (many a touch moves nothing): no tree work.
            return;
        }
        if let Some(old) = self.at[idx].take() {
            self.set.remove(&(old, idx));
        }
        if let Some(t) = t {
            self.set.insert((t, idx));
            self.at[idx] = Some(t);
        }
    }
}
