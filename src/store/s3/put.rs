//! Putting a staged blob into the bucket: one PUT for a blob of up to `PART_SIZE`, else a
//! multipart upload streamed from the staged file in parts, at most `PARTS_IN_FLIGHT` at once
//! per blob and `BUFFERS` in the whole process, so memory stays flat however many uploads
//! run. A blob is put only once the object is complete; a failed multipart upload is aborted.

use std::{
    collections::VecDeque,
    io::{self, Read as _},
    sync::Arc,
    time::Duration,
};

use bytes::Bytes;
use object_store::{ObjectStore as _, PutPayload, path::Path};

use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use super::{S3Blobs, Shared, measured, presign, run_on, spawn_on, wait};
use crate::store::blob::Staged;

/// Bytes per multipart part; S3's smallest allowed part (but the last) is 5 MiB. A blob of up
/// to this size is put in one request.
pub const PART_SIZE: usize = 8 * 1024 * 1024;
/// Parts uploaded at once per blob: memory per upload is at most this many parts (plus the
/// one a streamed upload is filling).
pub(super) const PARTS_IN_FLIGHT: usize = 2;
/// Part buffers in memory at once across all uploads (8 MiB each): more uploads wait.
pub(super) const BUFFERS: usize = 8;

impl S3Blobs {
    /// Makes `staged` durable under its hash in the bucket.
    pub(super) fn put(&self, staged: Staged) -> io::Result<()> {
        let key = self.key(&staged.sha256);
        let len = staged.len;
        let mut file = staged.file.reopen()?;
        if len <= u64::try_from(PART_SIZE).unwrap_or(u64::MAX) {
            let _buffer = Buffer::take_blocking(&self.shared)?;
            let mut buf = Vec::with_capacity(usize::try_from(len).unwrap_or(0));
            (&mut file).take(len).read_to_end(&mut buf)?;
            let store = self.client();
            let deadline = self.part_deadline(buf.len());
            self.request("put", deadline, async move {
                store
                    .put_opts(
                        &key,
                        PutPayload::from(Bytes::from(buf)),
                        presign::object_attributes().into(),
                    )
                    .await
            })?;
        } else {
            self.put_multipart(&key, file, len)?;
        }
        // The staged file goes with `staged`: the bytes are in the bucket.
        drop(staged);
        Ok(())
    }

    fn put_multipart(&self, key: &Path, mut file: std::fs::File, len: u64) -> io::Result<()> {
        let store = self.client();
        let target = key.clone();
        let mut upload = self.request("create_multipart", self.shared.op_deadline, async move {
            store
                .put_multipart_opts(&target, presign::object_attributes().into())
                .await
        })?;
        let result = self.send_parts(&mut *upload, &mut file, len);
        match result {
            Ok(()) => self
                .request("complete_multipart", self.shared.op_deadline, async move {
                    let done = upload.complete().await;
                    if done.is_err() {
                        let _ = upload.abort().await;
                    }
                    done
                })
                .map(drop),
            Err(e) => {
                // The parts sent so far would otherwise stay, invisible but billed.
                let _ = self.request("abort_multipart", self.shared.op_deadline, async move {
                    upload.abort().await
                });
                Err(e)
            }
        }
    }

    /// Reads the staged file in parts and sends them, `PARTS_IN_FLIGHT` at most at once.
    fn send_parts(
        &self,
        upload: &mut dyn object_store::MultipartUpload,
        file: &mut std::fs::File,
        len: u64,
    ) -> io::Result<()> {
        let mut in_flight = VecDeque::new();
        let mut sent = 0u64;
        while sent < len {
            if in_flight.len() >= PARTS_IN_FLIGHT
                && let Some(part) = in_flight.pop_front()
            {
                wait(part)??;
            }
            let want = usize::try_from(len - sent).map_or(PART_SIZE, |left| left.min(PART_SIZE));
            let buffer = Buffer::take_blocking(&self.shared)?;
            let mut buf = vec![0; want];
            file.read_exact(&mut buf)?;
            sent = sent.saturating_add(u64::try_from(want).unwrap_or(u64::MAX));
            let part = upload.put_part(PutPayload::from(Bytes::from(buf)));
            let deadline = self.part_deadline(want);
            let handle = spawn_on(&self.shared, async move {
                let sent = measured("put_part", deadline, part).await;
                drop(buffer);
                sent
            })?;
            in_flight.push_back(handle);
        }
        for part in in_flight {
            wait(part)??;
        }
        Ok(())
    }

    /// A part may take its request's bound plus a second per MiB (a 1 MiB/s floor).
    pub(super) fn part_deadline(&self, len: usize) -> Duration {
        let secs = u64::try_from(len / (1024 * 1024)).unwrap_or(u64::MAX);
        self.shared
            .op_deadline
            .saturating_add(Duration::from_secs(secs))
    }
}

/// One of the `BUFFERS` part buffers, given back when dropped.
pub(crate) struct Buffer {
    _permit: OwnedSemaphorePermit,
}

impl Buffer {
    /// Waits until a buffer is free, from a blocking thread.
    fn take_blocking(shared: &Shared) -> io::Result<Self> {
        let buffers = Arc::clone(&shared.buffers);
        run_on(shared, async move { Self::take(buffers).await })?
    }

    /// Waits until a buffer is free; a streamed upload waiting here reads no more of its body.
    pub(super) async fn take(buffers: Arc<Semaphore>) -> io::Result<Self> {
        buffers
            .acquire_owned()
            .await
            .map(|permit| Self { _permit: permit })
            .map_err(|_| io::Error::other("the S3 part buffers are closed"))
    }
}
