//! Remote fetch failures: remembered briefly per flight key and labelled for metrics (the
//! client errors they become are written in `error/convert.rs`).
//!
//! The flight keys name media on servers a client chose, so the cache is bounded: past
//! `MAX_FAILURES`, the least used entries make room (before, a full map refused every new
//! failure, so a flood of made-up media ids turned the cache off for real ones).

use std::time::{Duration, Instant};

use crate::{error::Result, federation::media::FetchFailure, ttl_cache::TtlCache};

/// Failure entries kept at most: a few hundred bytes each, so a few MiB.
const MAX_FAILURES: usize = 10_000;

/// A bounded label for the failure metric.
pub(super) fn reason(failure: &FetchFailure) -> &'static str {
    match failure {
        FetchFailure::NotFound => "not_found",
        FetchFailure::TooLarge => "too_large",
        FetchFailure::Timeout => "timeout",
        FetchFailure::NotYetUploaded => "not_yet_uploaded",
        FetchFailure::Unrecognized | FetchFailure::Remote(_) => "remote_error",
        FetchFailure::Local(_) | FetchFailure::NoSpace => "local_error",
    }
}

/// Recent failures by flight key, answered without asking the origin again.
pub(super) struct FailureCache {
    ttl: Duration,
    entries: TtlCache<String, FetchFailure>,
}

impl FailureCache {
    pub(super) fn new(ttl: Duration) -> Self {
        Self::with_capacity(ttl, MAX_FAILURES)
    }

    fn with_capacity(ttl: Duration, capacity: usize) -> Self {
        Self {
            ttl,
            entries: TtlCache::new(capacity),
        }
    }

    pub(super) fn get(&self, flight: &str) -> Option<FetchFailure> {
        let failure = self.entries.get(&flight.to_owned())?;
        metrics::counter!("mxmedia_remote_failure_cache_hits_total").increment(1);
        Some(failure)
    }

    pub(super) fn check(&self, flight: &str) -> Result<()> {
        self.get(flight)
            .map_or(Ok(()), |failure| Err(failure.into()))
    }

    pub(super) fn put(&self, flight: String, failure: FetchFailure) {
        // Our own trouble and uploads still in progress are worth retrying at once.
        if self.ttl.is_zero()
            || matches!(
                failure,
                FetchFailure::Local(_) | FetchFailure::NoSpace | FetchFailure::NotYetUploaded
            )
        {
            return;
        }
        self.entries
            .insert(flight, failure, Instant::now() + self.ttl);
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::FailureCache;
    use crate::federation::media::FetchFailure;

    /// A flood of failures for made-up media stays within the bound, and a failure seen after
    /// the flood is still remembered (a full cache no longer refuses new entries).
    #[test]
    fn bounded_and_still_remembers_new_failures() {
        let cache = FailureCache::with_capacity(Duration::from_secs(60), 32);
        for i in 0..5_000 {
            cache.put(format!("evil{i}.example/m"), FetchFailure::NotFound);
            assert!(cache.entries.len() <= 32);
        }
        cache.put("real.example/m".into(), FetchFailure::Timeout);
        assert!(matches!(
            cache.get("real.example/m"),
            Some(FetchFailure::Timeout)
        ));
    }
}
