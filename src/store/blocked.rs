//! Media an admin has removed: deleted like any media, and remembered so that it is never
//! fetched from its origin again (`mediaid_blocked`: `server/mediaId` -> `Blocked` JSON).

use serde::{Deserialize, Serialize};

use super::{Result, Store, encode};
use crate::media::id::MediaKey;

/// Who blocked media, and when.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Blocked {
    pub by: String,
    /// Milliseconds since the epoch.
    pub at: u64,
}

impl Store {
    /// Deletes `key` (bytes, thumbnails) and blocks it. Returns whether there was anything to
    /// delete. Flushed: an admin's removal must survive a crash.
    pub fn block_media(&self, key: &MediaKey, blocked: &Blocked) -> Result<bool> {
        {
            let _writing = self.writing()?;
            self.inner.blocked.insert(key.db_key(), encode(blocked)?)?;
        }
        let existed = self.remove_entry(&key.db_key())?;
        self.flush()?;
        Ok(existed)
    }

    pub fn is_blocked(&self, key: &MediaKey) -> Result<bool> {
        Ok(self.inner.blocked.contains_key(key.db_key())?)
    }
}
