//! Indexes over `mediaid_meta`, so that admin lookups cost what they return instead of a scan of
//! every record:
//!
//! - `userid_media`: `user\0created_at server/mediaId` -> the length (big-endian u64) of complete
//!   media, empty for a reservation: each local user's media, oldest first. Only user ids
//!   (starting with `@`) are indexed: remote media is kept under its server's name.
//! - `sha256_holder`: `sha256 holder` -> nothing: who holds some bytes, a `server/mediaId` key for
//!   complete media, a `remote:` thumbnail key for a thumbnail kept from a remote origin.
//!
//! Both are written in the same transactions that add and remove records. A store from before
//! them is indexed once at open (`build_indexes_once`), in batches that record how far they got,
//! so an interrupted build resumes; entries are idempotent, so redoing a batch is harmless.

use sled::transaction::{ConflictableTransactionError, TransactionalTree};

use super::{Result, Store, StoreError, ThumbRecord, decode, keys};
use crate::model::meta::{MediaMeta, MediaState};

/// Present in `userid_media` once the indexes are built. No user id starts with NUL.
const BUILT: &[u8] = b"\0built";
/// In `userid_media` while a build runs: the last `mediaid_meta` key it indexed.
const CURSOR: &[u8] = b"\0cursor";
/// Records indexed per batch of a build.
const BUILD_BATCH: usize = 4096;

/// The `userid_media` entry of `meta` stored under `db_key`, if its uploader is a user.
fn user_entry(db_key: &[u8], meta: &MediaMeta) -> Option<(Vec<u8>, Vec<u8>)> {
    if !meta.uploader.starts_with('@') {
        return None;
    }
    let value = match &meta.state {
        MediaState::Complete(content) => content.len.to_be_bytes().to_vec(),
        MediaState::Pending { .. } => Vec::new(),
    };
    Some((
        keys::user_media(&meta.uploader, meta.created_at, db_key),
        value,
    ))
}

/// The `sha256_holder` entry of `meta` stored under `db_key`, if it is complete.
fn hash_entry(db_key: &[u8], meta: &MediaMeta) -> Option<Vec<u8>> {
    match &meta.state {
        MediaState::Complete(content) => Some(keys::hash_holder(&content.sha256, db_key)),
        MediaState::Pending { .. } => None,
    }
}

/// Indexes `meta`, just written under `db_key`, in a transaction.
pub(super) fn add(
    users: &TransactionalTree,
    hashes: &TransactionalTree,
    db_key: &[u8],
    meta: &MediaMeta,
) -> Result<(), ConflictableTransactionError<StoreError>> {
    if let Some((key, value)) = user_entry(db_key, meta) {
        users.insert(key, value)?;
    }
    if let Some(key) = hash_entry(db_key, meta) {
        hashes.insert(key, &[])?;
    }
    Ok(())
}

/// Forgets `meta`, just removed from `db_key`, in a transaction.
pub(super) fn remove(
    users: &TransactionalTree,
    hashes: &TransactionalTree,
    db_key: &[u8],
    meta: &MediaMeta,
) -> Result<(), ConflictableTransactionError<StoreError>> {
    if let Some((key, _)) = user_entry(db_key, meta) {
        users.remove(key)?;
    }
    if let Some(key) = hash_entry(db_key, meta) {
        hashes.remove(key)?;
    }
    Ok(())
}

/// Indexes (or with `add` false, forgets) the thumbnail `thumb_key` holding `sha256`, when it is
/// one kept from a remote origin: thumbnails rendered here are found through their source.
pub(super) fn thumb(
    hashes: &TransactionalTree,
    thumb_key: &[u8],
    sha256: &str,
    add: bool,
) -> Result<(), ConflictableTransactionError<StoreError>> {
    if !thumb_key.starts_with(keys::REMOTE_THUMB_PREFIX.as_bytes()) {
        return Ok(());
    }
    let key = keys::hash_holder(sha256, thumb_key);
    if add {
        hashes.insert(key, &[])?;
    } else {
        hashes.remove(key)?;
    }
    Ok(())
}

/// Who holds the bytes `sha256`.
pub(super) enum Holder {
    /// Complete media under this `server/mediaId` key.
    Media(Vec<u8>),
    /// A thumbnail kept from a remote origin for the media under this `server/mediaId` key.
    RemoteThumb(Vec<u8>),
}

