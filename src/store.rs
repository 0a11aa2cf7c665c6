//! The embedded database: media metadata, blob records and small blobs in sled; large blobs in
//! a `BlobStore` beside it. Every method blocks; async callers go through `Store::blocking`.
//!
//! Trees (named `<key>_<value>`):
//! - `mediaid_meta`: `server/mediaId` -> `MediaMeta` (JSON)
//! - `sha256_blob`: hex sha256 -> `BlobRecord` (JSON): length, placement, reference count
//! - `blob_chunks`: sha256 bytes + chunk index -> bytes of an inline blob
//! - `thumbkey_thumb`: `sha256/WxH/method/animated` -> `ThumbRecord` (JSON), thumbnails by source
//! - `userid_pending`: `user\0server/mediaId` -> expiry (ms, big-endian), async uploads not yet made
//! - `servername_keys`: server name -> its last validated key response (JSON), for X-Matrix checks
//! - `urlts_preview`: URL + `\0` + hour (big-endian) -> expiry (ms, big-endian) + preview JSON
//! - `mediaid_access`: remote `server/mediaId` -> when it was last asked for (ms, big-endian)
//! - `mediaid_blocked`: `server/mediaId` -> `Blocked` (JSON), media an admin removed
//!
//! Crash safety: bytes reach disk (fsync, rename) before the sled transaction that makes them
//! visible, and the transaction is flushed before an upload is acknowledged. A crash in between
//! leaves at most an unreferenced blob file, swept at the next start.

pub mod backup;
pub mod blob;
pub mod blocked;
pub mod retention;
pub mod space;
pub mod spool;

use std::{
    path::{Path, PathBuf},
    sync::{Arc, Mutex, MutexGuard, RwLock, RwLockReadGuard},
};

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use sled::{
    Transactional,
    transaction::{ConflictableTransactionError, TransactionError, TransactionalTree},
};

use self::blob::{BlobRead, BlobStore, CHUNK_SIZE, FileBlobs, Placement, Staged, Staging};
use crate::{
    config::Config,
    error::{Error, Result},
    model::{
        id::MediaKey,
        meta::{Content, MediaMeta, MediaState},
    },
};

#[derive(Debug, Clone, Serialize, Deserialize)]
struct BlobRecord {
    len: u64,
    placement: Placement,
    refs: u64,
}

/// How a committed upload relates to what was there before.
pub enum Expect<'a> {
    /// A freshly minted id: nothing may exist under it.
    Absent,
    /// An id reserved by `/create`: it must be pending, unexpired and reserved by `user`.
    PendingFor { user: &'a str, now_ms: u64 },
}

/// A stored thumbnail: its bytes are a blob like any other.
/// A thumbnail's bytes on their way into the store.
enum ThumbBody<'a> {
    Inline(&'a [u8]),
    File(Staged),
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ThumbRecord {
    pub content_type: String,
    pub len: u64,
    pub sha256: String,
}

/// What an upload records besides its bytes.
pub struct Upload<'a> {
    pub content_type: String,
    pub filename: Option<String>,
    pub uploader: &'a str,
    pub created_at: u64,
    pub expect: Expect<'a>,
}

/// What removing one media id took away.
#[derive(Debug, Default)]
pub struct Removed {
    /// Whether anything was stored under the id.
    pub existed: bool,
    /// The hash of the bytes it pointed at, if it was complete.
    pub sha256: Option<String>,
    /// Blob files whose last record went: for `settle`.
    files: Vec<String>,
}

/// A blob opened for reading.
pub enum BlobReader {
    /// An inline blob, read whole: it is at most `inline_blob_max` bytes.
    Inline(bytes::Bytes),
    Stream(Box<dyn BlobRead>),
}

#[derive(Clone)]
pub struct Store {
    inner: Arc<Inner>,
}

