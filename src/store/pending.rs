//! Async-upload reservations (`/create`): the `userid_pending` tree, which records when each
//! reserved id expires, kept in step with the pending `MediaMeta` in `mediaid_meta`.

use sled::{Transactional, transaction::ConflictableTransactionError};

use super::{Result, Store, StoreError, abort, decode, encode, index, keys, read_u64, tx_error};
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
        let db_key = keys::media(key);
        let trees = (
            &self.inner.meta,
            &self.inner.pending,
            &self.inner.user_index,
            &self.inner.hash_index,
        );
        trees
            .transaction(|(meta_tree, pending_tree, user_index, hash_index)| {
                if meta_tree.get(&db_key)?.is_some() {
                    return abort(StoreError::Exists);
                }
                meta_tree.insert(db_key.as_slice(), value.as_slice())?;
                index::add(user_index, hash_index, &db_key, meta)?;
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
            let trees = (
                &self.inner.meta,
                &self.inner.pending,
                &self.inner.user_index,
                &self.inner.hash_index,
            );
            trees
                .transaction(|(meta_tree, pending_tree, user_index, hash_index)| {
                    pending_tree.remove(&pkey)?;
                    if let Some(v) = meta_tree.get(&media_key)?
                        && let Ok(
                            meta @ MediaMeta {
                                state: MediaState::Pending { .. },
                                ..
                            },
                        ) = decode::<MediaMeta>(&v)
                    {
                        meta_tree.remove(media_key.as_slice())?;
                        index::remove(user_index, hash_index, &media_key, &meta)?;
                    }
                    Ok::<_, ConflictableTransactionError<StoreError>>(())
                })
                .map_err(tx_error)?;
            expired += 1;
        }
        Ok(expired)
    }
}
