//! Client uploads received straight into the bucket, as their body arrives: bytes are hashed
//! and gathered in memory up to one part (`PART_SIZE`, in one of the process-wide `BUFFERS`, so
//! memory stays flat however many uploads run; an upload waiting for a buffer reads no more of
//! its body), and no local disk is used.
//!
//! A blob that ends within `inline_blob_max` goes to sled as before; one that ends within one
//! part is put once to its final key (its hash is known by then); a larger one is sent as a
//! multipart upload to a temporary key, `<prefix>uploads/<random>` (not a blob key, so the
//! hash-keyed sweep never takes it for one), then copied server-side to its final key (unless
//! that blob is already there: dedupe) and the temporary object removed.
//!
//! Every multipart upload is entered in sled's `tempkey_intent` before its first part and
//! leaves it once completed or aborted: a failed or cut upload is aborted at once (retried
//! in the background while S3 is down), and one left by a crashed process is aborted by the
//! start-up sweep (`sweep_uploads`), so no unfinished upload keeps its parts in the bucket.

use std::{
    collections::VecDeque,
    io,
    sync::Arc,
    time::{Duration, SystemTime, UNIX_EPOCH},
};

use bytes::{Bytes, BytesMut};
use futures_util::StreamExt as _;
use object_store::{
    MultipartId, ObjectStore as _, ObjectStoreExt as _, PutPayload, multipart::MultipartStore as _,
    multipart::PartId, path::Path,
};
use serde::{Deserialize, Serialize};
use sha2::{Digest as _, Sha256};
use tokio::sync::oneshot;

use super::{
    S3Blobs, join, measured, presign,
    put::{Buffer, PART_SIZE, PARTS_IN_FLIGHT},
    spawn_async,
};

/// Where temporary objects of multipart uploads live, under the prefix.
const UPLOADS: &str = "uploads/";

/// Waits between retries of a failed clean-up (S3 down): about ten minutes in all, then the
/// next start-up sweep takes over.
const CLEANUP_RETRIES: [u64; 10] = [1, 2, 4, 8, 15, 30, 60, 120, 180, 240];

/// A multipart upload in flight, as `tempkey_intent` records it (keyed by its temporary key).
#[derive(Debug, Serialize, Deserialize)]
struct Intent {
    multipart_id: String,
    /// Milliseconds since the epoch.
    started_at: u64,
}

/// An upload being received into the bucket.
pub struct Streaming {
    blobs: S3Blobs,
    intents: sled::Tree,
    inline_max: u64,
    hasher: Sha256,
    len: u64,
    /// The part being filled, at most `PART_SIZE`.
    part: BytesMut,
    /// The buffer `part` is counted against, taken with its first byte.
    buffer: Option<Buffer>,
    multipart: Option<Multipart>,
}

/// A fully received upload, its hash known, waiting to be placed under its final key.
pub struct Streamed {
    pub sha256: String,
    pub len: u64,
    pub(crate) body: Received,
}

/// Where a received upload's bytes are.
pub(crate) enum Received {
    /// Small enough for sled: the bytes.
    Inline(Vec<u8>),
    /// Within one part: in memory, put once when placed.
    Single {
        bytes: Bytes,
        _buffer: Option<Buffer>,
    },
    /// Sent as parts of a multipart upload to a temporary key.
    Multipart(Multipart),
}

/// A multipart upload to a temporary key. Dropped before it is placed, it is aborted and its
/// temporary object removed, in the background.
pub(crate) struct Multipart {
    blobs: S3Blobs,
    intents: sled::Tree,
    temp: Path,
    id: MultipartId,
    in_flight: VecDeque<oneshot::Receiver<io::Result<PartId>>>,
    parts: Vec<PartId>,
    /// Set once placed: nothing is left to clean up.
    placed: bool,
}

impl S3Blobs {
    /// Starts receiving an upload; blobs up to `inline_max` bytes are handed back in memory.
    pub(crate) fn stream(&self, intents: sled::Tree, inline_max: u64) -> Streaming {
        Streaming {
            blobs: self.clone(),
            intents,
            inline_max,
            hasher: Sha256::new(),
            len: 0,
            part: BytesMut::new(),
            buffer: None,
            multipart: None,
        }
    }

