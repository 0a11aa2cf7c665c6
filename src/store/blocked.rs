//! Media an admin has removed: deleted like any media, and remembered so that it is never
//! fetched from its origin again (`mediaid_blocked`: `server/mediaId` -> `Blocked` JSON).

use serde::{Deserialize, Serialize};

use super::{Removed, Result, Store, encode, keys};
use crate::model::id::MediaKey;

/// Who blocked media, and when.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Blocked {
    pub by: String,
    /// Milliseconds since the epoch.
    pub at: u64,
}

impl Store {
    /// Deletes `key` (bytes, thumbnails) and blocks it, in one transaction: from then on nothing
    /// is stored under it again, not even by a remote fetch already in flight (its commit checks
    /// the block). Durable when it returns: an admin's removal must survive a crash.
    pub fn block_media(&self, key: &MediaKey, blocked: &Blocked) -> Result<Removed> {
        let removed = self.remove_entry(&keys::media(key), Some(&encode(blocked)?))?;
        self.settle(&removed.files)?;
        Ok(removed)
    }

    pub fn is_blocked(&self, key: &MediaKey) -> Result<bool> {
        Ok(self.inner.blocked.contains_key(keys::media(key))?)
    }
}
