//! Per-user rate limits: token buckets refilled continuously, a minute's worth of burst.
//!
//! Used for uploads (count and bytes) and for the remote fetches a user can make this server
//! start (so one account cannot make it download the federation); cache hits are never charged.
//! Keyed by user id, in a bounded cache: a bucket evicted under pressure comes back full, which
//! only favours users idle long enough to be evicted.

use std::{
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use quick_cache::sync::Cache;

use crate::error::{Error, Result};

/// Users whose buckets are remembered at once.
const MAX_USERS: usize = 100_000;

#[derive(Debug)]
struct Bucket {
    /// May go below zero: bytes of a body without a declared length are charged once known.
    tokens: f64,
    at: Instant,
}

/// Buckets of one kind, `per_minute` tokens a minute each; 0 turns the limit off.
pub struct RateLimit {
    per_minute: u64,
    buckets: Cache<String, Arc<Mutex<Bucket>>>,
}

impl RateLimit {
    pub fn new(per_minute: u64) -> Self {
        Self {
            per_minute,
            buckets: Cache::new(if per_minute == 0 { 1 } else { MAX_USERS }),
        }
    }

    pub fn is_off(&self) -> bool {
        self.per_minute == 0
    }

    /// Takes `cost` tokens from `user`'s bucket, or answers 429 `M_LIMIT_EXCEEDED` with the wait
    /// until they are there (a cost above the burst waits for a full bucket, then goes into debt).
    pub fn take(&self, user: &str, cost: u64) -> Result<()> {
        self.charge(user, cost, true)
    }

    /// Takes `cost` tokens whether or not they are there: what was already spent.
    pub fn spend(&self, user: &str, cost: u64) {
        let _ = self.charge(user, cost, false);
    }

    #[allow(clippy::cast_precision_loss, clippy::as_conversions)]
    fn charge(&self, user: &str, cost: u64, check: bool) -> Result<()> {
        if self.is_off() || cost == 0 {
            return Ok(());
        }
        let capacity = self.per_minute as f64;
        let now = Instant::now();
        let bucket = self.buckets.get_or_insert_with(user, || {
            Ok::<_, std::convert::Infallible>(Arc::new(Mutex::new(Bucket {
                tokens: capacity,
                at: now,
            })))
        });
        let Ok(bucket) = bucket;
        let mut bucket = bucket
            .lock()
            .map_err(|_| Error::internal("rate bucket poisoned"))?;
        let per_sec = capacity / 60.0;
        let elapsed = now.saturating_duration_since(bucket.at).as_secs_f64();
        bucket.tokens = (bucket.tokens + elapsed * per_sec).min(capacity);
        bucket.at = now;
        let cost = cost as f64;
        let needed = cost.min(capacity);
        if check && bucket.tokens < needed {
            let wait = Duration::from_secs_f64((needed - bucket.tokens) / per_sec);
            return Err(Error::RateLimited {
                retry_after: wait.max(Duration::from_millis(1)),
            });
        }
        bucket.tokens -= cost;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::RateLimit;
    use crate::error::Error;

    /// A minute's worth passes at once, the next is refused with the wait until a token is back.
    #[test]
    fn bursts_then_waits() {
        let limit = RateLimit::new(3);
        for _ in 0..3 {
            limit.take("@a:x", 1).unwrap();
        }
        match limit.take("@a:x", 1) {
            Err(Error::RateLimited { retry_after }) => {
                assert!(retry_after.as_secs_f64() > 19.0 && retry_after.as_secs_f64() <= 20.0);
            }
            other => panic!("{other:?}"),
        }
        limit.take("@b:x", 1).unwrap();
        assert!(RateLimit::new(0).take("@a:x", 1_000).is_ok());
        // Spent beyond the bucket: the next take waits.
        let bytes = RateLimit::new(1000);
        bytes.spend("@a:x", 5000);
        assert!(bytes.take("@a:x", 1).is_err());
    }
}