impl Store {
    /// Every holder of the bytes `sha256`, in key order.
    pub(super) fn holders(&self, sha256: &str) -> Result<Vec<Holder>> {
        let mut out = Vec::new();
        for item in self.inner.hash_index.scan_prefix(sha256.as_bytes()) {
            let (key, _) = item?;
            let Some(holder) = keys::parse_hash_holder(&key) else {
                continue;
            };
            out.push(match keys::remote_thumb_media(holder) {
                Some(media) => Holder::RemoteThumb(media.to_vec()),
                None => Holder::Media(holder.to_vec()),
            });
        }
        Ok(out)
    }

    /// The `server/mediaId` keys of `user`'s media, oldest first.
    pub(super) fn user_media_keys(&self, user: &str) -> Result<Vec<Vec<u8>>> {
        let mut out = Vec::new();
        for item in self
            .inner
            .user_index
            .scan_prefix(keys::user_media_prefix(user))
        {
            let (key, _) = item?;
            if let Some((_, _, db_key)) = keys::parse_user_media(&key) {
                out.push(db_key.to_vec());
            }
        }
        Ok(out)
    }

    /// Every user's complete media as (user, creation time, length, `server/mediaId` key),
    /// grouped by user: what usage statistics add up, read from the index alone.
    pub(super) fn each_user_media(
        &self,
        mut each: impl FnMut(&[u8], u64, u64, &[u8]),
    ) -> Result<()> {
        for item in self.inner.user_index.iter() {
            let (key, value) = item?;
            if value.len() != 8 {
                continue;
            }
            if let Some((user, at, db_key)) = keys::parse_user_media(&key)
                && !user.is_empty()
            {
                each(user, at, super::read_u64(&value), db_key);
            }
        }
        Ok(())
    }

    /// Builds the indexes from `mediaid_meta` and `thumbkey_thumb` unless built before, resuming
    /// an interrupted build. Run at open, before any writer.
    pub(super) fn build_indexes_once(&self) -> Result<()> {
        if self.inner.user_index.contains_key(BUILT)? {
            return Ok(());
        }
        // Once, after an upgrade: a large store takes a while, and the log says why.
        tracing::info!("indexing media by uploader and by content hash");
        while !self.build_indexes_step(BUILD_BATCH)? {}
        tracing::info!("media indexes built");
        Ok(())
    }

    /// Indexes up to `batch` more records; returns whether the build is complete.
    pub(super) fn build_indexes_step(&self, batch: usize) -> Result<bool> {
        let users = &self.inner.user_index;
        if users.contains_key(BUILT)? {
            return Ok(true);
        }
        let range = match users.get(CURSOR)? {
            Some(after) => self.inner.meta.range::<&[u8], _>((
                std::ops::Bound::Excluded(&*after),
                std::ops::Bound::Unbounded,
            )),
            None => self.inner.meta.iter(),
        };
        let (mut user_batch, mut hash_batch) = (sled::Batch::default(), sled::Batch::default());
        let mut last = None;
        for item in range.take(batch) {
            let (db_key, raw) = item?;
            let meta: MediaMeta = decode(&raw)?;
            if let Some((key, value)) = user_entry(&db_key, &meta) {
                user_batch.insert(key, value);
            }
            if let Some(key) = hash_entry(&db_key, &meta) {
                hash_batch.insert(key, &[]);
            }
            last = Some(db_key);
        }
        let Some(last) = last else {
            self.index_remote_thumbs()?;
            users.insert(BUILT, &[])?;
            users.remove(CURSOR)?;
            self.flush()?;
            return Ok(true);
        };
        // Entries before the cursor that records them: a crash in between redoes the batch.
        self.inner.hash_index.apply_batch(hash_batch)?;
        user_batch.insert(CURSOR, last);
        users.apply_batch(user_batch)?;
        self.flush()?;
        Ok(false)
    }

    fn index_remote_thumbs(&self) -> Result<()> {
        let mut batch = sled::Batch::default();
        for item in self.inner.thumbs.scan_prefix(keys::REMOTE_THUMB_PREFIX) {
            let (thumb_key, raw) = item?;
            let record: ThumbRecord = decode(&raw)?;
            batch.insert(keys::hash_holder(&record.sha256, &thumb_key), &[]);
        }
        self.inner.hash_index.apply_batch(batch)?;
        Ok(())
    }
}
