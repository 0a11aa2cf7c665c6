//! The media service: the one place that decides what an upload, a reservation or a download
//! does. Handlers call it with validated input; it calls the store. It never sees HTTP.

pub mod cache;
pub mod id;
pub mod meta;
pub mod moderation;
pub mod remote;
pub mod retention;

use std::{
    collections::HashSet,
    sync::{Arc, Mutex},
    time::{Duration, SystemTime, UNIX_EPOCH},
};

use bytes::{Bytes, BytesMut};
use futures_util::{Stream, StreamExt as _};
use tokio::{sync::Notify, time::Instant};

use self::{
    cache::MediaCache,
    id::{MediaId, MediaKey, ServerName},
    meta::{Content, MediaMeta, MediaState},
};
use crate::{
    config::{Config, FreeSpace, ThumbnailConfig},
    error::{Error, Result},
    store::{BlobReader, Expect, Store, Upload, blob::CHUNK_SIZE, retention::RetentionPolicy},
    thumbnail::{Served, Thumbnailer, select::ThumbSpec},
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
    min_free: FreeSpace,
    unused_expiry: Duration,
    max_pending: usize,
    max_timeout: Duration,
    /// Wakes downloads waiting for async uploads; they re-check the store. Async uploads are
    /// rare, so waking every waiter is cheaper than tracking them per id.
    uploaded: Notify,
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
}

impl MediaService {
    pub fn new(config: &Config, store: Store) -> Result<Self> {
        Ok(Self {
            server_name: id::parse_server_name(&config.server_name)?,
            max_upload: config.media.max_upload_size.as_u64(),
            min_free: config.store.min_free_space,
            unused_expiry: Duration::from_secs(config.media.unused_expiry_secs),
            max_pending: config.media.max_pending_uploads,
            max_timeout: Duration::from_millis(config.media.max_timeout_ms),
            uploaded: Notify::new(),
            uploading: Mutex::new(HashSet::new()),
            cache: Arc::new(MediaCache::new(config.store.memory_cache.as_u64())),
            thumbnails: Thumbnailer::new(&config.thumbnails, store.clone()),
            thumbnail_config: config.thumbnails.clone(),
            remote: remote::Remote::new(config),
            remote_thumbnail_fallback: config.media.remote_thumbnail_fallback,
            retention: retention::policy(&config.media),
            touches: retention::Touches::default(),
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

    /// `POST /create`: reserves an id for a later `PUT`.
    pub async fn create(&self, user: &str) -> Result<(MediaKey, u64)> {
        let now = now_ms();
        let owner = user.to_owned();
        let mut expiries = self
            .store
            .blocking(move |s| s.pending_expiries(&owner, now))
            .await?;
        if expiries.len() >= self.max_pending {
            expiries.sort_unstable();
            let oldest = expiries.first().copied().unwrap_or(now);
            return Err(Error::RateLimited {
                retry_after: Duration::from_millis(oldest.saturating_sub(now)),
            });
        }
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
        let stored_key = key.clone();
        self.store
            .blocking(move |s| s.insert_pending(&stored_key, &meta))
            .await?;
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
        // Answer the common mistakes before reading a byte of the body.
        let lookup = key.clone();
        let now = now_ms();
        match self.store.blocking(move |s| s.get_meta(&lookup)).await? {
            None => return Err(Error::NotFound),
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
            Some(meta) if meta.uploader != user => {
                return Err(Error::Forbidden(
                    "Only the user who created this media id may upload to it".into(),
                ));
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
        self.uploaded.notify_waiters();
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
        self.check_free_space(info.declared_len.unwrap_or(0))
            .await?;
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
                buf.extend_from_slice(chunk);
            }
            // Write in large pieces, off the async worker; the staging file travels with the job.
            if buf.len() >= CHUNK_SIZE || (chunk.is_none() && !buf.is_empty()) {
                let piece = buf.split().freeze();
                staging =
                    tokio::task::spawn_blocking(move || staging.write(&piece).map(|()| staging))
                        .await
                        .map_err(Error::internal)??;
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

    async fn check_free_space(&self, incoming: u64) -> Result<()> {
        ensure_free_space(&self.store, self.min_free, incoming).await
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
        loop {
            // Register interest before looking, so an upload finishing in between is not missed.
            let notified = self.uploaded.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            let lookup = key.clone();
            match self.store.blocking(move |s| s.get_meta(&lookup)).await? {
                None => return Err(Error::NotFound),
                Some(MediaMeta {
                    state: MediaState::Complete(content),
                    ..
                }) => {
                    self.cache.put_content(key.clone(), content.clone());
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
                    let _ = tokio::time::timeout_at(deadline, notified).await;
                }
            }
        }
    }

    pub async fn open(&self, content: &Content) -> Result<BlobReader> {
        if let Some(bytes) = self.cache.blob(&content.sha256) {
            return Ok(BlobReader::Inline(bytes));
        }
        let sha256 = content.sha256.clone();
        let reader = self.store.blocking(move |s| s.open_blob(&sha256)).await?;
        if let BlobReader::Inline(bytes) = &reader {
            self.cache.put_blob(&content.sha256, bytes.clone());
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

pub fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
        .unwrap_or(0)
}

/// Refuses new bytes (uploads, remote fetches) while the data dir's file system has less than
/// `floor` free plus `incoming`: sled is known to corrupt itself on a full disk.
pub async fn ensure_free_space(store: &Store, floor: FreeSpace, incoming: u64) -> Result<()> {
    let dir = store.data_dir().to_path_buf();
    let (available, needed) = tokio::task::spawn_blocking(move || {
        let stat = nix::sys::statvfs::statvfs(&dir)
            .map_err(|e| Error::internal(std::io::Error::from(e)))?;
        let frsize = stat.fragment_size();
        let total = stat.blocks().saturating_mul(frsize);
        let available = stat.blocks_available().saturating_mul(frsize);
        Ok::<_, Error>((available, floor.bytes(total).saturating_add(incoming)))
    })
    .await
    .map_err(Error::internal)??;
    if available < needed {
        tracing::warn!(
            available,
            needed,
            "refusing new media: free disk space is below MXMEDIA_STORE__MIN_FREE_SPACE"
        );
        return Err(Error::InsufficientStorage);
    }
    Ok(())
}
