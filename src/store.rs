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
    sync::{Arc, Mutex, RwLock, RwLockReadGuard},
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
    media::{
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

    fn lock_blobs(&self) -> Result<std::sync::MutexGuard<'_, ()>> {
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
        )
            .transaction(|(meta_tree, blob_tree, chunk_tree, pending_tree)| {
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
                                "Only the user who created this media id may upload to it".into(),
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
            })
            .map_err(tx_error);
        if let Err(err) = result {
            // The file may now be a blob nothing points at; drop it unless another record does.
            if !inline && self.inner.blobs.get(&sha256)?.is_none() {
                self.remove_blob_file(&sha256)?;
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
        let stored = (&self.inner.thumbs, &self.inner.blobs, &self.inner.chunks)
            .transaction(|(thumb_tree, blob_tree, chunk_tree)| {
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
            .map_err(tx_error)?;
        match stored {
            Some(existing) => decode(&existing),
            None => Ok(record.clone()),
        }
    }

    /// Deletes media with its thumbnails, and with the last reference to its bytes, the blob.
    /// Returns whether there was anything to delete.
    pub fn delete_media(&self, key: &MediaKey) -> Result<bool> {
        let existed = self.remove_entry(&key.db_key())?;
        self.flush()?;
        Ok(existed)
    }

    /// Removes one media id: its bytes' reference, the thumbnails kept from a remote origin and
    /// its access time; and with the last reference to its bytes, the blob and the thumbnails
    /// made from it. Not flushed. Returns whether there was anything to remove.
    fn remove_entry(&self, db_key: &[u8]) -> Result<bool> {
        let _writing = self.writing()?;
        let _guard = self.lock_blobs()?;
        let mut prefix = retention::REMOTE_THUMB_PREFIX.as_bytes().to_vec();
        prefix.extend_from_slice(db_key);
        prefix.push(b'/');
        let thumb_keys = self.thumbnail_keys(&prefix)?;

        let trees = (
            &self.inner.meta,
            &self.inner.blobs,
            &self.inner.chunks,
            &self.inner.thumbs,
            &self.inner.access,
        );
        let (existed, mut gone, source) = trees
            .transaction(|(meta, blobs, chunks, thumbs, access)| {
                let mut gone = Vec::new();
                let mut source = None;
                let mut existed = false;
                if let Some(old) = meta.remove(db_key)? {
                    existed = true;
                    let old: MediaMeta =
                        decode(&old).map_err(ConflictableTransactionError::Abort)?;
                    if let MediaState::Complete(content) = old.state
                        && let Some(blob) = drop_blob_ref(blobs, chunks, &content.sha256)?
                    {
                        source = Some(content.sha256);
                        gone.push(blob);
                    }
                }
                let dropped = drop_thumbnails(thumbs, blobs, chunks, &thumb_keys)?;
                existed |= dropped.0;
                gone.extend(dropped.1);
                access.remove(db_key)?;
                Ok((existed, gone, source))
            })
            .map_err(tx_error)?;

        // No media holds these bytes any more, so nothing can ask for thumbnails of them.
        if let Some(sha256) = source {
            let keys = self.thumbnail_keys(format!("{sha256}/").as_bytes())?;
            let (_, more) = (&self.inner.thumbs, &self.inner.blobs, &self.inner.chunks)
                .transaction(|(thumbs, blobs, chunks)| {
                    drop_thumbnails(thumbs, blobs, chunks, &keys)
                })
                .map_err(tx_error)?;
            gone.extend(more);
        }
        for (sha256, placement) in gone {
            if placement == Placement::File {
                self.remove_blob_file(&sha256)?;
            }
        }
        Ok(existed)
    }

    fn thumbnail_keys(&self, prefix: &[u8]) -> Result<Vec<sled::IVec>> {
        let keys = self.inner.thumbs.scan_prefix(prefix).keys();
        Ok(keys.collect::<std::result::Result<Vec<_>, _>>()?)
    }

    /// Opens the bytes of a blob for reading.
    pub fn open_blob(&self, sha256: &str) -> Result<BlobReader> {
        let Some(record) = self.inner.blobs.get(sha256)? else {
            return Err(Error::internal(anyhow::anyhow!(
                "blob {sha256} has no record"
            )));
        };
        let record: BlobRecord = decode(&record)?;
        match record.placement {
            Placement::File => Ok(BlobReader::Stream(self.inner.files.open(sha256)?)),
            Placement::Inline => {
                let mut out = Vec::with_capacity(usize::try_from(record.len).unwrap_or(0));
                for chunk in self.inner.chunks.scan_prefix(blob::chunk_prefix(sha256)) {
                    out.extend_from_slice(&chunk?.1);
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
