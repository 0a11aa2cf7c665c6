//! The media service: the one place that decides what an upload, a reservation or a download
//! does. Handlers call it with validated input; it calls the store. It never sees HTTP.
//! Uploads live in `upload`, remote media in `remote`; this file holds the service and reads.

pub mod cache;
pub mod inventory;
pub mod moderation;
pub mod preview_images;
pub mod quota;
pub mod rate;
pub mod remote;
pub mod retention;
mod upload;
mod waiters;

use std::{
    collections::HashSet,
    sync::{Arc, Mutex},
    time::Duration,
};

use bytes::Bytes;
use mxmedia_proto::ids::ServerName;
use tokio::time::Instant;

pub use self::upload::UploadInfo;
use self::{cache::MediaCache, upload::PendingGate};
use crate::{
    clock::now_ms,
    config::{Config, ThumbnailConfig},
    error::{Error, Result},
    model::{
        id::MediaKey,
        meta::{Content, MediaMeta, MediaState},
        thumb::ThumbSpec,
    },
    store::{BlobReader, Store, StoreError, retention::RetentionPolicy, space::DiskBudget},
    thumbnail::{Served, Thumbnailer},
};

/// File blobs up to this size are read whole (one read) and kept in the memory cache.
const SMALL_FILE_BLOB: u64 = 256 * 1024;

/// All `len` bytes of a blob file; a shorter or longer file is an error, never half a blob.
fn read_whole(file: Box<dyn crate::store::blob::BlobRead>, len: u64) -> std::io::Result<Bytes> {
    use std::io::Read as _;
    let mut buf = Vec::with_capacity(usize::try_from(len).unwrap_or(0));
    file.take(len.saturating_add(1)).read_to_end(&mut buf)?;
    if u64::try_from(buf.len()).ok() != Some(len) {
        return Err(std::io::Error::other(format!(
            "blob file of {} bytes where {len} were recorded",
            buf.len()
        )));
    }
    Ok(Bytes::from(buf))
}

pub struct MediaService {
    store: Store,
    server_name: ServerName,
    max_upload: u64,
    /// The free-space floor, shared with remote fetches: every stream reserves against it.
    budget: DiskBudget,
    unused_expiry: Duration,
    max_pending: usize,
    /// Makes counting a user's reservations and adding one a single step.
    pending_gate: Arc<PendingGate>,
    max_timeout: Duration,
    /// Downloads waiting for async uploads, by id: a `PUT` wakes only its own id's waiters.
    waiters: waiters::Waiters,
    /// Ids with an upload in flight: a second concurrent PUT loses at once with 409.
    uploading: Mutex<HashSet<MediaKey>>,
    /// Shared with the retention sweep, which forgets what it removes as it goes.
    cache: Arc<MediaCache>,
    thumbnails: Thumbnailer,
    thumbnail_config: ThumbnailConfig,
    remote: remote::Remote,
    remote_thumbnail_fallback: bool,
    retention: RetentionPolicy,
    touches: retention::Touches,
    /// Per-user quotas: what uploads in flight hold against them.
    quotas: quota::Quotas,
    /// Uploads, and upload bytes, each user may start per minute.
    upload_rate: rate::RateLimit,
    upload_bytes_rate: rate::RateLimit,
}

impl MediaService {
    pub fn new(config: &Config, store: Store) -> Self {
        let budget = DiskBudget::new(store.data_dir().to_path_buf(), config.store.min_free_space);
        Self {
            server_name: config.server_name.clone(),
            max_upload: config.media.max_upload_size.as_u64(),
            unused_expiry: Duration::from_secs(config.media.unused_expiry_secs),
            max_pending: config.media.max_pending_uploads,
            pending_gate: Arc::new(PendingGate::default()),
            max_timeout: Duration::from_millis(config.media.max_timeout_ms),
            waiters: waiters::Waiters::default(),
            uploading: Mutex::new(HashSet::new()),
            cache: Arc::new(MediaCache::new(config.store.memory_cache.as_u64())),
            thumbnails: Thumbnailer::new(&config.thumbnails, store.clone()),
            thumbnail_config: config.thumbnails.clone(),
            remote: remote::Remote::new(config, budget.clone()),
            remote_thumbnail_fallback: config.media.remote_thumbnail_fallback,
            retention: retention::policy(&config.media),
            touches: retention::Touches::default(),
            quotas: quota::Quotas::new(&config.media),
            upload_rate: rate::RateLimit::new(config.media.user_upload_rate_per_minute),
            upload_bytes_rate: rate::RateLimit::new(
                config.media.user_upload_bytes_per_minute.as_u64(),
            ),
            budget,
            store,
        }
    }

    pub fn server_name(&self) -> &ServerName {
        &self.server_name
    }

    pub fn max_upload_size(&self) -> u64 {
        self.max_upload
    }

    pub fn store(&self) -> &Store {
        &self.store
    }

