//! Removing media for good, as an admin: local or remote, bytes and thumbnails, and never
//! fetched from its origin again.

use super::MediaService;
use crate::{clock::now_ms, error::Result, model::id::MediaKey, store::blocked::Blocked};

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
        tracing::info!(media = %key, by, existed, "media removed and blocked by an admin");
        Ok(existed)
    }

    /// Whether an admin removed `key`: such media is not fetched again.
    pub(crate) async fn is_blocked(&self, key: &MediaKey) -> Result<bool> {
        let lookup = key.clone();
        Ok(self.store.blocking(move |s| s.is_blocked(&lookup)).await?)
    }
}
