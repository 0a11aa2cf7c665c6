//! The embedded database: media metadata, blob records and small blobs in sled; large blobs in
//! a `BlobStore` beside it. Every method blocks; async callers go through `Store::blocking`.
//!
//! Trees (named `<key>_<value>`):
//! - `mediaid_meta`: `server/mediaId` -> `MediaMeta` (JSON)
//! - `sha256_blob`: hex sha256 -> `BlobRecord` (JSON): length, placement, reference count
//! - `blob_chunks`: sha256 bytes + chunk index -> bytes of an inline blob
//! - `thumbkey_thumb`: `sha256/WxH/method/animated` -> `ThumbRecord` (JSON), thumbnails by source
//! - `userid_pending`: `user\0server/mediaId` -> expiry (ms, big-endian), async uploads not yet made
//! - `servername_keys`: server name -> until when it may be kept, when it was fetched (ms,
//!   big-endian) and its last validated key response, for X-Matrix checks (see `server_keys`)
//! - `urlts_preview`: URL + `\0` + hour (big-endian) -> expiry (ms, big-endian) + preview JSON
//! - `mediaid_access`: remote `server/mediaId` -> when it was last asked for (ms, big-endian);
//!   also imported local media, with its last access at the source
//! - `mediaid_blocked`: `server/mediaId` -> `Blocked` (JSON), media an admin removed
//! - `mediaid_quarantine`, `mediaid_protected`, `sha256_quarantine`: quarantined ids, ids
//!   protected from quarantine, quarantined bytes (see `quarantine`)
//! - `userid_usage`, `userid_quota`: what each user stores, and an admin's limits (see `usage`)
//! - `createdid_previewimage`: images stored for URL previews, oldest first, with their total
//!   size (see `preview_images`)
//! - `userid_media`, `sha256_holder`: each user's media by creation time, and who holds which
//!   bytes (see `index`)
//!
//! Crash safety: bytes reach disk (fsync, rename) before the sled transaction that makes them
//! visible, and the transaction is flushed before an upload is acknowledged. A crash in between
//! leaves at most an unreferenced blob file, swept at the next start.

pub mod backends;
pub mod backup;
pub mod blob;
pub mod blocked;
pub mod direct;
mod error;
pub mod export;
pub mod import;
mod index;
pub mod inventory;
pub mod keys;
mod kv;
mod pending;
pub mod preview_images;
pub mod quarantine;
mod refs;
pub mod retention;
pub mod s3;
pub mod server_keys;
pub mod space;
mod spill;
pub mod spool;
mod thumbs;
mod upload;
pub mod usage;

use std::{
    collections::HashMap,
    path::{Path, PathBuf},
    sync::{Arc, Mutex, MutexGuard, RwLock, RwLockReadGuard},
};

use serde::{Deserialize, Serialize};
use sled::transaction::{ConflictableTransactionError, TransactionError};

use self::{
    blob::{BlobRead, BlobStore, FileBlobs, Placement, Staged, Staging},
    refs::BlobRecord,
    s3::S3Blobs,
};
pub use self::{
    error::StoreError,
    refs::Removed,
    thumbs::ThumbRecord,
    upload::{Expect, Upload},
};
use crate::{
    config::Config,
    model::{id::MediaKey, meta::MediaMeta},
};

