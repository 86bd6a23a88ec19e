//! Retry policy: which failed requests are sent again, how often, how soon.
//!
//! A request is retried only when the connection failed before the response head arrived
//! (the connection was lost, closed by GOAWAY, or timed out) and either its method is
//! idempotent (RFC 9110 §9.2.2: GET, HEAD, OPTIONS, TRACE, PUT, DELETE) or the server said it
//! was not processed (H3_REQUEST_REJECTED, RFC 9114 §4.1.1). Bodies must be replayable
//! (bytes, not a stream). A budget caps retries at a fraction of successful requests, so a
//! failing server is not hammered.
//!
//! A request sent in 0-RTT that the server rejects needs no retry here: the transport counts
//! the rejected 0-RTT packets as lost and sends their data again in 1-RTT (RFC 9001 §4.6.2),
//! so the request is delivered once, on the same connection.

use std::sync::atomic::{AtomicI64, Ordering};
use std::time::Duration;

/// How the client retries (see the module docs). The default: up to 2 retries per request,
/// backoff from 50 ms doubling, budget of one retry per 5 successes plus a reserve of 10.
#[derive(Debug, Clone)]
pub struct Policy {
    pub(crate) max_retries: u32,
    pub(crate) backoff: Duration,
}

impl Default for Policy {
    fn default() -> Self {
        Self {
            max_retries: 2,
            backoff: Duration::from_millis(50),
        }
    }
}

impl Policy {
    /// Never retry.
    pub fn never() -> Self {
        Self {
            max_retries: 0,
            backoff: Duration::ZERO,
        }
    }

    /// At most `n` retries per request.
    pub fn max_retries(mut self, n: u32) -> Self {
        self.max_retries = n;
        self
    }

    /// The wait before the first retry; it doubles for each next one.
    pub fn backoff(mut self, first: Duration) -> Self {
        self.backoff = first;
        self
    }

    pub(crate) fn delay(&self, attempt: u32) -> Duration {
        self.backoff.saturating_mul(1 << attempt.min(10))
    }
}

/// Retries allowed: every success deposits 1, every retry costs 5; a reserve of 10 retries
/// (50 tokens) is always available.
#[derive(Debug)]
pub(crate) struct Budget {
    tokens: AtomicI64,
}

const RETRY_COST: i64 = 5;
const MAX_TOKENS: i64 = 1000;

impl Default for Budget {
    fn default() -> Self {
        Self {
            tokens: AtomicI64::new(10 * RETRY_COST),
        }
    }
}

impl Budget {
    pub(crate) fn deposit(&self) {
        let _ = self
            .tokens
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |t| {
                (t < MAX_TOKENS).then_some(t + 1)
            });
    }

    pub(crate) fn withdraw(&self) -> bool {
        self.tokens
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |t| {
                (t >= RETRY_COST).then_some(t - RETRY_COST)
            })
            .is_ok()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn budget_allows_the_reserve_then_one_retry_per_five_successes() {
        let b = Budget::default();
        for _ in 0..10 {
            assert!(b.withdraw());
        }
        assert!(!b.withdraw());
        for _ in 0..4 {
            b.deposit();
        }
        assert!(!b.withdraw());
        b.deposit();
        assert!(b.withdraw());
    }

    #[test]
    fn backoff_doubles() {
        let p = Policy::default().backoff(Duration::from_millis(10));
        assert_eq!(p.delay(0), Duration::from_millis(10));
        assert_eq!(p.delay(3), Duration::from_millis(80));
    }
}
