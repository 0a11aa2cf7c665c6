//! The media service: the one place that decides what an upload, a reservation or a download
//! does. Handlers call it with validated input; it calls the store. It never sees HTTP.

pub mod cache;
pub mod inventory;
pub mod moderation;
pub mod quota;
pub mod rate;
pub mod remote;
pub mod retention;
mod waiters;

use std::{
    collections::HashSet,
    hash::{Hash as _, Hasher as _},
    sync::{Arc, Mutex},
    time::Duration,
};

use bytes::{Bytes, BytesMut};
use futures_util::{Stream, StreamExt as _};
use mxmedia_proto::ids::{MediaId, ServerName};
use tokio::time::Instant;

use self::cache::MediaCache;
use crate::{
    clock::now_ms,
    config::{Config, ThumbnailConfig},
    error::{Error, Result},
    model::{
        id::MediaKey,
        meta::{Content, MediaMeta, MediaState},
        thumb::ThumbSpec,
    },
    store::{
        BlobReader, Expect, Store, Upload, blob::CHUNK_SIZE, retention::RetentionPolicy,
        space::DiskBudget,
    },
    thumbnail::{Served, Thumbnailer},
};

/// What an upload request carries besides its bytes.
pub struct UploadInfo {
    pub content_type: Option<String>,
    pub filename: Option<String>,
    /// The declared `Content-Length`, checked against the limit before any byte is read.
    pub declared_len: Option<u64>,
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
}

impl MediaService {
    pub fn new(config: &Config, store: Store) -> Result<Self> {
        let budget = DiskBudget::new(store.data_dir().to_path_buf(), config.store.min_free_space);
        Ok(Self {
            server_name: config
                .server_name
                .parse()
                .map_err(|_| Error::InvalidParam("Invalid server name".into()))?,
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
            budget,
            store,
        })
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

    /// `POST /upload`: stores the body under a new id.
    pub async fn upload<S, E>(&self, user: &str, info: UploadInfo, body: S) -> Result<MediaKey>
    where
        S: Stream<Item = Result<Bytes, E>> + Unpin,
        E: std::fmt::Display,
    {
        let key = MediaKey {
            server_name: self.server_name.clone(),
            media_id: MediaId::generate(),
        };
        self.receive(user, &key, info, body, Expect::Absent).await?;
        Ok(key)
    }

    /// `POST /create`: reserves an id for a later `PUT`, at most `max_pending_uploads` per user
    /// at once. Counting and inserting happen under the user's gate, so a burst of parallel
    /// creates cannot all see the same count.
    pub async fn create(&self, user: &str) -> Result<(MediaKey, u64)> {
        let now = now_ms();
        let key = MediaKey {
            server_name: self.server_name.clone(),
            media_id: MediaId::generate(),
        };
        let expires_at = now + u64::try_from(self.unused_expiry.as_millis()).unwrap_or(u64::MAX);
        let meta = MediaMeta {
            uploader: user.to_owned(),
            created_at: now,
            state: MediaState::Pending {
                unused_expires_at: expires_at,
            },
        };
        let (owner, stored_key, max, gate) = (
            user.to_owned(),
            key.clone(),
            self.max_pending,
            Arc::clone(&self.pending_gate),
        );
        let full = self
            .store
            .blocking(move |s| {
                let _gate = gate.lock(&owner)?;
                let expiries = s.pending_expiries(&owner, now)?;
                if expiries.len() >= max {
                    return Ok(Some(expiries.into_iter().min().unwrap_or(now)));
                }
                s.insert_pending(&stored_key, &meta)?;
                Ok(None)
            })
            .await?;
        if let Some(oldest) = full {
            return Err(Error::RateLimited {
                retry_after: Duration::from_millis(oldest.saturating_sub(now)),
            });
        }
        Ok((key, expires_at))
    }

    /// `PUT /upload/{serverName}/{mediaId}`: fills an id reserved by `create`.
    pub async fn put<S, E>(
        &self,
        user: &str,
        key: &MediaKey,
        info: UploadInfo,
        body: S,
    ) -> Result<()>
    where
        S: Stream<Item = Result<Bytes, E>> + Unpin,
        E: std::fmt::Display,
    {
        if !self.is_local(&key.server_name) {
            return Err(Error::NotFound);
        }
        // Answer the common mistakes before reading a byte of the body. Ownership comes first:
        // whether someone else's id is pending, filled or expired is none of the caller's business.
        let lookup = key.clone();
        let now = now_ms();
        match self.store.blocking(move |s| s.get_meta(&lookup)).await? {
            None => return Err(Error::NotFound),
            Some(meta) if meta.uploader != user => {
                return Err(Error::Forbidden(
                    "Only the user who created this media id may upload to it".into(),
                ));
            }
            Some(MediaMeta {
                state: MediaState::Complete(_),
                ..
            }) => return Err(Error::CannotOverwrite),
            Some(MediaMeta {
                state: MediaState::Pending { unused_expires_at },
                ..
            }) if unused_expires_at <= now => {
                return Err(Error::NotFound);
            }
            Some(_) => {}
        }
        let _claim = UploadClaim::take(&self.uploading, key)?;
        self.receive(
            user,
            key,
            info,
            body,
            Expect::PendingFor { user, now_ms: now },
        )
        .await?;
        self.waiters.wake(key);
        Ok(())
    }

    async fn receive<S, E>(
        &self,
        user: &str,
        key: &MediaKey,
        info: UploadInfo,
        mut body: S,
        expect: Expect<'_>,
    ) -> Result<()>
    where
        S: Stream<Item = Result<Bytes, E>> + Unpin,
        E: std::fmt::Display,
    {
        let too_large = || {
            Error::TooLarge(format!(
                "Cannot upload files larger than {} bytes",
                self.max_upload
            ))
        };
        if info.declared_len.is_some_and(|len| len > self.max_upload) {
            return Err(too_large());
        }
        // A declared length that cannot fit is refused before the body is read; what is actually
        // received is reserved step by step below, declared or not.
        self.budget.check(info.declared_len.unwrap_or(0)).await?;
        let mut reservation = self.budget.reservation();
        let mut staging = self.store.blocking(Store::stage).await?;
        let mut buf = BytesMut::with_capacity(CHUNK_SIZE);
        let mut received: u64 = 0;
        loop {
            let chunk = match body.next().await {
                Some(Ok(chunk)) => Some(chunk),
                Some(Err(e)) => {
                    tracing::debug!(error = %e, "upload body interrupted");
                    return Err(Error::InvalidParam(
                        "The upload body could not be read to the end".into(),
                    ));
                }
                None => None,
            };
            if let Some(chunk) = &chunk {
                received += u64::try_from(chunk.len()).unwrap_or(u64::MAX);
                if received > self.max_upload {
                    return Err(too_large());
                }
                reservation.cover(received).await?;
                buf.extend_from_slice(chunk);
            }
            // Write in large pieces, off the async worker; the staging file travels with the job.
            if buf.len() >= CHUNK_SIZE || (chunk.is_none() && !buf.is_empty()) {
                let piece = buf.split().freeze();
                let len = u64::try_from(piece.len()).unwrap_or(u64::MAX);
                staging =
                    tokio::task::spawn_blocking(move || staging.write(&piece).map(|()| staging))
                        .await
                        .map_err(Error::internal)??;
                reservation.wrote(len);
            }
            if chunk.is_none() {
                break;
            }
        }
        let content_type = info
            .content_type
            .filter(|t| !t.is_empty())
            .unwrap_or_else(|| "application/octet-stream".to_owned());
        let filename = info.filename;
        let (key, user) = (key.clone(), user.to_owned());
        let created_at = now_ms();
        let expect = match expect {
            Expect::Absent => OwnedExpect::Absent,
            Expect::PendingFor { now_ms, .. } => OwnedExpect::Pending(now_ms),
        };
        let bytes = received;
        // The bytes are on disk now; committing moves them, it does not add to them.
        reservation.keep();
        self.store
            .blocking(move |s| {
                let staged = staging.finish()?;
                let expect = match expect {
                    OwnedExpect::Absent => Expect::Absent,
                    OwnedExpect::Pending(now_ms) => Expect::PendingFor {
                        user: &user,
                        now_ms,
                    },
                };
                let upload = Upload {
                    content_type,
                    filename,
                    uploader: &user,
                    created_at,
                    expect,
                };
                s.commit_upload(&key, staged, upload)
            })
            .await?;
        metrics::counter!("mxmedia_uploads_total").increment(1);
        metrics::counter!("mxmedia_upload_bytes_total").increment(bytes);
        Ok(())
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
        let sha256 = content.sha256.clone();
        let reader = self.store.blocking(move |s| s.open_blob(&sha256)).await?;
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
        self.store.blocking(move |s| s.expire_pending(now)).await
    }
}

enum OwnedExpect {
    Absent,
    Pending(u64),
}

/// Marks an id as being uploaded to; released on drop, whatever happens to the request.
struct UploadClaim<'a> {
    set: &'a Mutex<HashSet<MediaKey>>,
    key: MediaKey,
}

