//! Blob reference counting (`sha256_blob`, `blob_chunks`): every media record and thumbnail
//! holds one reference to its bytes; removing the last one removes the record, its inline
//! chunks and, after a flush, its file.

use std::sync::MutexGuard;

use serde::{Deserialize, Serialize};
use sled::{
    Transactional,
    transaction::{ConflictableTransactionError, TransactionalTree},
};

use super::{
    Result, Store, StoreError, abort,
    blob::{CHUNK_SIZE, Placement},
    decode, encode, index, keys,
    thumbs::drop_thumbnails,
    tx_error,
};
use crate::model::{
    id::MediaKey,
    meta::{MediaMeta, MediaState, PREVIEW_UPLOADER},
};

#[derive(Debug, Clone, Serialize, Deserialize)]
pub(super) struct BlobRecord {
    pub(super) len: u64,
    pub(super) placement: Placement,
    pub(super) refs: u64,
}

/// What removing one media id took away.
#[derive(Debug, Default)]
pub struct Removed {
    /// Whether anything was stored under the id.
    pub existed: bool,
    /// The hash of the bytes it pointed at, if it was complete.
    pub sha256: Option<String>,
    /// Blob files whose last record went: for `settle`.
    pub(super) files: Vec<String>,
}

impl Store {
    /// Deletes media with its thumbnails, and with the last reference to its bytes, the blob.
    /// Returns whether there was anything to delete. Durable when it returns.
    pub fn delete_media(&self, key: &MediaKey) -> Result<bool> {
        let removed = self.remove_entry(&keys::media(key), None)?;
        self.settle(&removed.files)?;
        Ok(removed.existed)
    }

    /// Removes one media id in one transaction: its bytes' reference, the thumbnails kept from a
    /// remote origin, its access time, a reservation; and with the last reference to its bytes,
    /// the blob record and the thumbnails made from it. With `block`, the id is blocked in the
    /// same transaction. Not flushed, and no file is removed: the caller passes `files` to
    /// `settle` once it is done removing.
    pub(crate) fn remove_entry(&self, db_key: &[u8], block: Option<&[u8]>) -> Result<Removed> {
        let _writing = self.writing()?;
        let _guard = self.lock_blobs()?;
        let remote_thumbs = self.thumbnail_keys(&keys::remote_thumb_prefix(db_key))?;
        // Complete media and thumbnails are written only under the blob lock, which we hold:
        // what they are now is what the transaction below sees.
        let source = match self.inner.meta.get(db_key)? {
            Some(value) => match decode::<MediaMeta>(&value)?.state {
                MediaState::Complete(content) => Some(content.sha256),
                MediaState::Pending { .. } => None,
            },
            None => None,
        };
        let source_thumbs = match &source {
            Some(sha256) => self.thumbnail_keys(&keys::thumb_prefix(sha256))?,
            None => Vec::new(),
        };

        let trees = (
            &self.inner.meta,
            &self.inner.blobs,
            &self.inner.chunks,
            &self.inner.thumbs,
            &self.inner.access,
            &self.inner.pending,
            &self.inner.blocked,
            &self.inner.usage,
            &self.inner.preview_images,
            &self.inner.previews,
            &self.inner.user_index,
            &self.inner.hash_index,
        );
        let (existed, gone, sha256) = trees
            .transaction(
                |(
                    meta,
                    blobs,
                    chunks,
                    thumbs,
                    access,
                    pending,
                    blocked,
                    usage,
                    preview_images,
                    previews,
                    user_index,
                    hash_index,
                )| {
                    if let Some(value) = block {
                        blocked.insert(db_key, value)?;
                    }
                    let mut gone = Vec::new();
                    let mut sha256 = None;
                    let mut existed = false;
                    if let Some(old) = meta.remove(db_key)? {
                        existed = true;
                        let old: MediaMeta =
                            decode(&old).map_err(ConflictableTransactionError::Abort)?;
                        index::remove(user_index, hash_index, db_key, &old)?;
                        match old.state {
                            MediaState::Complete(content) => {
                                if source.as_deref() != Some(content.sha256.as_str()) {
                                    return abort(StoreError::Misuse(
                                        "media changed under the blob lock",
                                    ));
                                }
                                super::usage::count(usage, &old.uploader, content.len, false)?;
                                if old.uploader == PREVIEW_UPLOADER {
                                    let image = super::preview_images::Image {
                                        db_key,
                                        created_at: old.created_at,
                                        sha256: &content.sha256,
                                        len: content.len,
                                    };
                                    super::preview_images::leave(preview_images, previews, &image)?;
                                }
                                if let Some(blob) = drop_blob_ref(blobs, chunks, &content.sha256)? {
                                    // No media holds these bytes any more, so nothing can ask for
                                    // thumbnails of them.
                                    gone.push(blob);
                                    gone.extend(
                                        drop_thumbnails(
                                            thumbs,
                                            blobs,
                                            chunks,
                                            hash_index,
                                            &source_thumbs,
                                        )?
                                        .1,
                                    );
                                }
                                sha256 = Some(content.sha256);
                            }
                            MediaState::Pending { .. } => {
                                pending.remove(keys::pending_of(&old.uploader, db_key))?;
                            }
                        }
                    }
                    let dropped =
                        drop_thumbnails(thumbs, blobs, chunks, hash_index, &remote_thumbs)?;
                    existed |= dropped.0;
                    gone.extend(dropped.1);
                    access.remove(db_key)?;
                    Ok((existed, gone, sha256))
                },
            )
            .map_err(tx_error)?;
        let files = gone
            .into_iter()
            .filter(|(_, placement)| *placement == Placement::File)
            .map(|(sha256, _)| sha256)
            .collect();
        Ok(Removed {
            existed,
            sha256,
            files,
        })
    }

