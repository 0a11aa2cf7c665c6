//! Async-upload reservations (`/create`): the `userid_pending` tree, which records when each
//! reserved id expires, kept in step with the pending `MediaMeta` in `mediaid_meta`.

use sled::{Transactional, transaction::ConflictableTransactionError};

use super::{Result, Store, StoreError, abort, decode, encode, keys, read_u64, tx_error};
use crate::model::{
    id::MediaKey,
    meta::{MediaMeta, MediaState},
};

impl Store {
    /// Reserves an id for an async upload. Fails if the id exists (ids are random, so never).
    pub fn insert_pending(&self, key: &MediaKey, meta: &MediaMeta) -> Result<()> {
        let MediaState::Pending { unused_expires_at } = meta.state else {
            return Err(StoreError::Misuse("insert_pending on complete media"));
        };
        let value = encode(meta)?;
        let pending_key = keys::pending(&meta.uploader, key);
        let _writing = self.writing()?;
        (&self.inner.meta, &self.inner.pending)
            .transaction(|(meta_tree, pending_tree)| {
                if meta_tree.get(keys::media(key))?.is_some() {
                    return abort(StoreError::Exists);
                }
                meta_tree.insert(keys::media(key), value.as_slice())?;
                pending_tree.insert(pending_key.as_slice(), &unused_expires_at.to_be_bytes())?;
                Ok(())
            })
            .map_err(tx_error)?;
        self.flush()
    }

    /// Unexpired async uploads `user` has reserved and not made yet, as their expiry times.
    pub fn pending_expiries(&self, user: &str, now_ms: u64) -> Result<Vec<u64>> {
        let mut out = Vec::new();
        for entry in self.inner.pending.scan_prefix(keys::pending_prefix(user)) {
            let (_, value) = entry?;
            let expiry = read_u64(&value);
            if expiry > now_ms {
                out.push(expiry);
            }
        }
        Ok(out)
    }

    /// Deletes async reservations whose deadline passed without an upload.
    pub fn expire_pending(&self, now_ms: u64) -> Result<usize> {
        let _writing = self.writing()?;
        let mut expired = 0;
        for entry in self.inner.pending.iter() {
            let (pkey, value) = entry?;
            if read_u64(&value) > now_ms {
                continue;
            }
            let media_key = keys::pending_media(&pkey).to_vec();
            (&self.inner.meta, &self.inner.pending)
                .transaction(|(meta_tree, pending_tree)| {
                    pending_tree.remove(&pkey)?;
                    if let Some(v) = meta_tree.get(&media_key)?
                        && matches!(
                            decode::<MediaMeta>(&v),
                            Ok(MediaMeta {
                                state: MediaState::Pending { .. },
                                ..
                            })
                        )
                    {
                        meta_tree.remove(media_key.as_slice())?;
                    }
                    Ok::<_, ConflictableTransactionError<StoreError>>(())
                })
                .map_err(tx_error)?;
            expired += 1;
        }
        Ok(expired)
    }
}
