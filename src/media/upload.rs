//! Uploads: `POST /upload` (a new id), `POST /create` (a reservation, bounded per user) and
//! `PUT /upload/{serverName}/{mediaId}` (filling one), all received through the store's spool,
//! or, with blobs in S3, streamed straight into the bucket.
//! See <https://spec.matrix.org/v1.16/client-server-api/#content-repository>.

use std::{
    collections::HashSet,
    hash::{Hash as _, Hasher as _},
    sync::{Arc, Mutex},
    time::Duration,
};

use bytes::Bytes;
use futures_util::{Stream, StreamExt as _};
use mxmedia_proto::ids::MediaId;

use super::MediaService;
use crate::{
    clock::now_ms,
    error::{Error, Result},
    model::{
        id::MediaKey,
        meta::{MediaMeta, MediaState},
    },
    store::{
        Expect, Store, StoreError, Upload,
        blob::Staged,
        s3::{Streamed, Streaming},
        spool::{Spool, SpoolError},
    },
};

/// What an upload request carries besides its bytes.
pub struct UploadInfo {
    pub content_type: Option<String>,
    pub filename: Option<String>,
    /// The declared `Content-Length`, checked against the limit before any byte is read.
    pub declared_len: Option<u64>,
}

impl MediaService {
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
            .blocking(move |s| -> Result<_> {
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

    /// Streams `body` into a staging file through the spool (bounded memory, the size limit
    /// and the free-space floor checked on every chunk), or into the bucket, then commits it
    /// under `key`.
    async fn receive<S, E>(
        &self,
        user: &str,
        key: &MediaKey,
        info: UploadInfo,
        body: S,
        expect: Expect<'_>,
    ) -> Result<()>
    where
        S: Stream<Item = Result<Bytes, E>> + Unpin,
        E: std::fmt::Display,
    {
        if info.declared_len.is_some_and(|len| len > self.max_upload) {
            return Err(self.too_large());
        }
        // Rates, then the quota, before a byte of the body is read; the quota again as bytes
        // arrive, so a body without a declared length cannot go past it either.
        let declared = info.declared_len.unwrap_or(0);
        self.upload_rate.take(user, 1)?;
        self.upload_bytes_rate.take(user, declared)?;
        let mut quota = self
            .quotas
            .begin(&self.store, user, info.declared_len)
            .await?;
        let admit = |received| match &mut quota {
            Some(quota) => quota.cover(received),
            None => Ok(()),
        };
        let received = match self.store.stream_upload() {
            Some(streaming) => Received::Streamed(self.stream_body(streaming, body, admit).await?),
            None => Received::Staged(self.spool_body(body, info.declared_len, admit).await?),
        };
        let bytes = match &received {
            Received::Staged(staged) => staged.len,
            Received::Streamed(streamed) => streamed.len,
        };
        // What came beyond the declared length was not charged yet: later uploads pay for it.
        self.upload_bytes_rate
            .spend(user, bytes.saturating_sub(declared));
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
        self.store
            .blocking(move |s| {
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
                match received {
                    Received::Staged(staged) => s.commit_upload(&key, staged, upload),
                    Received::Streamed(streamed) => {
                        s.commit_streamed_upload(&key, streamed, upload)
                    }
                }
            })
            .await?;
        if let Some(quota) = &mut quota {
            quota.committed();
        }
        metrics::counter!("mxmedia_uploads_total").increment(1);
        metrics::counter!("mxmedia_upload_bytes_total").increment(bytes);
        Ok(())
    }
}

impl MediaService {
    pub(super) fn too_large(&self) -> Error {
        Error::TooLarge(format!(
            "Cannot upload files larger than {} bytes",
            self.max_upload
        ))
    }

    /// Streams `body` into a staging file through the spool: bounded memory, `max_upload_size`
    /// and the free-space floor checked on every chunk, `admit` asked with the bytes there
    /// will be before each chunk is written. A declared length that cannot fit on disk is
    /// refused before the body is read. Fsynced when it returns, its disk reservation kept:
    /// committing moves the bytes, it does not add to them.
    pub(super) async fn spool_body<S, E>(
        &self,
        mut body: S,
        declared_len: Option<u64>,
        mut admit: impl FnMut(u64) -> Result<()>,
    ) -> Result<Staged>
    where
        S: Stream<Item = Result<Bytes, E>> + Unpin,
        E: std::fmt::Display,
    {
        let spool_error = |e: SpoolError| match e {
            SpoolError::TooLarge(_) => self.too_large(),
            SpoolError::NoSpace => Error::InsufficientStorage,
            SpoolError::Io(e) => Error::from(e),
        };
        self.budget.check(declared_len.unwrap_or(0)).await?;
        let staging = self.store.blocking(Store::stage).await?;
        let mut spool = Spool::new(staging, self.max_upload, self.budget.reservation());
        while let Some(chunk) = body.next().await {
            let chunk = chunk.map_err(|e| {
                tracing::debug!(error = %e, "upload body interrupted");
                Error::InvalidParam("The upload body could not be read to the end".into())
            })?;
            let len = u64::try_from(chunk.len()).unwrap_or(u64::MAX);
            admit(spool.len().saturating_add(len))?;
            spool.write(&chunk).await.map_err(spool_error)?;
        }
        Ok(spool.finish().await?)
    }

    /// Streams `body` into the bucket as it arrives (`Store::stream_upload`): no local disk is
    /// used, so the free-space floor does not count its length (only a disk already below the
    /// floor refuses it); `max_upload_size` and `admit` are checked
    /// before each chunk is taken in, as for a spooled body. Dropped unfinished (a refusal, an
    /// error, a client gone), the upload is aborted in the bucket.
    async fn stream_body<S, E>(
        &self,
        mut upload: Streaming,
        mut body: S,
        mut admit: impl FnMut(u64) -> Result<()>,
    ) -> Result<Streamed>
    where
        S: Stream<Item = Result<Bytes, E>> + Unpin,
        E: std::fmt::Display,
    {
        let s3_error = |e: std::io::Error| Error::from(StoreError::from(e));
        // The bytes do not touch the disk, but the records do: a disk already below the floor
        // refuses the upload, whatever its length.
        self.budget.check(0).await?;
        while let Some(chunk) = body.next().await {
            let chunk = chunk.map_err(|e| {
                tracing::debug!(error = %e, "upload body interrupted");
                Error::InvalidParam("The upload body could not be read to the end".into())
            })?;
            let received = upload
                .len()
                .saturating_add(u64::try_from(chunk.len()).unwrap_or(u64::MAX));
            if received > self.max_upload {
                return Err(self.too_large());
            }
            admit(received)?;
            // A failed write drops `upload`, which aborts it at once; the http layer drains
            // what is left of the body before answering, as for any refused upload.
            upload.write(&chunk).await.map_err(s3_error)?;
        }
        upload.finish().await.map_err(s3_error)
    }
}

/// An upload's body, received: staged on disk, or already in the bucket (S3).
enum Received {
    Staged(Staged),
    Streamed(Streamed),
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
            .map_err(|_| Error::internal("upload set poisoned"))?;
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
pub(super) struct PendingGate {
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
            .ok_or_else(|| Error::internal("no pending stripe"))?
            .lock()
            .map_err(|_| Error::internal("pending gate poisoned"))
    }
}