impl<'a> UploadClaim<'a> {
    fn take(set: &'a Mutex<HashSet<MediaKey>>, key: &MediaKey) -> Result<Self> {
        let mut guard = set
            .lock()
            .map_err(|_| Error::internal(anyhow::anyhow!("upload set poisoned")))?;
        if !guard.insert(key.clone()) {
            return Err(Error::CannotOverwrite);
        }
        Ok(Self {
            set,
            key: key.clone(),
        })
    }
}

impl Drop for UploadClaim<'_> {
    fn drop(&mut self) {
        if let Ok(mut guard) = self.set.lock() {
            guard.remove(&self.key);
        }
    }
}

/// Per-user locks for `/create`, striped so that memory stays fixed however many users there
/// are: users sharing a stripe only wait for each other's few-millisecond insert.
struct PendingGate {
    stripes: [Mutex<()>; 64],
}

impl Default for PendingGate {
    fn default() -> Self {
        Self {
            stripes: std::array::from_fn(|_| Mutex::new(())),
        }
    }
}

impl PendingGate {
    fn lock(&self, user: &str) -> Result<std::sync::MutexGuard<'_, ()>> {
        let mut hasher = std::hash::DefaultHasher::new();
        user.hash(&mut hasher);
        let stripe = usize::try_from(hasher.finish() % 64).unwrap_or(0);
        self.stripes
            .get(stripe)
            .ok_or_else(|| Error::internal(anyhow::anyhow!("no pending stripe")))?
            .lock()
            .map_err(|_| Error::internal(anyhow::anyhow!("pending gate poisoned")))
    }
}