    pub fn is_local(&self, server_name: &ServerName) -> bool {
        *server_name == self.server_name
    }

    /// Whether `key` is stored media imported from a server that served it without
    /// authentication (uploaded there before the freeze): the deprecated endpoints keep
    /// serving it, as the spec asks of a server that freezes them
    /// (https://spec.matrix.org/v1.16/client-server-api/#content-repository).
    pub async fn served_unauthenticated(&self, key: &MediaKey) -> Result<bool> {
        let key = key.clone();
        Ok(self
            .store
            .blocking(move |s| match s.get_meta(&key)? {
                Some(MediaMeta {
                    state: MediaState::Complete(content),
                    ..
                }) => s.imported_unauthenticated(&key, &content.sha256),
                _ => Ok(false),
            })
            .await?)
    }

    /// The content of local media, waiting up to `timeout` for an async upload to arrive.
    pub async fn content(&self, key: &MediaKey, timeout: Option<Duration>) -> Result<Content> {
        if let Some(content) = self.cache.content(key) {
            return Ok(content);
        }
        let timeout = timeout
            .unwrap_or(Duration::from_secs(20))
            .min(self.max_timeout);
        let deadline = Instant::now() + timeout;
        // Registered before looking, so an upload finishing in between is not missed.
        let waiting = self.waiters.register(key);
        loop {
            let notified = waiting.notify().notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            let ticket = self.cache.ticket();
            let lookup = key.clone();
            match self
                .store
                .blocking(move |s| s.get_servable_meta(&lookup))
                .await?
            {
                None => return Err(Error::NotFound),
                Some(MediaMeta {
                    state: MediaState::Complete(content),
                    ..
                }) => {
                    self.cache.put_content(ticket, key.clone(), content.clone());
                    return Ok(content);
                }
                Some(MediaMeta {
                    state: MediaState::Pending { unused_expires_at },
                    ..
                }) => {
                    if unused_expires_at <= now_ms() {
                        return Err(Error::NotFound);
                    }
                    if Instant::now() >= deadline {
                        return Err(Error::NotYetUploaded);
                    }
                    if tokio::time::timeout_at(deadline, notified).await.is_ok() {
                        waiting.woken();
                    }
                }
            }
        }
    }

    pub async fn open(&self, content: &Content) -> Result<BlobReader> {
        if let Some(bytes) = self.cache.blob(&content.sha256) {
            return Ok(BlobReader::Inline(bytes));
        }
        let ticket = self.cache.ticket();
        let (sha256, len) = (content.sha256.clone(), content.len);
        // A small file blob is read whole in the same hop and cached like an inline one: a hot
        // photo then costs no blocking-pool hop at all, which is what keeps latency flat when
        // the server's core is contended (each hop waits for a turn of the scheduler).
        let reader = self
            .store
            .blocking(move |s| match s.open_blob(&sha256)? {
                BlobReader::Stream(file) if len <= SMALL_FILE_BLOB => Ok(BlobReader::Inline(
                    read_whole(file, len).map_err(StoreError::from)?,
                )),
                other => Ok::<_, Error>(other),
            })
            .await?;
        if let BlobReader::Inline(bytes) = &reader {
            self.cache.put_blob(ticket, &content.sha256, bytes.clone());
        }
        Ok(reader)
    }

    /// A thumbnail of local media, waiting for an async upload like a download does.
    pub async fn thumbnail(
        &self,
        key: &MediaKey,
        spec: ThumbSpec,
        timeout: Option<Duration>,
    ) -> Result<(Content, Served)> {
        let content = self.content(key, timeout).await?;
        let served = self.thumbnails.thumbnail(&content, spec).await?;
        Ok((content, served))
    }

    /// What a thumbnail request of local media would be answered with, from what is stored
    /// (`HEAD`): the original when small enough, or a thumbnail rendered before; never renders.
    pub async fn stored_thumbnail(
        &self,
        key: &MediaKey,
        spec: ThumbSpec,
        timeout: Option<Duration>,
    ) -> Result<Option<(Content, Served)>> {
        let content = self.content(key, timeout).await?;
        let served = self.thumbnails.stored(&content, spec).await?;
        Ok(served.map(|served| (content, served)))
    }

    /// Waits for async uploads that an upload ended, since start; and ids waited on now.
    pub fn upload_waiters(&self) -> (u64, usize) {
        (self.waiters.wakeups(), self.waiters.waited_ids())
    }

    /// Thumbnails rendered since start.
    pub fn thumbnails_generated(&self) -> u64 {
        self.thumbnails.generated()
    }

    /// The thumbnailer, for its counters.
    pub fn thumbnailer(&self) -> &Thumbnailer {
        &self.thumbnails
    }

    /// Deletes expired reservations; run periodically.
    pub async fn expire_pending(&self) -> Result<usize> {
        let now = now_ms();
        Ok(self.store.blocking(move |s| s.expire_pending(now)).await?)
    }
}
