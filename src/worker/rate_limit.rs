//! A token bucket shared by every worker task of a process: `--rate-limit N/s` caps the number
//! of events persisted per second.

use std::time::Duration;

use tokio::sync::Mutex;
use tokio::time::Instant;

use crate::config::Rate;

/// Token bucket: holds up to one second's worth of tokens, refilled continuously.
#[derive(Debug)]
pub struct RateLimiter {
    per_second: f64,
    capacity: f64,
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

    /// Wait until `n` tokens are available and take them.
    pub async fn acquire(&self, n: usize) {
        // usize → f64 is exact for any realistic batch size.
        #[allow(clippy::cast_precision_loss)]
        let mut need = n as f64;
        while need > 0.0 {
            let take = need.min(self.capacity);
            let wait = {
                let mut state = self.state.lock().await;
                let now = Instant::now();
                let elapsed = now.duration_since(state.1).as_secs_f64();
                state.0 = (state.0 + elapsed * self.per_second).min(self.capacity);
                state.1 = now;
                if state.0 >= take {
                    state.0 -= take;
                    need -= take;
                    None
                } else {
                    Some(Duration::from_secs_f64((take - state.0) / self.per_second))
                }
            };
            if let Some(wait) = wait {
                tokio::time::sleep(wait).await;
            }
        }
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
}
