//! Capped exponential backoff with jitter, used while the store or the broker is unavailable.

use std::time::Duration;

use rand::Rng;

/// Backoff policy: the n-th consecutive failure waits about `base * 2^n`, never more than `cap`,
/// with "equal jitter" (half fixed, half random) so that many workers do not retry in lockstep.
#[derive(Debug, Clone, Copy)]
pub struct Backoff {
    /// First delay. Defaults to 100ms.
    pub base: Duration,
    /// Largest delay. Defaults to 10s.
    pub cap: Duration,
}

impl Default for Backoff {
    fn default() -> Self {
        Backoff {
            base: Duration::from_millis(100),
            cap: Duration::from_secs(10),
        }
    }
}

impl Backoff {
    /// The delay before retry number `attempt` (0-based).
    pub fn delay(&self, attempt: u32) -> Duration {
        let exp = self
            .base
            .saturating_mul(1u32.checked_shl(attempt.min(20)).unwrap_or(u32::MAX));
        let ceiling = exp.min(self.cap);
        let half = ceiling / 2;
        let jitter_ms = u64::try_from(half.as_millis()).unwrap_or(u64::MAX);
        let jitter = if jitter_ms == 0 {
            Duration::ZERO
        } else {
            Duration::from_millis(rand::thread_rng().gen_range(0..=jitter_ms))
        };
        half + jitter
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grows_and_is_capped() {
        let b = Backoff::default();
        for attempt in 0..40 {
            let d = b.delay(attempt);
            assert!(d <= b.cap, "attempt {attempt}: {d:?}");
        }
        assert!(b.delay(0) <= Duration::from_millis(100));
        assert!(b.delay(30) >= Duration::from_secs(5));
    }
}
