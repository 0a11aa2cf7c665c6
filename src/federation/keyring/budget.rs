//! The new-origin rate: a token bucket, so a flood of made-up origins starts key fetches at a
//! sustained rate after a burst.

use std::time::Instant;

use super::{NEW_ORIGIN_BURST, NEW_ORIGIN_RATE};

/// A token bucket: `rate` per second, up to `burst` saved.
pub(super) struct Bucket {
    tokens: f64,
    at: Instant,
}

impl Bucket {
    pub(super) fn new(now: Instant) -> Self {
        Self {
            tokens: NEW_ORIGIN_BURST,
            at: now,
        }
    }

    pub(super) fn take(&mut self, now: Instant) -> bool {
        let earned = now.saturating_duration_since(self.at).as_secs_f64() * NEW_ORIGIN_RATE;
        self.tokens = (self.tokens + earned).min(NEW_ORIGIN_BURST);
        self.at = now;
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            true
        } else {
            false
        }
    }
}

#[cfg(test)]
#[allow(clippy::as_conversions)]
mod tests {
    use std::time::{Duration, Instant};

    use super::{super::NEW_ORIGIN_BURST, super::NEW_ORIGIN_RATE, Bucket};

    /// New origins start at most the burst at once, then at the sustained rate.
    #[test]
    fn new_origin_budget_is_a_burst_then_a_rate() {
        let t0 = Instant::now();
        let mut bucket = Bucket::new(t0);
        let burst = (0..1000).filter(|_| bucket.take(t0)).count();
        assert_eq!(burst as f64, NEW_ORIGIN_BURST);
        let later = t0 + Duration::from_secs(10);
        let refilled = (0..1000).filter(|_| bucket.take(later)).count();
        assert_eq!(
            refilled as f64,
            (10.0 * NEW_ORIGIN_RATE).min(NEW_ORIGIN_BURST)
        );
        assert!(!bucket.take(later), "spent until time passes");
    }
}