    /// Makes every removal so far durable, then removes those of `files` that no record points
    /// at. In this order a crash leaves at most an unreferenced file for the start-up sweep;
    /// the other order could leave a record whose file is gone (a permanent 500).
    pub(crate) fn settle(&self, files: &[String]) -> Result<()> {
        let guard = self.lock_blobs()?;
        self.flush()?;
        self.unlink_unreferenced(&guard, files)
    }

    /// With the blob lock held (`_locked`): removes the files of those `files` that no record
    /// points at, after a flush, so that their absence is on disk first. A record absent in
    /// memory may still be on disk (a deletion not yet flushed), and while we hold the lock
    /// nothing can add one back.
    pub(super) fn unlink_unreferenced(
        &self,
        _locked: &MutexGuard<'_, ()>,
        files: &[String],
    ) -> Result<()> {
        let mut unreferenced = Vec::new();
        for sha256 in files {
            if self.inner.blobs.get(sha256)?.is_none() {
                unreferenced.push(sha256);
            }
        }
        if unreferenced.is_empty() {
            return Ok(());
        }
        self.flush()?;
        for sha256 in unreferenced {
            self.remove_blob_file(sha256)?;
        }
        Ok(())
    }

    /// Removes blob files that no record points at: left by a crash between a rename and its
    /// transaction, or between a transaction and a file removal.
    pub fn sweep_orphans(&self) -> Result<usize> {
        let _writing = self.writing()?;
        let _guard = self.lock_blobs()?;
        // Only what no record on disk points at goes.
        self.flush()?;
        let mut removed = 0;
        for sha256 in self.inner.files.list()? {
            if self.inner.blobs.get(&sha256)?.is_none() {
                self.remove_blob_file(&sha256)?;
                removed += 1;
            }
        }
        Ok(removed)
    }
}

pub(super) fn add_blob_ref(
    blob_tree: &TransactionalTree,
    chunk_tree: &TransactionalTree,
    sha256: &str,
    len: u64,
    placement: Placement,
    inline_bytes: Option<&[u8]>,
) -> Result<(), ConflictableTransactionError<StoreError>> {
    let record = match blob_tree.get(sha256)? {
        Some(existing) => {
            let mut record: BlobRecord =
                decode(&existing).map_err(ConflictableTransactionError::Abort)?;
            record.refs += 1;
            record
        }
        None => {
            if let Some(bytes) = inline_bytes {
                for (index, chunk) in (0u32..).zip(bytes.chunks(CHUNK_SIZE)) {
                    chunk_tree.insert(keys::chunk(sha256, index), chunk)?;
                }
            }
            BlobRecord {
                len,
                placement,
                refs: 1,
            }
        }
    };
    blob_tree.insert(
        sha256,
        encode(&record).map_err(ConflictableTransactionError::Abort)?,
    )?;
    Ok(())
}

/// A blob no record references any more: its hash, and where its bytes are to be removed from.
pub(super) type Unreferenced = (String, Placement);

/// Drops one reference; with the last one the record and any inline chunks go.
pub(super) fn drop_blob_ref(
    blob_tree: &TransactionalTree,
    chunk_tree: &TransactionalTree,
    sha256: &str,
) -> Result<Option<Unreferenced>, ConflictableTransactionError<StoreError>> {
    let Some(existing) = blob_tree.get(sha256)? else {
        return Ok(None);
    };
    let mut record: BlobRecord = decode(&existing).map_err(ConflictableTransactionError::Abort)?;
    record.refs = record.refs.saturating_sub(1);
    if record.refs > 0 {
        blob_tree.insert(
            sha256,
            encode(&record).map_err(ConflictableTransactionError::Abort)?,
        )?;
        return Ok(None);
    }
    blob_tree.remove(sha256)?;
    if record.placement == Placement::Inline {
        let chunks = record
            .len
            .div_ceil(u64::try_from(CHUNK_SIZE).unwrap_or(u64::MAX));
        for index in 0..u32::try_from(chunks).unwrap_or(u32::MAX) {
            chunk_tree.remove(keys::chunk(sha256, index))?;
        }
    }
    Ok(Some((sha256.to_owned(), record.placement)))
}
