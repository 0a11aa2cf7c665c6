//! Remote fetch failures: remembered briefly per flight key, labelled for metrics, and mapped
//! to the client errors spec §9 asks for.

use std::{
    collections::HashMap,
    sync::Mutex,
    time::{Duration, Instant},
};

use crate::{
    error::{Error, Result},
    federation::media::FetchFailure,
};

/// Failure entries kept at most; expired ones are dropped first when the map is full.
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

impl From<FetchFailure> for Error {
    fn from(failure: FetchFailure) -> Self {
        match failure {
            FetchFailure::NotFound => Self::NotFound,
            FetchFailure::TooLarge => Self::RemoteTooLarge,
            FetchFailure::Timeout => Self::GatewayTimeout,
            FetchFailure::NotYetUploaded => Self::NotYetUploaded,
            // What went wrong is in the log; the client only learns that the origin failed.
            FetchFailure::Unrecognized | FetchFailure::Remote(_) => {
                Self::BadGateway("Failed to fetch remote media".into())
            }
            FetchFailure::Local(message) => Self::internal(anyhow::anyhow!(message)),
            FetchFailure::NoSpace => Self::InsufficientStorage,
        }
    }
}

/// Recent failures by flight key, answered without asking the origin again.
pub(super) struct FailureCache {
    ttl: Duration,
    entries: Mutex<HashMap<String, (Instant, FetchFailure)>>,
}

impl FailureCache {
    pub(super) fn new(ttl: Duration) -> Self {
        Self {
            ttl,
            entries: Mutex::new(HashMap::new()),
        }
    }

    pub(super) fn get(&self, flight: &str) -> Option<FetchFailure> {
        let entries = self.entries.lock().ok()?;
        let (until, failure) = entries.get(flight)?;
        if *until <= Instant::now() {
            return None;
        }
        metrics::counter!("mxmedia_remote_failure_cache_hits_total").increment(1);
        Some(failure.clone())
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
        let Ok(mut entries) = self.entries.lock() else {
            return;
        };
        let now = Instant::now();
        if entries.len() >= MAX_FAILURES {
            entries.retain(|_, (until, _)| *until > now);
            if entries.len() >= MAX_FAILURES {
                return;
            }
        }
        entries.insert(flight, (now + self.ttl, failure));
    }
}
