//! Keeping the remote media cache within bounds: when each remote file was last asked for
//! (buffered here, written by the periodic task) and the sweep that applies the configured
//! retention to the store.

use std::{
    collections::HashMap,
    sync::{Arc, Mutex},
};

use num_traits::ToPrimitive as _;

use super::MediaService;
use crate::{
    clock::now_ms,
    error::Result,
    model::id::MediaKey,
    store::{
        keys,
        retention::{RetentionPolicy, Swept},
    },
};

/// Access times buffered between writes. Bounded: past this many distinct ids in one minute,
/// further ones wait for the next request to be noticed.
const MAX_BUFFERED: usize = 100_000;

/// Last-access times not yet written: a sled write per download would cost more than the
/// download of a cached file.
#[derive(Default)]
pub struct Touches(Mutex<HashMap<Vec<u8>, u64>>);

impl Touches {
    fn touch(&self, key: &MediaKey, at: u64) {
        let key = keys::media(key);
        if let Ok(mut touched) = self.0.lock()
            && (touched.len() < MAX_BUFFERED || touched.contains_key(&key))
        {
            touched.insert(key, at);
        }
    }

    fn take(&self) -> Vec<(Vec<u8>, u64)> {
        self.0
            .lock()
            .map(|mut touched| touched.drain().collect())
            .unwrap_or_default()
    }
}

impl MediaService {
    /// Notes that remote media was asked for now. Always, retention configured or not: the
    /// admin API's `purge_media_cache` removes by last access too.
    pub(crate) fn touch(&self, key: &MediaKey) {
        self.touches.touch(key, now_ms());
    }

    /// Writes the buffered access times; run every minute.
    pub async fn record_access(&self) -> Result<()> {
        let touches = self.touches.take();
        if touches.is_empty() {
            return Ok(());
        }
        Ok(self
            .store
            .blocking(move |s| s.record_access(&touches))
            .await?)
    }

    /// Applies the configured retention to remote media as of `now_ms`. Nothing happens when
    /// neither a lifetime nor a size limit is configured.
    pub async fn sweep_remote(&self, now_ms: u64) -> Result<Swept> {
        if !self.retention.is_active() {
            return Ok(Swept::default());
        }
        self.record_access().await?;
        let own = self.server_name.as_str().to_owned();
        let policy = self.retention;
        let cache = Arc::clone(&self.cache);
        let swept = self
            .store
            .blocking(move |s| {
                s.sweep_remote(&own, now_ms, &policy, |db_key| {
                    // Remembered metadata would point downloads at bytes that are gone.
                    match keys::parse_media(db_key) {
                        Some(key) => cache.forget(&key, None),
                        None => cache.forget_all(),
                    }
                })
            })
            .await?;
        metrics::counter!("mxmedia_remote_evicted_total")
            .increment(u64::try_from(swept.removed).unwrap_or(u64::MAX));
        metrics::gauge!("mxmedia_remote_cache_bytes")
            .set(swept.kept_bytes.to_f64().unwrap_or(f64::MAX));
        Ok(swept)
    }
}

/// The policy the configuration asks for.
pub fn policy(config: &crate::config::MediaConfig) -> RetentionPolicy {
    const DAY_MS: u64 = 24 * 60 * 60 * 1000;
    RetentionPolicy {
        max_idle_ms: (config.remote_retention_days > 0)
            .then(|| config.remote_retention_days.saturating_mul(DAY_MS)),
        max_bytes: (config.remote_cache_max_size.as_u64() > 0)
            .then(|| config.remote_cache_max_size.as_u64()),
    }
}