    /// The start-up sweep of uploads: aborts those recorded in `intents` (left by a process
    /// that stopped mid-upload) and removes their temporary objects, then removes any
    /// temporary object older than the sweep's grace period (left by a server sharing the
    /// prefix, or by a crash between creating an upload and recording it). Returns how many
    /// uploads and objects went.
    pub(crate) fn sweep_uploads(&self, intents: &sled::Tree) -> io::Result<usize> {
        let mut swept = 0;
        for entry in intents.iter() {
            let (temp, intent) = entry.map_err(io::Error::other)?;
            let Ok(intent) = serde_json::from_slice::<Intent>(&intent) else {
                intents.remove(&temp).map_err(io::Error::other)?;
                continue;
            };
            let temp = Path::from(String::from_utf8_lossy(&temp).into_owned());
            let id = intent.multipart_id;
            let blobs = self.clone();
            let key = temp.clone();
            self.run(async move { blobs.discard(&key, &id).await })??;
            intents
                .remove(temp.as_ref().as_bytes())
                .map_err(io::Error::other)?;
            swept += 1;
        }
        let grace = self.shared.sweep_grace;
        let store = self.client();
        let prefix = Path::from(format!("{}{}", self.shared.prefix, UPLOADS));
        let read_timeout = self.shared.read_timeout;
        let old: Vec<Path> = self.run(async move {
            let mut listing = store.list(Some(&prefix));
            let mut old = Vec::new();
            let now = SystemTime::now();
            loop {
                let Ok(next) = tokio::time::timeout(read_timeout, listing.next()).await else {
                    return Err(super::backend_error("list", "timed out"));
                };
                let Some(meta) = next else { break };
                let meta = meta.map_err(|e| super::from_object_store("list", e))?;
                let modified = SystemTime::from(meta.last_modified);
                if now.duration_since(modified).unwrap_or_default() >= grace {
                    old.push(meta.location);
                }
            }
            Ok(old)
        })??;
        for temp in old {
            self.delete_object(temp)?;
            swept += 1;
        }
        Ok(swept)
    }

    fn delete_object(&self, key: Path) -> io::Result<()> {
        let store = self.client();
        match self.request("delete", self.shared.op_deadline, async move {
            store.delete(&key).await
        }) {
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
            other => other,
        }
    }

    /// Aborts the multipart upload `id` of `temp` and removes its object, if either exists.
    async fn discard(&self, temp: &Path, id: &MultipartId) -> io::Result<()> {
        let deadline = self.shared.op_deadline;
        let store = self.client();
        match measured("abort_multipart", deadline, store.abort_multipart(temp, id)).await {
            Err(e) if e.kind() != io::ErrorKind::NotFound => return Err(e),
            _ => {}
        }
        match measured("delete", deadline, store.delete(temp)).await {
            Err(e) if e.kind() != io::ErrorKind::NotFound => Err(e),
            _ => Ok(()),
        }
    }
}

