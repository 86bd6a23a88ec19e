//! The endpoint's connections by index: awake, hibernating (packed while idle, see
//! `connection::hibernate`), or free.

use std::time::Instant;

use crate::connection::Connection;
#[cfg(any(feature = "aws-lc-rs", feature = "ring"))]
use crate::connection::Hibernated;

enum Slot {
    Free,
    Awake(Box<Connection>),
    #[cfg(any(feature = "aws-lc-rs", feature = "ring"))]
    Asleep(Box<Hibernated>),
}

/// The connection slots.
#[derive(Default)]
pub(super) struct Slots {
    slots: Vec<Slot>,
    asleep: usize,
}

/// What [`Slots::wake`] found.
pub(super) enum Wake {
    /// Awake (already, or now).
    Awake,
    /// No connection in the slot.
    Free,
    /// The connection did not unpack (a bug): it is gone from the slot.
    #[cfg(any(feature = "aws-lc-rs", feature = "ring"))]
    Lost,
}

impl Slots {
    /// Slots, free or not.
    pub(super) fn len(&self) -> usize {
        self.slots.len()
    }

    /// Connections hibernating.
    pub(super) fn asleep(&self) -> usize {
        self.asleep
    }

    /// Puts `conn` in slot `idx` (free), or in a new slot at the end with `None`; returns the
    /// slot.
    pub(super) fn put(&mut self, idx: Option<usize>, conn: Box<Connection>) -> usize {
        match idx {
            Some(i) => {
                self.slots[i] = Slot::Awake(conn);
                i
            }
            None => {
                self.slots.push(Slot::Awake(conn));
                self.slots.len() - 1
            }
        }
    }

    /// Whether slot `idx` holds a connection, awake or not.
    pub(super) fn is_live(&self, idx: usize) -> bool {
        !matches!(self.slots.get(idx), None | Some(Slot::Free))
    }

    /// The connection in slot `idx` if it is awake.
    pub(super) fn awake(&self, idx: usize) -> Option<&Connection> {
        match self.slots.get(idx)? {
            Slot::Awake(c) => Some(c),
            _ => None,
        }
    }

    /// Whether the connection in slot `idx` is packed.
    pub(super) fn is_asleep(&self, idx: usize) -> bool {
        #[cfg(any(feature = "aws-lc-rs", feature = "ring"))]
        return matches!(self.slots.get(idx), Some(Slot::Asleep(_)));
        #[cfg(not(any(feature = "aws-lc-rs", feature = "ring")))]
        {
            let _ = idx;
            false
        }
    }

    /// The connection in slot `idx` if it is awake, mutably.
    #[inline]
    pub(super) fn awake_mut(&mut self, idx: usize) -> Option<&mut Connection> {
        match self.slots.get_mut(idx)? {
            Slot::Awake(c) => Some(c),
            _ => None,
        }
    }

    /// Wakes the connection in slot `idx` if it hibernates, at `now` if known.
    #[cfg_attr(
        not(any(feature = "aws-lc-rs", feature = "ring")),
        allow(unused_variables)
    )]
    #[inline]
    pub(super) fn wake(&mut self, idx: usize, now: Option<Instant>) -> Wake {
        let Some(slot) = self.slots.get_mut(idx) else {
            return Wake::Free;
        };
        match slot {
            Slot::Free => Wake::Free,
            Slot::Awake(_) => Wake::Awake,
            #[cfg(any(feature = "aws-lc-rs", feature = "ring"))]
            Slot::Asleep(_) => {
                let Slot::Asleep(h) = std::mem::replace(slot, Slot::Free) else {
                    return Wake::Free;
                };
                self.asleep -= 1;
                match (*h).wake(now) {
                    Some(c) => {
                        *slot = Slot::Awake(c);
                        Wake::Awake
                    }
                    None => Wake::Lost,
                }
            }
        }
    }

    /// Packs the connection in slot `idx` to sleep if it is quiet enough; returns whether it
    /// went to sleep.
    #[cfg_attr(
        not(any(feature = "aws-lc-rs", feature = "ring")),
        allow(unused_variables)
    )]
    pub(super) fn hibernate(&mut self, idx: usize, now: Instant) -> bool {
        #[cfg(any(feature = "aws-lc-rs", feature = "ring"))]
        if let Some(slot) = self.slots.get_mut(idx) {
            if !matches!(slot, Slot::Awake(c) if c.may_hibernate()) {
                return false;
            }
            let Slot::Awake(c) = std::mem::replace(slot, Slot::Free) else {
                return false;
            };
            return match c.hibernate(now) {
                Ok(h) => {
                    *slot = Slot::Asleep(h);
                    self.asleep += 1;
                    true
                }
                Err(c) => {
                    *slot = Slot::Awake(c);
                    false
                }
            };
        }
        false
    }

    /// When the connection in slot `idx` must next be woken or called.
    pub(super) fn deadline(&self, idx: usize) -> Option<Instant> {
        match self.slots.get(idx)? {
            Slot::Free => None,
            Slot::Awake(c) => c.poll_timeout(),
            #[cfg(any(feature = "aws-lc-rs", feature = "ring"))]
            Slot::Asleep(h) => h.deadline(),
        }
    }

    /// `f` applied to the connection in slot `idx`, without waking it: an asleep connection is
    /// unpacked into a copy that is dropped afterwards.
    pub(super) fn inspect<R>(&self, idx: usize, f: impl FnOnce(&Connection) -> R) -> Option<R> {
        match self.slots.get(idx)? {
            Slot::Free => None,
            Slot::Awake(c) => Some(f(c)),
            #[cfg(any(feature = "aws-lc-rs", feature = "ring"))]
            Slot::Asleep(h) => h.peek().map(|c| f(&c)),
        }
    }

    /// The counters of the connection in slot `idx`, without waking it.
    pub(super) fn stats(&self, idx: usize) -> Option<crate::connection::ConnectionStats> {
        match self.slots.get(idx)? {
            Slot::Free => None,
            Slot::Awake(c) => Some(c.stats()),
            #[cfg(any(feature = "aws-lc-rs", feature = "ring"))]
            Slot::Asleep(h) => Some(h.stats()),
        }
    }

    /// Whether every connection is closed with its CONNECTION_CLOSE sent
    /// ([`Connection::close_sent`]); a hibernating connection is not closed.
    pub(super) fn all_closes_sent(&self) -> bool {
        self.slots.iter().all(|s| match s {
            Slot::Free => true,
            Slot::Awake(c) => c.close_sent(),
            #[cfg(any(feature = "aws-lc-rs", feature = "ring"))]
            Slot::Asleep(_) => false,
        })
    }

    /// Takes the (awake) connection out of slot `idx`.
    pub(super) fn take(&mut self, idx: usize) -> Option<Box<Connection>> {
        let slot = self.slots.get_mut(idx)?;
        match std::mem::replace(slot, Slot::Free) {
            Slot::Awake(c) => Some(c),
            other => {
                *slot = other;
                None
            }
        }
    }
}
