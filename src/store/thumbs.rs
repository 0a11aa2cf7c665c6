//! Thumbnail records (`thumbkey_thumb`): looking them up, storing rendered or fetched ones
//! with a reference to their blob, and dropping them with the media they were made from.

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use sled::{
    Transactional, transaction::ConflictableTransactionError, transaction::TransactionalTree,
};

use super::{Result, StoreError};
use super::{
    Store, abort,
    blob::{Placement, Staged},
    decode, encode, index,
    keys::{self, ThumbSource},
    refs::{Unreferenced, add_blob_ref, drop_blob_ref},
    tx_error,
};

/// A thumbnail's bytes on their way into the store.
enum ThumbBody<'a> {
    Inline(&'a [u8]),
    File(Staged),
}

/// A stored thumbnail: its bytes are a blob like any other.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ThumbRecord {
    pub content_type: String,
    pub len: u64,
    pub sha256: String,
}

impl Store {
    pub fn get_thumbnail(&self, key: &str) -> Result<Option<ThumbRecord>> {
        self.inner.thumbs.get(key)?.map(|v| decode(&v)).transpose()
    }

    /// Stores a rendered thumbnail under `key`. Not flushed: a thumbnail lost in a crash is
    /// simply rendered again. A small one (nearly all) goes straight into sled, without the
    /// staging file and its fsync, which cost as much as resizing.
    pub fn put_thumbnail(
        &self,
        key: &str,
        bytes: &[u8],
        content_type: &str,
    ) -> Result<ThumbRecord> {
        let len = u64::try_from(bytes.len()).unwrap_or(u64::MAX);
        if len > self.inner.inline_max {
            let mut staging = self.stage()?;
            staging.write(bytes)?;
            return self.commit_thumbnail(key, staging.finish()?, content_type);
        }
        let record = ThumbRecord {
            content_type: content_type.to_owned(),
            len,
            sha256: hex::encode(Sha256::digest(bytes)),
        };
        self.insert_thumbnail(key, &record, ThumbBody::Inline(bytes))
    }

    /// Stores staged bytes as the thumbnail `key` (one fetched from a remote server, or
    /// rendered). If `key` exists already, the stored record wins and is returned.
    pub fn commit_thumbnail(
        &self,
        key: &str,
        mut staged: Staged,
        content_type: &str,
    ) -> Result<ThumbRecord> {
        let record = ThumbRecord {
            content_type: content_type.to_owned(),
            len: staged.len,
            sha256: staged.sha256.clone(),
        };
        if staged.len <= self.inner.inline_max {
            let bytes = staged.read_all()?;
            self.insert_thumbnail(key, &record, ThumbBody::Inline(&bytes))
        } else {
            self.insert_thumbnail(key, &record, ThumbBody::File(staged))
        }
    }

    fn insert_thumbnail(
        &self,
        key: &str,
        record: &ThumbRecord,
        body: ThumbBody<'_>,
    ) -> Result<ThumbRecord> {
        let (placement, inline_bytes) = match &body {
            ThumbBody::Inline(bytes) => (Placement::Inline, Some(*bytes)),
            ThumbBody::File(_) => (Placement::File, None),
        };
        let (staged, pin) = match body {
            ThumbBody::File(staged) => self.send_ahead(staged)?,
            ThumbBody::Inline(_) => (None, None),
        };
        let _writing = self.writing()?;
        let _guard = self.lock_blobs()?;
        if let Some(staged) = staged {
            self.inner.files.persist(staged)?;
        }
        let value = encode(record)?;
        let source = keys::thumb_source(key);
        let trees = (
            &self.inner.thumbs,
            &self.inner.blobs,
            &self.inner.chunks,
            &self.inner.blocked,
            &self.inner.hash_index,
            &self.inner.hash_quarantine,
            &self.inner.quarantine,
        );
        let stored = trees
            .transaction(
                |(
                    thumb_tree,
                    blob_tree,
                    chunk_tree,
                    blocked_tree,
                    hash_index,
                    listed,
                    quarantine,
                )| {
                    // A render or fetch that finishes after its source was deleted stores nothing:
                    // deletion removes thumbnails in the same transaction as the source, so one
                    // stored now would outlive it.
                    let gone = match source {
                        Some(ThumbSource::Bytes(sha256)) => blob_tree.get(sha256)?.is_none(),
                        Some(ThumbSource::Remote(media)) => blocked_tree.get(media)?.is_some(),
                        None => false,
                    };
                    if gone {
                        return abort(StoreError::NotFound);
                    }
                    if let Some(existing) = thumb_tree.get(key)? {
                        return Ok(Some(existing));
                    }
                    add_blob_ref(
                        blob_tree,
                        chunk_tree,
                        &record.sha256,
                        record.len,
                        placement,
                        inline_bytes,
                    )?;
                    thumb_tree.insert(key, value.as_slice())?;
                    index::thumb(hash_index, key.as_bytes(), &record.sha256, true)?;
                    // A remote origin's thumbnail made of quarantined bytes quarantines its media in
                    // this transaction, as a fetched original would: nobody downloads it in between.
                    if let Some(ThumbSource::Remote(media)) = source
                        && let Some(by) = listed.get(record.sha256.as_bytes())?
                    {
                        quarantine.insert(media, by)?;
                    }
                    Ok(None)
                },
            )
            .map_err(tx_error);
        drop(pin);
        match stored {
            Ok(None) => Ok(record.clone()),
            Ok(Some(existing)) => {
                // Another render won: our file, if it holds other bytes, is referenced by nothing.
                if placement == Placement::File {
                    self.unlink_unreferenced(&_guard, std::slice::from_ref(&record.sha256))?;
                }
                decode(&existing)
            }
            Err(err) => {
                if placement == Placement::File {
                    self.unlink_unreferenced(&_guard, std::slice::from_ref(&record.sha256))?;
                }
                Err(err)
            }
        }
    }

    pub(super) fn thumbnail_keys(&self, prefix: &[u8]) -> Result<Vec<sled::IVec>> {
        let keys = self.inner.thumbs.scan_prefix(prefix).keys();
        Ok(keys.collect::<std::result::Result<Vec<_>, _>>()?)
    }
}

/// Removes the thumbnails under `keys` with their blob references. Returns whether any existed,
/// and the blobs nothing references any more.
pub(super) fn drop_thumbnails(
    thumbs: &TransactionalTree,
    blobs: &TransactionalTree,
    chunks: &TransactionalTree,
    hash_index: &TransactionalTree,
    keys: &[sled::IVec],
) -> Result<(bool, Vec<Unreferenced>), ConflictableTransactionError<StoreError>> {
    let mut existed = false;
    let mut gone = Vec::new();
    for key in keys {
        if let Some(old) = thumbs.remove(key)? {
            existed = true;
            let old: ThumbRecord = decode(&old).map_err(ConflictableTransactionError::Abort)?;
            index::thumb(hash_index, key, &old.sha256, false)?;
            gone.extend(drop_blob_ref(blobs, chunks, &old.sha256)?);
        }
    }
    Ok((existed, gone))
}
