//! Remote media as a cache: when it was last asked for, and removing what has not been asked for
//! in a while or what goes beyond a size budget, least recently used first.
//!
//! The unit is one remote media id: its original (if fetched) and every thumbnail kept from its
//! origin. Removing it loses nothing for good: the next request fetches it again. Last-access
//! times live in `mediaid_access` (`server/mediaId` -> ms, big-endian); media stored before
//! this tree existed counts from its fetch time, thumbnails-only ids from the first sweep that
//! sees them. Quarantined media is not cache: it is kept for an admin to review (and undo), so
//! sweeps pass it by and do not count it against the size budget.

use std::collections::BTreeMap;

use super::{
    Result, Store, ThumbRecord, decode,
    keys::{self, REMOTE_THUMB_PREFIX, remote_thumb_media},
    read_u64,
};
use crate::model::{
    id::MediaKey,
    meta::{MediaMeta, MediaState},
};

/// What a sweep may keep.
#[derive(Debug, Clone, Copy, Default)]
pub struct RetentionPolicy {
    /// Remove remote media not asked for in this long.
    pub max_idle_ms: Option<u64>,
    /// Remove the least recently asked-for remote media while the rest takes more than this.
    pub max_bytes: Option<u64>,
}

impl RetentionPolicy {
    pub fn is_active(&self) -> bool {
        self.max_idle_ms.is_some() || self.max_bytes.is_some()
    }
}

/// What a sweep is to remove: remote media keys with their sizes, least recently asked-for
/// first, and what stays.
#[derive(Debug, Default)]
struct SweepPlan {
    victims: Vec<(Vec<u8>, u64)>,
    kept_bytes: u64,
}

/// What a sweep did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Swept {
    /// Remote media ids removed, with their originals and thumbnails.
    pub removed: usize,
    pub removed_bytes: u64,
    /// Bytes of remote media (originals and their thumbnails) left.
    pub kept_bytes: u64,
}

#[derive(Default)]
struct Entry {
    bytes: u64,
    fetched_at: Option<u64>,
}

impl Store {
    /// Records when remote media was last asked for. Not flushed: an access time lost in a
    /// crash only makes that media look older by a minute or so.
    pub fn record_access(&self, touches: &[(Vec<u8>, u64)]) -> Result<()> {
        if touches.is_empty() {
            return Ok(());
        }
        let _writing = self.writing()?;
        let mut batch = sled::Batch::default();
        for (key, ms) in touches {
            batch.insert(key.as_slice(), &ms.to_be_bytes());
        }
        self.inner.access.apply_batch(batch)?;
        Ok(())
    }

    /// When remote media was last asked for, as last written by `record_access`; for local
    /// media, its last access at the source it was imported from (else `None`).
    pub fn last_access(&self, key: &MediaKey) -> Result<Option<u64>> {
        Ok(self
            .inner
            .access
            .get(keys::media(key))?
            .map(|v| read_u64(&v)))
    }

    /// Applies `policy` to every remote media id (any server but `own`) at time `now_ms`,
    /// calling `removed` with each `server/mediaId` key right after it is gone.
    pub fn sweep_remote(
        &self,
        own: &str,
        now_ms: u64,
        policy: &RetentionPolicy,
        mut removed: impl FnMut(&[u8]),
    ) -> Result<Swept> {
        let plan = self.plan_remote_sweep(own, now_ms, policy)?;
        let mut swept = Swept {
            kept_bytes: plan.kept_bytes,
            ..Swept::default()
        };
        let mut files = Vec::new();
        for (key, bytes) in plan.victims {
            files.extend(self.remove_entry(&key, None)?.files);
            removed(&key);
            swept.removed += 1;
            swept.removed_bytes += bytes;
        }
        if swept.removed > 0 {
            self.settle(&files)?;
        }
        Ok(swept)
    }

    /// Decides what applying `policy` at `now_ms` removes, without removing it.
    fn plan_remote_sweep(
        &self,
        own: &str,
        now_ms: u64,
        policy: &RetentionPolicy,
    ) -> Result<SweepPlan> {
        let mut entries: BTreeMap<Vec<u8>, Entry> = BTreeMap::new();
        for item in &self.inner.meta {
            let (key, value) = item?;
            if keys::media_server(&key) == own.as_bytes() {
                continue;
            }
            let meta: MediaMeta = decode(&value)?;
            if let MediaState::Complete(content) = meta.state {
                let entry = entries.entry(key.to_vec()).or_default();
                entry.bytes += content.len;
                entry.fetched_at = Some(meta.created_at);
            }
        }
        for item in self.inner.thumbs.scan_prefix(REMOTE_THUMB_PREFIX) {
            let (key, value) = item?;
            let Some(media) = remote_thumb_media(&key) else {
                continue;
            };
            let record: ThumbRecord = decode(&value)?;
            entries.entry(media.to_vec()).or_default().bytes += record.len;
        }

        let mut unseen = Vec::new();
        let mut by_age = Vec::with_capacity(entries.len());
        for (key, entry) in entries {
            if self.inner.quarantine.contains_key(&key)? {
                continue;
            }
            let last = match (self.inner.access.get(&key)?, entry.fetched_at) {
                (Some(ms), _) => read_u64(&ms),
                (None, Some(fetched)) => fetched,
                (None, None) => {
                    unseen.push((key.clone(), now_ms));
                    now_ms
                }
            };
            by_age.push((last, key, entry.bytes));
        }
        self.record_access(&unseen)?;
        by_age.sort_unstable();

        let mut plan = SweepPlan {
            victims: Vec::new(),
            kept_bytes: by_age.iter().map(|(_, _, bytes)| bytes).sum(),
        };
        for (last, key, bytes) in by_age {
            let idle = policy
                .max_idle_ms
                .is_some_and(|max| now_ms.saturating_sub(last) >= max);
            let over = policy.max_bytes.is_some_and(|max| plan.kept_bytes > max);
            if !idle && !over {
                // Oldest first: once one is kept by both rules, so is everything newer.
                break;
            }
            plan.kept_bytes -= bytes;
            plan.victims.push((key, bytes));
        }
        Ok(plan)
    }
}