pub type Result<T, E = StoreError> = std::result::Result<T, E>;
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
    quarantine: sled::Tree,
    protected: sled::Tree,
    hash_quarantine: sled::Tree,
    usage: sled::Tree,
    quotas: sled::Tree,
    preview_images: sled::Tree,
    user_index: sled::Tree,
    hash_index: sled::Tree,
    files: Box<dyn BlobStore>,
    /// The bucket, when blobs are in S3 (`files` is then the same backend).
    s3: Option<S3Blobs>,
    /// Hashes being sent to a backend ahead of the blob lock (`send_ahead`), with how many
    /// uploads send each: their blobs are not removed meanwhile. Held while removing a blob.
    pins: Mutex<HashMap<String, usize>>,
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
        let s3 = match &config.store.s3 {
            Some(s3) => Some(
                S3Blobs::with_cache(s3, &data_dir, config.store.min_free_space)
                    .map_err(|e| StoreError::Backend(e.to_string()))?,
            ),
            None => None,
        };
        let local = data_dir.join("blobs");
        let files: Box<dyn BlobStore> = match &s3 {
            // Blobs not migrated yet (uploaded after the last `migrate-store` run) are still
            // read from the data dir, until `--remove-source` empties and removes it.
            Some(s3) if local.is_dir() => Box::new(backends::Fallback::new(
                Box::new(s3.clone()),
                FileBlobs::open(local)?,
            )),
            Some(s3) => Box::new(s3.clone()),
            None => Box::new(FileBlobs::open(local)?),
        };
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
                quarantine: db.open_tree("mediaid_quarantine")?,
                protected: db.open_tree("mediaid_protected")?,
                hash_quarantine: db.open_tree("sha256_quarantine")?,
                usage: db.open_tree("userid_usage")?,
                quotas: db.open_tree("userid_quota")?,
                preview_images: db.open_tree("createdid_previewimage")?,
                user_index: db.open_tree("userid_media")?,
                hash_index: db.open_tree("sha256_holder")?,
                files,
                s3,
                pins: Mutex::new(HashMap::new()),
                db,
                tmp_dir,
                data_dir,
                inline_max: config.store.inline_blob_max.as_u64(),
                blob_lock: Mutex::new(()),
                write_gate: RwLock::new(()),
                backups: Mutex::new(backup::Holds::default()),
            }),
        };
        store.count_usage_once()?;
        store.migrate_preview_images_once(config.server_name.as_str())?;
        store.count_preview_images_by_blob_once()?;
        store.build_indexes_once()?;
        store.spill_large_inline_blobs_once()?;
        Ok(store)
    }

    fn lock_blobs(&self) -> Result<MutexGuard<'_, ()>> {
        self.inner
            .blob_lock
            .lock()
            .map_err(|_| StoreError::Poisoned("blob lock"))
    }

    /// The S3 bucket blobs are kept in, if they are.
    pub fn s3(&self) -> Option<&S3Blobs> {
        self.inner.s3.as_ref()
    }

    fn lock_pins(&self) -> Result<MutexGuard<'_, HashMap<String, usize>>> {
        self.inner
            .pins
            .lock()
            .map_err(|_| StoreError::Poisoned("blob pins"))
    }

    /// For a backend that sends ahead (S3): puts the staged blob now, before the caller takes
    /// the blob lock, so a slow transfer holds up no other upload or deletion, and returns the
    /// pin that keeps the blob from being removed until the caller's record is committed (a
    /// deletion of the last other reference to the same bytes may run in between). For other
    /// backends, hands the staged blob back, to be persisted under the lock.
    fn send_ahead(&self, staged: Staged) -> Result<(Option<Staged>, Option<Pin<'_>>)> {
        if !self.inner.files.sends_ahead() {
            return Ok((Some(staged), None));
        }
        let pin = self.pin(&staged.sha256)?;
        self.inner.files.persist(staged)?;
        Ok((None, Some(pin)))
    }

    /// Taken with the pins' lock, which a removal holds throughout: a removal that began
    /// before the pin ends before the send starts, one that begins after sees the pin.
    fn pin(&self, sha256: &str) -> Result<Pin<'_>> {
        *self.lock_pins()?.entry(sha256.to_owned()).or_insert(0) += 1;
        Ok(Pin {
            store: self,
            sha256: sha256.to_owned(),
        })
    }

    /// Removes a blob from the backend unless an upload is sending it now; then it stays, and
    /// is either referenced by that upload's record or, if the upload fails, left to the sweep.
    pub(super) fn remove_unpinned(&self, sha256: &str) -> Result<()> {
        let pins = self.lock_pins()?;
        if pins.contains_key(sha256) {
            return Ok(());
        }
        self.inner.files.remove(sha256)?;
        drop(pins);
        Ok(())
    }

    /// Shared while changing sled; see `write_gate`.
    fn writing(&self) -> Result<RwLockReadGuard<'_, ()>> {
        self.inner
            .write_gate
            .read()
            .map_err(|_| StoreError::Poisoned("store write gate"))
    }

    /// Runs blocking store work off the async workers. The work may fail with the caller's
    /// error type, so it can mix store calls with the caller's own checks.
    pub async fn blocking<T, E, F>(&self, f: F) -> Result<T, E>
    where
        F: FnOnce(&Store) -> Result<T, E> + Send + 'static,
        T: Send + 'static,
        E: From<StoreError> + Send + 'static,
    {
        let store = self.clone();
        tokio::task::spawn_blocking(move || f(&store))
            .await
            .map_err(|e| E::from(StoreError::TaskLost(e)))?
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
            .get(keys::media(key))?
            .map(|v| decode(&v))
            .transpose()
    }
    /// Opens the bytes of a blob for reading.
    pub fn open_blob(&self, sha256: &str) -> Result<BlobReader> {
        // No record: the media was deleted since its metadata was read.
        let Some(record) = self.inner.blobs.get(sha256)? else {
            return Err(StoreError::NotFound);
        };
        let record: BlobRecord = decode(&record)?;
        match record.placement {
            Placement::File => match self.inner.files.open_sized(sha256, record.len) {
                Ok(file) => Ok(BlobReader::Stream(file)),
                // Deleted between the record's read and the file's.
                Err(e)
                    if e.kind() == std::io::ErrorKind::NotFound
                        && self.inner.blobs.get(sha256)?.is_none() =>
                {
                    Err(StoreError::NotFound)
                }
                Err(e) => Err(e.into()),
            },
            Placement::Inline => {
                let mut out = Vec::with_capacity(usize::try_from(record.len).unwrap_or(0));
                for chunk in self.inner.chunks.scan_prefix(keys::chunk_prefix(sha256)) {
                    out.extend_from_slice(&chunk?.1);
                }
                if u64::try_from(out.len()).ok() != Some(record.len) {
                    // The chunks went with a deletion while we read them: never half a blob.
                    if self.inner.blobs.get(sha256)?.is_none() {
                        return Err(StoreError::NotFound);
                    }
                    return Err(StoreError::Corrupt(format!(
                        "inline blob {sha256} has {} bytes, its record says {}",
                        out.len(),
                        record.len
                    )));
                }
                Ok(BlobReader::Inline(out.into()))
            }
        }
    }

    /// Bytes sled uses on disk, by its own estimate: inline blobs included, blob files not.
    pub fn size_on_disk(&self) -> Result<u64> {
        Ok(self.inner.db.size_on_disk()?)
    }
}
/// A hash pinned against removal while its upload commits (`Store::send_ahead`).
struct Pin<'a> {
    store: &'a Store,
    sha256: String,
}