struct Inner {
    db: sled::Db,
    meta: sled::Tree,
    blobs: sled::Tree,
    chunks: sled::Tree,
    pending: sled::Tree,
    thumbs: sled::Tree,
    server_keys: sled::Tree,
    previews: sled::Tree,
    access: sled::Tree,
    blocked: sled::Tree,
    files: Box<dyn BlobStore>,
    tmp_dir: PathBuf,
    data_dir: PathBuf,
    inline_max: u64,
    /// Serialises commits and deletions of blobs: without it, a deletion could remove a blob
    /// file between another upload's rename and its transaction.
    blob_lock: Mutex<()>,
    /// Every method that changes sled holds this shared; a backup holds it exclusively while it
    /// reads the trees, so it sees one consistent state across all of them. Reads never take it.
    write_gate: RwLock<()>,
    /// Backups in progress, and blob files whose removal waits for them to finish.
    backups: Mutex<backup::Holds>,
}

impl Store {
    pub fn open(config: &Config) -> Result<Self> {
        let data_dir = config.data_dir.clone();
        let tmp_dir = data_dir.join("tmp");
        std::fs::create_dir_all(&data_dir)?;
        // sled's file lock comes first: while another process has the data dir, its uploads in
        // flight in tmp/ must not be touched.
        let db = sled::Config::new()
            .path(data_dir.join("db"))
            .cache_capacity(config.store.cache_capacity.as_u64())
            .open()?;
        // Leftovers of uploads interrupted by a crash: never committed, so never visible.
        if tmp_dir.exists() {
            std::fs::remove_dir_all(&tmp_dir)?;
        }
        std::fs::create_dir_all(&tmp_dir)?;
        let store = Self {
            inner: Arc::new(Inner {
                meta: db.open_tree("mediaid_meta")?,
                blobs: db.open_tree("sha256_blob")?,
                chunks: db.open_tree("blob_chunks")?,
                pending: db.open_tree("userid_pending")?,
                thumbs: db.open_tree("thumbkey_thumb")?,
                server_keys: db.open_tree("servername_keys")?,
                previews: db.open_tree("urlts_preview")?,
                access: db.open_tree("mediaid_access")?,
                blocked: db.open_tree("mediaid_blocked")?,
                files: Box::new(FileBlobs::open(data_dir.join("blobs"))?),
                db,
                tmp_dir,
                data_dir,
                inline_max: config.store.inline_blob_max.as_u64(),
                blob_lock: Mutex::new(()),
                write_gate: RwLock::new(()),
                backups: Mutex::new(backup::Holds::default()),
            }),
        };
        Ok(store)
    }