impl Streaming {
    /// Bytes received so far.
    pub fn len(&self) -> u64 {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Takes in the next bytes of the body, sending each part as the next one begins.
    pub async fn write(&mut self, chunk: &[u8]) -> io::Result<()> {
        self.hasher.update(chunk);
        self.len = self
            .len
            .saturating_add(u64::try_from(chunk.len()).unwrap_or(u64::MAX));
        // A part that failed fails the upload now, not once the body has ended.
        if let Some(multipart) = &mut self.multipart {
            multipart.collect_sent()?;
        }
        let mut rest = chunk;
        while !rest.is_empty() {
            // A full part goes only once more bytes come: an upload ending here is one PUT.
            if self.part.len() >= PART_SIZE {
                self.send_part().await?;
            }
            if self.buffer.is_none() {
                self.buffer = Some(Buffer::take(Arc::clone(&self.blobs.shared.buffers)).await?);
            }
            let room = PART_SIZE.saturating_sub(self.part.len()).min(rest.len());
            let (now, later) = rest.split_at_checked(room).unwrap_or((rest, &[]));
            self.part.extend_from_slice(now);
            rest = later;
        }
        Ok(())
    }

    /// The body has ended: sends the last part and waits for every part to be stored.
    pub async fn finish(mut self) -> io::Result<Streamed> {
        let sha256 = hex::encode(std::mem::take(&mut self.hasher).finalize());
        let len = self.len;
        let body = match self.multipart.take() {
            None if len <= self.inline_max => {
                Received::Inline(std::mem::take(&mut self.part).to_vec())
            }
            None => Received::Single {
                bytes: std::mem::take(&mut self.part).freeze(),
                _buffer: self.buffer.take(),
            },
            Some(multipart) => {
                self.multipart = Some(multipart);
                self.send_part().await?;
                let mut multipart = self
                    .multipart
                    .take()
                    .ok_or_else(|| io::Error::other("multipart upload lost"))?;
                while let Some(part) = multipart.in_flight.pop_front() {
                    let part = join(part).await??;
                    multipart.parts.push(part);
                }
                Received::Multipart(multipart)
            }
        };
        Ok(Streamed { sha256, len, body })
    }

    async fn send_part(&mut self) -> io::Result<()> {
        let bytes = std::mem::take(&mut self.part).freeze();
        let buffer = self.buffer.take();
        if self.multipart.is_none() {
            self.multipart = Some(Multipart::begin(&self.blobs, &self.intents).await?);
        }
        let multipart = self
            .multipart
            .as_mut()
            .ok_or_else(|| io::Error::other("multipart upload lost"))?;
        multipart.send(bytes, buffer).await
    }
}

impl Multipart {
    /// Creates the multipart upload and records it before any part is sent.
    async fn begin(blobs: &S3Blobs, intents: &sled::Tree) -> io::Result<Self> {
        let temp = Path::from(format!(
            "{}{UPLOADS}{}",
            blobs.shared.prefix,
            hex::encode(rand::random::<[u8; 16]>())
        ));
        let store = blobs.client();
        let key = temp.clone();
        let deadline = blobs.shared.op_deadline;
        let id = join(spawn_async(&blobs.shared, async move {
            measured(
                "create_multipart",
                deadline,
                store.create_multipart_opts(&key, presign::object_attributes().into()),
            )
            .await
        })?)
        .await??;
        let multipart = Self {
            blobs: blobs.clone(),
            intents: intents.clone(),
            temp,
            id,
            in_flight: VecDeque::new(),
            parts: Vec::new(),
            placed: false,
        };
        let intent = serde_json::to_vec(&Intent {
            multipart_id: multipart.id.clone(),
            started_at: now_ms(),
        })
        .map_err(io::Error::other)?;
        let (tree, key) = (intents.clone(), multipart.temp.as_ref().as_bytes().to_vec());
        // Flushed: a process killed from here on leaves the intent for the start-up sweep.
        tokio::task::spawn_blocking(move || {
            tree.insert(key, intent)?;
            tree.flush().map(drop)
        })
        .await
        .map_err(io::Error::other)?
        .map_err(io::Error::other)?;
        Ok(multipart)
    }

    /// Takes in the parts sent so far, without waiting; the first failure is returned.
    fn collect_sent(&mut self) -> io::Result<()> {
        while let Some(part) = self.in_flight.front_mut() {
            let sent = match part.try_recv() {
                Ok(sent) => sent?,
                Err(oneshot::error::TryRecvError::Empty) => return Ok(()),
                Err(oneshot::error::TryRecvError::Closed) => {
                    return Err(io::Error::other(super::BackendError(
                        "an S3 request was lost".into(),
                    )));
                }
            };
            self.in_flight.pop_front();
            self.parts.push(sent);
        }
        Ok(())
    }

    /// Sends one part, after waiting for the oldest while `PARTS_IN_FLIGHT` are in flight.
    async fn send(&mut self, bytes: Bytes, buffer: Option<Buffer>) -> io::Result<()> {
        while self.in_flight.len() >= PARTS_IN_FLIGHT {
            let Some(part) = self.in_flight.pop_front() else {
                break;
            };
            let part = join(part).await??;
            self.parts.push(part);
        }
        let index = self.parts.len().saturating_add(self.in_flight.len());
        let store = self.blobs.client();
        let (temp, id) = (self.temp.clone(), self.id.clone());
        let deadline = self.blobs.part_deadline(bytes.len());
        let part = spawn_async(&self.blobs.shared, async move {
            let sent = measured(
                "put_part",
                deadline,
                store.put_part(&temp, &id, index, PutPayload::from(bytes)),
            )
            .await;
            drop(buffer);
            sent
        })?;
        self.in_flight.push_back(part);
        Ok(())
    }