impl Drop for Pin<'_> {
    fn drop(&mut self) {
        // A poisoned lock leaves the pin in place: the blob stays, at worst, for the sweep.
        if let Ok(mut pins) = self.store.inner.pins.lock()
            && let Some(count) = pins.get_mut(&self.sha256)
        {
            *count = count.saturating_sub(1);
            if *count == 0 {
                pins.remove(&self.sha256);
            }
        }
    }
}

fn read_u64(bytes: &[u8]) -> u64 {
    bytes.try_into().map(u64::from_be_bytes).unwrap_or(0)
}

fn encode<T: Serialize>(value: &T) -> Result<Vec<u8>> {
    serde_json::to_vec(value).map_err(StoreError::Encode)
}

fn decode<T: for<'de> Deserialize<'de>>(bytes: &[u8]) -> Result<T> {
    serde_json::from_slice(bytes).map_err(|e| StoreError::Corrupt(e.to_string()))
}

fn abort<T>(err: StoreError) -> Result<T, ConflictableTransactionError<StoreError>> {
    Err(ConflictableTransactionError::Abort(err))
}

fn tx_error(err: TransactionError<StoreError>) -> StoreError {
    match err {
        TransactionError::Abort(err) => err,
        TransactionError::Storage(err) => err.into(),
    }
}

#[cfg(test)]
mod tests;
