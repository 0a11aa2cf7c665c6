//! Committing an upload: a staged blob becomes the content of a media id in one transaction
//! with its blob reference, after the id's reservation (if any) and block list are checked.
//! An image stored for a URL preview commits the same way, and is entered in
//! `createdid_previewimage` in the same transaction (see `preview_images`).

use sled::{Transactional, transaction::ConflictableTransactionError};

use super::{
    Result, Store, StoreError, abort,
    blob::{Placement, Staged},
    decode, encode, index, keys, preview_images,
    refs::add_blob_ref,
    tx_error, usage,
};
use crate::model::{
    id::MediaKey,
    meta::{Content, MediaMeta, MediaState, PREVIEW_UPLOADER},
};

/// How a committed upload relates to what was there before.
pub enum Expect<'a> {
    /// A freshly minted id: nothing may exist under it.
    Absent,
    /// An id reserved by `/create`: it must be pending, unexpired and reserved by `user`.
    PendingFor { user: &'a str, now_ms: u64 },
}

/// What an upload records besides its bytes.
pub struct Upload<'a> {
    pub content_type: String,
    pub filename: Option<String>,
    pub uploader: &'a str,
    pub created_at: u64,
    pub expect: Expect<'a>,
}

impl Store {
    /// Makes a staged blob the content of `key`, atomically, and flushes before returning.
    pub fn commit_upload(&self, key: &MediaKey, staged: Staged, upload: Upload<'_>) -> Result<()> {
        self.commit(key, staged, upload, None).map(drop)
    }

    /// Makes a staged image the content of the new id `key` as the image of the URL preview
    /// cached under `preview_key`: nobody's upload, listed for expiry in
    /// `createdid_previewimage`. Quarantined bytes are quarantined here as anywhere; true if
    /// these were.
    pub fn commit_preview_image(
        &self,
        key: &MediaKey,
        staged: Staged,
        content_type: String,
        created_at: u64,
        preview_key: &[u8],
    ) -> Result<bool> {
        let upload = Upload {
            content_type,
            filename: None,
            uploader: PREVIEW_UPLOADER,
            created_at,
            expect: Expect::Absent,
        };
        self.commit(key, staged, upload, Some(preview_key))
    }

    fn commit(
        &self,
        key: &MediaKey,
        mut staged: Staged,
        upload: Upload<'_>,
        preview_key: Option<&[u8]>,
    ) -> Result<bool> {
        let Upload {
            content_type,
            filename,
            uploader,
            created_at,
            expect,
        } = upload;
        let inline = staged.len <= self.inner.inline_max;
        let inline_bytes = if inline {
            Some(staged.read_all()?)
        } else {
            None
        };
        let sha256 = staged.sha256.clone();
        let len = staged.len;
        // Sent before the gate and the lock are taken: a slow S3 holds up only this upload.
        let (staged, pin) = if inline {
            (None, None)
        } else {
            self.send_ahead(staged)?
        };
        let _writing = self.writing()?;
        let content = Content {
            content_type,
            filename,
            len,
            sha256: sha256.clone(),
        };
        let _guard = self.lock_blobs()?;
        if let Some(staged) = staged {
            self.inner.files.persist(staged)?;
        }
        let placement = if inline {
            Placement::Inline
        } else {
            Placement::File
        };
        let db_key = keys::media(key);
        let result = (
            &self.inner.meta,
            &self.inner.blobs,
            &self.inner.chunks,
            &self.inner.pending,
            &self.inner.blocked,
            &self.inner.hash_quarantine,
            &self.inner.quarantine,
            &self.inner.usage,
            &self.inner.preview_images,
            &self.inner.user_index,
            &self.inner.hash_index,
        )
            .transaction(
                |(
                    meta_tree,
                    blob_tree,
                    chunk_tree,
                    pending_tree,
                    blocked_tree,
                    hash_tree,
                    quarantine_tree,
                    usage_tree,
                    preview_tree,
                    user_index,
                    hash_index,
                )| {
                    // Checked here, not before the bytes were received: an admin may block the id
                    // while a remote fetch of it is in flight, and that fetch must lose.
                    if blocked_tree.get(&db_key)?.is_some() {
                        return abort(StoreError::Blocked);
                    }
                    let created_at = match &expect {
                        Expect::Absent => {
                            if meta_tree.get(&db_key)?.is_some() {
                                return abort(StoreError::Exists);
                            }
                            created_at
                        }
                        Expect::PendingFor { user, now_ms } => {
                            let Some(existing) = meta_tree.get(&db_key)? else {
                                return abort(StoreError::NotFound);
                            };
                            let existing: MediaMeta =
                                decode(&existing).map_err(ConflictableTransactionError::Abort)?;
                            match existing.state {
                                MediaState::Complete(_) => return abort(StoreError::Exists),
                                MediaState::Pending { unused_expires_at }
                                    if unused_expires_at <= *now_ms =>
                                {
                                    return abort(StoreError::NotFound);
                                }
                                MediaState::Pending { .. } => {}
                            }
                            if existing.uploader != *user {
                                return abort(StoreError::NotUploader);
                            }
                            pending_tree.remove(keys::pending(user, key))?;
                            existing.created_at
                        }
                    };
                    add_blob_ref(
                        blob_tree,
                        chunk_tree,
                        &sha256,
                        content.len,
                        placement,
                        inline_bytes.as_deref(),
                    )?;
                    let meta = MediaMeta {
                        uploader: uploader.to_owned(),
                        created_at,
                        state: MediaState::Complete(content.clone()),
                    };
                    meta_tree.insert(
                        db_key.as_slice(),
                        encode(&meta).map_err(ConflictableTransactionError::Abort)?,
                    )?;
                    index::add(user_index, hash_index, &db_key, &meta)?;
                    // Quarantined bytes are quarantined under every id from the moment they
                    // become visible, uploaded or fetched: nobody downloads them in between.
                    let quarantined = hash_tree.get(sha256.as_bytes())?;
                    if let Some(by) = &quarantined {
                        quarantine_tree.insert(db_key.as_slice(), by)?;
                    }
                    usage::count(usage_tree, uploader, content.len, true)?;
                    if let Some(preview_key) = preview_key {
                        let image = preview_images::Image {
                            db_key: &db_key,
                            created_at,
                            sha256: &content.sha256,
                            len: content.len,
                        };
                        preview_images::enter(preview_tree, &image, preview_key)?;
                    }
                    Ok(quarantined.is_some())
                },
            )
            .map_err(tx_error);
        // Committed or failed: the blob may be removed again (by the failure handling below).
        drop(pin);
        let quarantined = match result {
            Ok(quarantined) => quarantined,
            Err(err) => {
                // The file may now be a blob nothing points at; drop it unless another record
                // does.
                if !inline {
                    self.unlink_unreferenced(&_guard, std::slice::from_ref(&sha256))?;
                }
                return Err(err);
            }
        };
        drop(_guard);
        self.flush()?;
        Ok(quarantined)
    }
}
