//! A small key-value cache beside the media: URL previews with their expiry (`urlts_preview`).

use super::Result;
use super::{Store, read_u64};

impl Store {
    /// The cached URL preview under `key`, unless it expired by `now_ms` (then it is removed).
    pub fn get_preview(&self, key: &[u8], now_ms: u64) -> Result<Option<Vec<u8>>> {
        let Some(value) = self.inner.previews.get(key)? else {
            return Ok(None);
        };
        let (expiry, preview) = value.split_at(8.min(value.len()));
        if read_u64(expiry) <= now_ms {
            self.inner.previews.remove(key)?;
            return Ok(None);
        }
        Ok(Some(preview.to_vec()))
    }

    /// Caches a URL preview until `expires_at`. Not flushed: a lost preview is fetched again.
    pub fn put_preview(&self, key: &[u8], preview: &[u8], expires_at: u64) -> Result<()> {
        let mut value = Vec::with_capacity(8 + preview.len());
        value.extend_from_slice(&expires_at.to_be_bytes());
        value.extend_from_slice(preview);
        self.inner.previews.insert(key, value)?;
        Ok(())
    }

    /// Deletes cached previews that expired by `now_ms`.
    pub fn expire_previews(&self, now_ms: u64) -> Result<usize> {
        let mut expired = 0;
        for entry in self.inner.previews.iter() {
            let (key, value) = entry?;
            if read_u64(value.get(..8).unwrap_or_default()) <= now_ms {
                self.inner.previews.remove(key)?;
                expired += 1;
            }
        }
        Ok(expired)
    }
}
