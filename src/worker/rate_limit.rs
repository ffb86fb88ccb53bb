//! A token bucket shared by every worker task of a process: `--rate-limit N/s` caps the number
//! of events persisted per second.

use std::sync::{Mutex, PoisonError};
use std::time::Duration;

use tokio::time::Instant;

use crate::config::Rate;

/// The longest wait [`RateLimiter::reserve`] hands out (a year), so that no deadline overflows.
const MAX_WAIT: Duration = Duration::from_secs(365 * 24 * 3600);

/// Token bucket: holds up to one second's worth of tokens, refilled continuously.
///
/// Callers are served in the order they ask: each takes its tokens at once, running the bucket
/// into debt when it is short, and waits until the refill has paid for them. A caller waiting
/// for tokens therefore cannot lose them to one that asks later (with a "wait, then try again"
/// bucket, a worker coming back for its next batch could win every wake-up race and starve
/// the others).
#[derive(Debug)]
pub struct RateLimiter {
    per_second: f64,
    capacity: f64,
    /// Tokens (negative while in debt) as of the instant beside them. A std `Mutex`: it is held
    /// for a few arithmetic operations, never across an await.
    state: Mutex<(f64, Instant)>,
}

impl RateLimiter {
    /// A limiter for `rate`; the bucket starts full.
    pub fn new(rate: Rate) -> Self {
        let capacity = rate.per_second.max(1.0);
        RateLimiter {
            per_second: rate.per_second,
            capacity,
            state: Mutex::new((capacity, Instant::now())),
        }
    }

    /// The largest batch that can be taken at once (one second's worth, at least 1).
    pub fn burst(&self) -> usize {
        // capacity is finite and >= 1.
        #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)]
        let n = self.capacity.floor() as usize;
        n.max(1)
    }

    /// Take `n` tokens now and return the instant from which they may be used: now when the
    /// bucket holds them, otherwise once the refill has paid for them and for every
    /// reservation made before this one. The caller waits until then (and may do other things
    /// meanwhile, such as renewing leases).
    pub fn reserve(&self, n: usize) -> Instant {
        // usize → f64 is exact for any realistic batch size.
        #[allow(clippy::cast_precision_loss)]
        let need = n as f64;
        let mut state = self.state.lock().unwrap_or_else(PoisonError::into_inner);
        let now = Instant::now();
        let elapsed = now.duration_since(state.1).as_secs_f64();
        state.0 = (state.0 + elapsed * self.per_second).min(self.capacity) - need;
        state.1 = now;
        if state.0 >= 0.0 {
            return now;
        }
        let wait = Duration::try_from_secs_f64(-state.0 / self.per_second).unwrap_or(MAX_WAIT);
        now + wait.min(MAX_WAIT)
    }

    /// Wait until `n` tokens are available and take them.
    pub async fn acquire(&self, n: usize) {
        tokio::time::sleep_until(self.reserve(n)).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn caps_throughput() {
        let limiter = RateLimiter::new(Rate { per_second: 100.0 });
        let start = Instant::now();
        for _ in 0..5 {
            limiter.acquire(100).await;
        }
        // The first 100 are free (full bucket), the next 400 take 4 seconds.
        let took = start.elapsed();
        assert!(took >= Duration::from_millis(3990), "{took:?}");
        assert!(took <= Duration::from_millis(4100), "{took:?}");
    }

    #[tokio::test(start_paused = true)]
    async fn reservations_are_served_in_order() {
        let limiter = RateLimiter::new(Rate { per_second: 100.0 });
        let start = Instant::now();
        // The full bucket pays for the first; each later one waits for those before it.
        assert_eq!(limiter.reserve(100), start);
        assert_eq!(limiter.reserve(100), start + Duration::from_secs(1));
        assert_eq!(limiter.reserve(50), start + Duration::from_millis(1500));
        tokio::time::advance(Duration::from_secs(3)).await;
        // Paid off and refilled (to one second's worth at most) meanwhile.
        let now = Instant::now();
        assert_eq!(limiter.reserve(100), now);
        assert_eq!(limiter.reserve(1), now + Duration::from_millis(10));
    }
}
