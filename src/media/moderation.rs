//! What an admin does to media: remove it for good (`block`), quarantine it (kept on disk for
//! review and undo, served to nobody), protect it from quarantine, and quarantine bytes by hash,
//! a block list servers can share. Every action is logged at info level with its actor, action,
//! target and count.

use super::MediaService;
use crate::{
    clock::now_ms,
    error::Result,
    model::id::MediaKey,
    store::{
        blocked::Blocked,
        quarantine::{Marked, QuarantineState, Quarantined},
    },
};

/// At most this many hashes are listed in one page.
pub const MAX_HASH_PAGE: usize = 10_000;

impl MediaService {
    /// Deletes and blocks `key`. Returns whether there was anything stored to delete.
    pub async fn block(&self, key: &MediaKey, by: &str) -> Result<bool> {
        let blocked = Blocked {
            by: by.to_owned(),
            at: now_ms(),
        };
        let lookup = key.clone();
        let removed = self
            .store
            .blocking(move |s| s.block_media(&lookup, &blocked))
            .await?;
        // After the store change: a download that reads the store from now on finds nothing,
        // and one that read it before cannot cache what it found (see `cache`).
        self.cache.forget(key, removed.sha256.as_deref());
        self.remote.cancel(key);
        let existed = removed.existed;
        tracing::info!(actor = by, action = "block", target = %key, count = u64::from(existed), "admin action");
        Ok(existed)
    }

    /// Whether `key` is not to be served nor fetched: blocked or quarantined.
    pub(crate) async fn is_withheld(&self, key: &MediaKey) -> Result<bool> {
        let lookup = key.clone();
        Ok(self.store.blocking(move |s| s.is_withheld(&lookup)).await?)
    }

    /// Quarantines `media` (local or remote, stored or not) and the bytes of those stored, so
    /// every copy of them is quarantined too, now and when uploaded or fetched later. Protected
    /// media is left alone. Returns how many stored items were quarantined.
    pub async fn quarantine(
        &self,
        media: Vec<MediaKey>,
        by: &str,
        action: &'static str,
        target: &str,
    ) -> Result<usize> {
        let record = Quarantined {
            by: by.to_owned(),
            at: now_ms(),
        };
        let marked = self
            .store
            .blocking(move |s| s.quarantine_media(&media, &record))
            .await?;
        Ok(self.marked(marked, by, action, target))
    }

    /// Takes `key` and every copy of its bytes out of quarantine.
    pub async fn unquarantine(&self, key: &MediaKey, by: &str) -> Result<usize> {
        let lookup = key.clone();
        let marked = self
            .store
            .blocking(move |s| s.unquarantine_media(&lookup))
            .await?;
        Ok(self.marked(marked, by, "unquarantine", &key.to_string()))
    }

    /// Forgets what changed from the memory caches, logs the action, returns the count.
    fn marked(&self, marked: Marked, by: &str, action: &'static str, target: &str) -> usize {
        for (key, sha256) in &marked.keys {
            self.cache.forget(key, sha256.as_deref());
        }
        tracing::info!(
            actor = by,
            action,
            target,
            count = marked.stored,
            "admin action"
        );
        marked.stored
    }

    /// Protects local media from quarantine (or lifts it). Returns whether the id is stored.
    pub async fn protect(&self, key: &MediaKey, protected: bool, by: &str) -> Result<bool> {
        let lookup = key.clone();
        let known = self
            .store
            .blocking(move |s| s.set_protected(&lookup, protected, now_ms()))
            .await?;
        let action = if protected { "protect" } else { "unprotect" };
        tracing::info!(actor = by, action, target = %key, count = u64::from(known), "admin action");
        Ok(known)
    }

    pub async fn quarantine_state(&self, key: &MediaKey) -> Result<QuarantineState> {
        let lookup = key.clone();
        Ok(self
            .store
            .blocking(move |s| s.quarantine_state(&lookup))
            .await?)
    }

    /// Adds hashes (lowercase hex sha256) to the quarantine list and quarantines every item
    /// holding those bytes. Returns (hashes newly listed, items quarantined).
    pub async fn quarantine_hashes(&self, hashes: Vec<String>, by: &str) -> Result<(usize, usize)> {
        let record = Quarantined {
            by: by.to_owned(),
            at: now_ms(),
        };
        let target = hash_target(&hashes);
        let (added, marked) = self
            .store
            .blocking(move |s| s.quarantine_hashes(&hashes, &record))
            .await?;
        let items = self.marked(marked, by, "quarantine_hash", &target);
        Ok((added, items))
    }

    /// Removes hashes from the list and serves their bytes again. Returns (hashes that were
    /// listed, items released).
    pub async fn unquarantine_hashes(
        &self,
        hashes: Vec<String>,
        by: &str,
    ) -> Result<(usize, usize)> {
        let target = hash_target(&hashes);
        let (removed, marked) = self
            .store
            .blocking(move |s| s.unquarantine_hashes(&hashes))
            .await?;
        let items = self.marked(marked, by, "unquarantine_hash", &target);
        Ok((removed, items))
    }

    pub async fn hash_quarantine(&self, sha256: String) -> Result<Option<Quarantined>> {
        Ok(self
            .store
            .blocking(move |s| s.hash_quarantine(&sha256))
            .await?)
    }

    /// A page of quarantined hashes, in order, after `after`.
    pub async fn quarantined_hashes(
        &self,
        after: Option<String>,
        limit: usize,
    ) -> Result<Vec<String>> {
        let limit = limit.min(MAX_HASH_PAGE);
        Ok(self
            .store
            .blocking(move |s| s.list_quarantined_hashes(after.as_deref(), limit))
            .await?)
    }
}

/// The log target of a hash action: the hash, or how many.
fn hash_target(hashes: &[String]) -> String {
    match hashes {
        [one] => format!("sha256:{one}"),
        many => format!("{} hashes", many.len()),
    }
}
