//! Inline blobs larger than the configured `store.inline_blob_max`, which a store written
//! with a larger limit (older versions kept up to 256 KiB in sled) still holds, are moved to
//! the blob backend at open: sled keeps every tree node holding a large value in memory, so
//! they would make memory grow with the database.
//!
//! Resumable: each blob is staged from its chunks, checked against its hash, made durable in
//! the backend, and only then switched to a file in one transaction that also drops its
//! chunks. A crash in between leaves the blob inline (the file, unreferenced, goes with the
//! start-up sweep) and the next open moves it again. The limit that held when the last pass
//! finished is kept in sled (`MOVED_ABOVE`), so later opens with the same or a larger limit
//! scan nothing.

use sled::{Transactional, transaction::ConflictableTransactionError};

use super::{
    Result, Store,
    blob::{Placement, Staged},
    decode, encode, keys, read_u64,
    refs::BlobRecord,
    tx_error,
};

/// Key in sled's default tree: no inline blob is larger than this many bytes.
const MOVED_ABOVE: &[u8] = b"inline_blobs_at_most";

impl Store {
    /// Moves every inline blob above `inline_max` to the backend unless no store written with
    /// a larger limit was opened since the last pass. Run at open, before any writer; returns
    /// how many moved.
    pub(super) fn spill_large_inline_blobs_once(&self) -> Result<usize> {
        let limit = self.inner.inline_max;
        let done = self.inner.db.get(MOVED_ABOVE)?.map(|raw| read_u64(&raw));
        if done.is_some_and(|at_most| at_most <= limit) {
            if done != Some(limit) {
                // Later writes may go up to the new, larger limit.
                self.inner.db.insert(MOVED_ABOVE, &limit.to_be_bytes())?;
            }
            return Ok(0);
        }
        let mut large = Vec::new();
        for item in &self.inner.blobs {
            let (sha256, raw) = item?;
            let record: BlobRecord = decode(&raw)?;
            if record.placement == Placement::Inline && record.len > limit {
                large.push(String::from_utf8_lossy(&sha256).into_owned());
            }
        }
        let total = large.len();
        if total > 0 {
            tracing::info!(
                count = total,
                inline_blob_max = limit,
                "moving inline blobs above store.inline_blob_max to the blob backend"
            );
        }
        let mut moved = 0;
        for sha256 in large {
            match self.spill(&sha256) {
                Ok(true) => moved += 1,
                Ok(false) => {}
                // The bytes stay served from sled; the next open tries again. Refusing to
                // start over memory use would be worse.
                Err(e) => {
                    tracing::warn!(
                        error = %e, moved, left = total - moved,
                        "moving inline blobs to the blob backend stopped; the next start resumes"
                    );
                    return Ok(moved);
                }
            }
        }
        self.inner.db.insert(MOVED_ABOVE, &limit.to_be_bytes())?;
        self.flush()?;
        if total > 0 {
            tracing::info!(moved, "inline blobs moved to the blob backend");
        }
        Ok(moved)
    }

    /// Moves one inline blob to the backend; false if it went meanwhile. Bytes that do not match
    /// their hash are left where they are, for the admin to see in the log.
    fn spill(&self, sha256: &str) -> Result<bool> {
        let mut staging = self.stage()?;
        for chunk in self.inner.chunks.scan_prefix(keys::chunk_prefix(sha256)) {
            staging.write(&chunk?.1)?;
        }
        let staged: Staged = staging.finish()?;
        if staged.sha256 != sha256 {
            tracing::warn!(
                sha256, read_back = %staged.sha256, len = staged.len,
                "an inline blob does not match its hash; left in sled"
            );
            return Ok(false);
        }
        let len = staged.len;
        let _writing = self.writing()?;
        let _guard = self.lock_blobs()?;
        self.inner.files.persist(staged)?;
        (&self.inner.blobs, &self.inner.chunks)
            .transaction(|(blobs, chunks)| {
                let Some(raw) = blobs.get(sha256)? else {
                    return Ok(false);
                };
                let mut record: BlobRecord =
                    decode(&raw).map_err(ConflictableTransactionError::Abort)?;
                // Moved or rewritten meanwhile; or a record whose length is wrong, whose chunks
                // the reader would refuse anyway: left as it is.
                if record.placement != Placement::Inline || record.len != len {
                    return Ok(false);
                }
                record.placement = Placement::File;
                blobs.insert(
                    sha256,
                    encode(&record).map_err(ConflictableTransactionError::Abort)?,
                )?;
                let count = len.div_ceil(u64::try_from(super::blob::CHUNK_SIZE).unwrap_or(1));
                for index in 0..u32::try_from(count).unwrap_or(u32::MAX) {
                    chunks.remove(keys::chunk(sha256, index))?;
                }
                Ok(true)
            })
            .map_err(tx_error)
    }
}