    fn lock_blobs(&self) -> Result<MutexGuard<'_, ()>> {
        self.inner
            .blob_lock
            .lock()
            .map_err(|_| Error::internal(anyhow::anyhow!("blob lock poisoned")))
    }

    /// Shared while changing sled; see `write_gate`.
    fn writing(&self) -> Result<RwLockReadGuard<'_, ()>> {
        self.inner
            .write_gate
            .read()
            .map_err(|_| Error::internal(anyhow::anyhow!("store write gate poisoned")))
    }

    /// Runs blocking store work off the async workers.
    pub async fn blocking<T, F>(&self, f: F) -> Result<T>
    where
        F: FnOnce(&Store) -> Result<T> + Send + 'static,
        T: Send + 'static,
    {
        let store = self.clone();
        tokio::task::spawn_blocking(move || f(&store))
            .await
            .map_err(Error::internal)?
    }

    pub fn data_dir(&self) -> &Path {
        &self.inner.data_dir
    }

    pub fn stage(&self) -> Result<Staging> {
        Ok(Staging::new(&self.inner.tmp_dir)?)
    }

    pub fn flush(&self) -> Result<()> {
        self.inner.db.flush()?;
        Ok(())
    }

    pub fn get_meta(&self, key: &MediaKey) -> Result<Option<MediaMeta>> {
        self.inner
            .meta
            .get(key.db_key())?
            .map(|v| decode(&v))
            .transpose()
    }

    /// Reserves an id for an async upload. Fails if the id exists (ids are random, so never).
    pub fn insert_pending(&self, key: &MediaKey, meta: &MediaMeta) -> Result<()> {
        let MediaState::Pending { unused_expires_at } = meta.state else {
            return Err(Error::internal(anyhow::anyhow!(
                "insert_pending on complete media"
            )));
        };
        let value = encode(meta)?;
        let pending_key = pending_key(&meta.uploader, key);
        let _writing = self.writing()?;
        (&self.inner.meta, &self.inner.pending)
            .transaction(|(meta_tree, pending_tree)| {
                if meta_tree.get(key.db_key())?.is_some() {
                    return abort(Error::CannotOverwrite);
                }
                meta_tree.insert(key.db_key(), value.as_slice())?;
                pending_tree.insert(pending_key.as_slice(), &unused_expires_at.to_be_bytes())?;
                Ok(())
            })
            .map_err(tx_error)?;
        self.flush()
    }

    /// Unexpired async uploads `user` has reserved and not made yet, as their expiry times.
    pub fn pending_expiries(&self, user: &str, now_ms: u64) -> Result<Vec<u64>> {
        let mut prefix = user.as_bytes().to_vec();
        prefix.push(0);
        let mut out = Vec::new();
        for entry in self.inner.pending.scan_prefix(prefix) {
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
            let media_key = pkey
                .splitn(2, |b| *b == 0)
                .nth(1)
                .unwrap_or_default()
                .to_vec();
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
                    Ok::<_, ConflictableTransactionError<Error>>(())
                })
                .map_err(tx_error)?;
            expired += 1;
        }
        Ok(expired)
    }

    /// Makes a staged blob the content of `key`, atomically, and flushes before returning.
    pub fn commit_upload(
        &self,
        key: &MediaKey,
        mut staged: Staged,
        upload: Upload<'_>,
    ) -> Result<()> {
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
        let _writing = self.writing()?;
        let content = Content {
            content_type,
            filename,
            len: staged.len,
            sha256: sha256.clone(),
        };
        let _guard = self.lock_blobs()?;
        if !inline {
            self.inner.files.persist(staged)?;
        }
        let placement = if inline {
            Placement::Inline
        } else {
            Placement::File
        };
        let db_key = key.db_key();
        let result = (
            &self.inner.meta,
            &self.inner.blobs,
            &self.inner.chunks,
            &self.inner.pending,
            &self.inner.blocked,
        )
            .transaction(
                |(meta_tree, blob_tree, chunk_tree, pending_tree, blocked_tree)| {
                    // Checked here, not before the bytes were received: an admin may block the id
                    // while a remote fetch of it is in flight, and that fetch must lose.
                    if blocked_tree.get(&db_key)?.is_some() {
                        return abort(Error::NotFound);
                    }
                    let created_at = match &expect {
                        Expect::Absent => {
                            if meta_tree.get(&db_key)?.is_some() {
                                return abort(Error::CannotOverwrite);
                            }
                            created_at
                        }
                        Expect::PendingFor { user, now_ms } => {
                            let Some(existing) = meta_tree.get(&db_key)? else {
                                return abort(Error::NotFound);
                            };
                            let existing: MediaMeta =
                                decode(&existing).map_err(ConflictableTransactionError::Abort)?;
                            match existing.state {
                                MediaState::Complete(_) => return abort(Error::CannotOverwrite),
                                MediaState::Pending { unused_expires_at }
                                    if unused_expires_at <= *now_ms =>
                                {
                                    return abort(Error::NotFound);
                                }
                                MediaState::Pending { .. } => {}
                            }
                            if existing.uploader != *user {
                                return abort(Error::Forbidden(
                                    "Only the user who created this media id may upload to it"
                                        .into(),
                                ));
                            }
                            pending_tree.remove(pending_key(user, key))?;
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
                    Ok(())
                },
            )
            .map_err(tx_error);
        if let Err(err) = result {
            // The file may now be a blob nothing points at; drop it unless another record does.
            if !inline {
                self.unlink_unreferenced(&_guard, std::slice::from_ref(&sha256))?;
            }
            return Err(err);
        }
        drop(_guard);
        self.flush()
    }

    /// The key record kept for `server`, as stored by `put_server_keys`.
    pub fn get_server_keys(&self, server: &str) -> Result<Option<Vec<u8>>> {
        Ok(self.inner.server_keys.get(server)?.map(|v| v.to_vec()))
    }

    /// Keeps a server's key record, flushed: fetches are rare, and a restart after a crash
    /// should not make every origin's keys be fetched again at once.
    pub fn put_server_keys(&self, server: &str, record: &[u8]) -> Result<()> {
        self.inner.server_keys.insert(server, record)?;
        self.inner.server_keys.flush()?;
        Ok(())
    }

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
        let _writing = self.writing()?;
        let _guard = self.lock_blobs()?;
        if let ThumbBody::File(staged) = body {
            self.inner.files.persist(staged)?;
        }
        let value = encode(record)?;
        let source = thumb_source(key);
        let stored = (
            &self.inner.thumbs,
            &self.inner.blobs,
            &self.inner.chunks,
            &self.inner.blocked,
        )
            .transaction(|(thumb_tree, blob_tree, chunk_tree, blocked_tree)| {
                // A render or fetch that finishes after its source was deleted stores nothing:
                // deletion removes thumbnails in the same transaction as the source, so one
                // stored now would outlive it.
                let gone = match source {
                    Some(ThumbSource::Bytes(sha256)) => blob_tree.get(sha256)?.is_none(),
                    Some(ThumbSource::Remote(media)) => blocked_tree.get(media)?.is_some(),
                    None => false,
                };
                if gone {
                    return abort(Error::NotFound);
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
                Ok(None)
            })
            .map_err(tx_error);
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

    /// Deletes media with its thumbnails, and with the last reference to its bytes, the blob.
    /// Returns whether there was anything to delete. Durable when it returns.
    pub fn delete_media(&self, key: &MediaKey) -> Result<bool> {
        let removed = self.remove_entry(&key.db_key(), None)?;
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
        let mut prefix = retention::REMOTE_THUMB_PREFIX.as_bytes().to_vec();
        prefix.extend_from_slice(db_key);
        prefix.push(b'/');
        let remote_thumbs = self.thumbnail_keys(&prefix)?;
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
            Some(sha256) => self.thumbnail_keys(format!("{sha256}/").as_bytes())?,
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
        );
        let (existed, gone, sha256) = trees
            .transaction(|(meta, blobs, chunks, thumbs, access, pending, blocked)| {
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
                    match old.state {
                        MediaState::Complete(content) => {
                            if source.as_deref() != Some(content.sha256.as_str()) {
                                return abort(Error::internal(anyhow::anyhow!(
                                    "media changed under the blob lock"
                                )));
                            }
                            if let Some(blob) = drop_blob_ref(blobs, chunks, &content.sha256)? {
                                // No media holds these bytes any more, so nothing can ask for
                                // thumbnails of them.
                                gone.push(blob);
                                gone.extend(
                                    drop_thumbnails(thumbs, blobs, chunks, &source_thumbs)?.1,
                                );
                            }
                            sha256 = Some(content.sha256);
                        }
                        MediaState::Pending { .. } => {
                            let mut pkey = old.uploader.as_bytes().to_vec();
                            pkey.push(0);
                            pkey.extend_from_slice(db_key);
                            pending.remove(pkey)?;
                        }
                    }
                }
                let dropped = drop_thumbnails(thumbs, blobs, chunks, &remote_thumbs)?;
                existed |= dropped.0;
                gone.extend(dropped.1);
                access.remove(db_key)?;
                Ok((existed, gone, sha256))
            })
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
    fn unlink_unreferenced(&self, _locked: &MutexGuard<'_, ()>, files: &[String]) -> Result<()> {
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

    fn thumbnail_keys(&self, prefix: &[u8]) -> Result<Vec<sled::IVec>> {
        let keys = self.inner.thumbs.scan_prefix(prefix).keys();
        Ok(keys.collect::<std::result::Result<Vec<_>, _>>()?)
    }

    /// Opens the bytes of a blob for reading.
    pub fn open_blob(&self, sha256: &str) -> Result<BlobReader> {
        // No record: the media was deleted since its metadata was read.
        let Some(record) = self.inner.blobs.get(sha256)? else {
            return Err(Error::NotFound);
        };
        let record: BlobRecord = decode(&record)?;
        match record.placement {
            Placement::File => match self.inner.files.open(sha256) {
                Ok(file) => Ok(BlobReader::Stream(file)),
                // Deleted between the record's read and the file's.
                Err(e)
                    if e.kind() == std::io::ErrorKind::NotFound
                        && self.inner.blobs.get(sha256)?.is_none() =>
                {
                    Err(Error::NotFound)
                }
                Err(e) => Err(e.into()),
            },
            Placement::Inline => {
                let mut out = Vec::with_capacity(usize::try_from(record.len).unwrap_or(0));
                for chunk in self.inner.chunks.scan_prefix(blob::chunk_prefix(sha256)) {
                    out.extend_from_slice(&chunk?.1);
                }
                if u64::try_from(out.len()).ok() != Some(record.len) {
                    // The chunks went with a deletion while we read them: never half a blob.
                    if self.inner.blobs.get(sha256)?.is_none() {
                        return Err(Error::NotFound);
                    }
                    return Err(Error::internal(anyhow::anyhow!(
                        "inline blob {sha256} has {} bytes, its record says {}",
                        out.len(),
                        record.len
                    )));
                }
                Ok(BlobReader::Inline(out.into()))
            }
        }
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

    /// Bytes sled uses on disk (its own estimate) and media bytes by placement.
    pub fn size_on_disk(&self) -> Result<u64> {
        Ok(self.inner.db.size_on_disk()?)
    }
}

fn add_blob_ref(
    blob_tree: &TransactionalTree,
    chunk_tree: &TransactionalTree,
    sha256: &str,
    len: u64,
    placement: Placement,
    inline_bytes: Option<&[u8]>,
) -> Result<(), ConflictableTransactionError<Error>> {
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
                    chunk_tree.insert(blob::chunk_key(sha256, index), chunk)?;
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
type Unreferenced = (String, Placement);

/// Removes the thumbnails under `keys` with their blob references. Returns whether any existed,
/// and the blobs nothing references any more.
fn drop_thumbnails(
    thumbs: &TransactionalTree,
    blobs: &TransactionalTree,
    chunks: &TransactionalTree,
    keys: &[sled::IVec],
) -> Result<(bool, Vec<Unreferenced>), ConflictableTransactionError<Error>> {
    let mut existed = false;
    let mut gone = Vec::new();
    for key in keys {
        if let Some(old) = thumbs.remove(key)? {
            existed = true;
            let old: ThumbRecord = decode(&old).map_err(ConflictableTransactionError::Abort)?;
            gone.extend(drop_blob_ref(blobs, chunks, &old.sha256)?);
        }
    }
    Ok((existed, gone))
}

/// Drops one reference; with the last one the record and any inline chunks go.
fn drop_blob_ref(
    blob_tree: &TransactionalTree,
    chunk_tree: &TransactionalTree,
    sha256: &str,
) -> Result<Option<Unreferenced>, ConflictableTransactionError<Error>> {
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
            chunk_tree.remove(blob::chunk_key(sha256, index))?;
        }
    }
    Ok(Some((sha256.to_owned(), record.placement)))
}

/// What a thumbnail in `thumbkey_thumb` is made from.
#[derive(Clone, Copy)]
enum ThumbSource<'a> {
    /// Bytes stored here: the key starts with their sha256.
    Bytes(&'a str),
    /// Remote media whose origin sent the thumbnail: `remote:server/mediaId/...`.
    Remote(&'a [u8]),
}

fn thumb_source(key: &str) -> Option<ThumbSource<'_>> {
    if key.starts_with(retention::REMOTE_THUMB_PREFIX) {
        return retention::remote_thumb_media(key.as_bytes()).map(ThumbSource::Remote);
    }
    key.split_once('/')
        .map(|(sha256, _)| ThumbSource::Bytes(sha256))
}

fn pending_key(user: &str, key: &MediaKey) -> Vec<u8> {
    let mut out = user.as_bytes().to_vec();
    out.push(0);
    out.extend_from_slice(&key.db_key());
    out
}

fn read_u64(bytes: &[u8]) -> u64 {
    bytes.try_into().map(u64::from_be_bytes).unwrap_or(0)
}

fn encode<T: Serialize>(value: &T) -> Result<Vec<u8>> {
    serde_json::to_vec(value).map_err(Error::internal)
}

fn decode<T: for<'de> Deserialize<'de>>(bytes: &[u8]) -> Result<T> {
    serde_json::from_slice(bytes).map_err(Error::internal)
}

fn abort<T>(err: Error) -> Result<T, ConflictableTransactionError<Error>> {
    Err(ConflictableTransactionError::Abort(err))
}

fn tx_error(err: TransactionError<Error>) -> Error {
    match err {
        TransactionError::Abort(err) => err,
        TransactionError::Storage(err) => err.into(),
    }
}

#[cfg(test)]
mod tests;