    /// Completes the upload, copies its object to `target` unless a blob is there already,
    /// then removes the temporary object and the intent. Blocking.
    fn place(mut self, target: Path, len: u64) -> io::Result<()> {
        let blobs = self.blobs.clone();
        let store = blobs.client();
        let (temp, id, parts) = (
            self.temp.clone(),
            self.id.clone(),
            std::mem::take(&mut self.parts),
        );
        let deadline = blobs.shared.op_deadline;
        blobs.run(async move {
            measured(
                "complete_multipart",
                deadline,
                store.complete_multipart(&temp, &id, parts),
            )
            .await?;
            // Identical bytes under the final key already: nothing to copy (the caller pins
            // the hash first, so that blob is not removed meanwhile).
            match measured("head", deadline, store.head(&target)).await {
                Ok(_) => {}
                Err(e) if e.kind() == io::ErrorKind::NotFound => {
                    // Copying within the bucket is one request however large the object, but
                    // takes S3 about as long as writing it: a second per MiB on top.
                    let copying = deadline.saturating_add(Duration::from_secs(len / (1024 * 1024)));
                    measured("copy", copying, store.copy(&temp, &target)).await?;
                }
                Err(e) => return Err(e),
            }
            match measured("delete", deadline, store.delete(&temp)).await {
                Err(e) if e.kind() != io::ErrorKind::NotFound => Err(e),
                _ => Ok(()),
            }
        })??;
        self.placed = true;
        self.intents
            .remove(self.temp.as_ref().as_bytes())
            .map_err(io::Error::other)?;
        Ok(())
    }
}

impl Drop for Multipart {
    fn drop(&mut self) {
        if self.placed {
            return;
        }
        let blobs = self.blobs.clone();
        let intents = self.intents.clone();
        let (temp, id) = (self.temp.clone(), self.id.clone());
        let in_flight = std::mem::take(&mut self.in_flight);
        let cleanup = async move {
            // A part still being sent would otherwise land after the abort.
            for part in in_flight {
                let _ = part.await;
            }
            for wait in std::iter::once(0).chain(CLEANUP_RETRIES) {
                tokio::time::sleep(Duration::from_secs(wait)).await;
                match blobs.discard(&temp, &id).await {
                    Ok(()) => {
                        let key = temp.as_ref().as_bytes().to_vec();
                        let _ = tokio::task::spawn_blocking(move || intents.remove(key)).await;
                        return;
                    }
                    Err(e) => {
                        tracing::debug!(error = %e, key = %temp, "aborting an S3 upload failed");
                    }
                }
            }
            tracing::warn!(
                key = %temp,
                "an unfinished S3 upload could not be aborted; the next start-up aborts it"
            );
        };
        if let Err(e) = super::spawn_on(&self.blobs.shared, cleanup) {
            tracing::warn!(error = %e, "an unfinished S3 upload is left to the start-up sweep");
        }
    }
}

impl Received {
    /// Makes the bytes durable under the key of `sha256`. Blocking. Inline bytes are not for
    /// the bucket: the caller keeps them in sled.
    pub(crate) fn place(self, blobs: &S3Blobs, sha256: &str, len: u64) -> io::Result<()> {
        let target = blobs.key(sha256);
        match self {
            Self::Inline(_) => Ok(()),
            Self::Single { bytes, _buffer } => {
                let store = blobs.client();
                let deadline = blobs.part_deadline(bytes.len());
                blobs.request("put", deadline, async move {
                    store
                        .put_opts(
                            &target,
                            PutPayload::from(bytes),
                            presign::object_attributes().into(),
                        )
                        .await
                })?;
                Ok(())
            }
            Self::Multipart(multipart) => multipart.place(target, len),
        }
    }
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}
