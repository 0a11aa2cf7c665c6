//! Which blob backend a store reads from, and what moving blobs between two backends needs
//! from the store: the file blobs its records point at, page by page, and a backend that reads
//! from a second one while a migration is unfinished (`Fallback`).
//!
//! `mxmedia migrate-store` copies the blobs in its own process; the store only lists them.
//! Listing goes by the records (`sha256_blob`), not by the backend's listing: a record is
//! written only once its bytes are durable, so every hash listed has its bytes somewhere.

use std::{io, ops::Bound};

use super::{
    BlobRecord, Result, Store, StoreError,
    blob::{BlobRead, BlobStore, FileBlobs, Placement, Staged},
    decode,
    s3::S3Blobs,
};
use crate::config::Config;

/// Where blob files live: the data dir (`fs`) or an S3-compatible bucket (`s3`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Backend {
    Fs,
    S3,
}

impl Backend {
    pub fn name(self) -> &'static str {
        match self {
            Self::Fs => "fs",
            Self::S3 => "s3",
        }
    }
}

impl std::fmt::Display for Backend {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// Opens `backend` as `config` describes it, apart from any store: the two ends of a
/// migration. `fs` is the data dir's blob directory (created if missing).
pub fn open_backend(config: &Config, backend: Backend) -> Result<Box<dyn BlobStore>> {
    match backend {
        Backend::Fs => Ok(Box::new(FileBlobs::open(config.data_dir.join("blobs"))?)),
        Backend::S3 => match &config.store.s3 {
            Some(s3) => Ok(Box::new(
                S3Blobs::new(s3).map_err(|e| StoreError::Backend(e.to_string()))?,
            )),
            None => Err(StoreError::Misuse("no [store.s3] bucket configured")),
        },
    }
}

/// One blob kept outside sled, as its record describes it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FileBlob {
    pub sha256: String,
    pub len: u64,
}

impl Store {
    /// The backend this store reads and writes blob files through.
    pub fn backend(&self) -> Backend {
        if self.inner.s3.is_some() {
            Backend::S3
        } else {
            Backend::Fs
        }
    }

    /// Up to `limit` blobs kept as files, in hash order, after `after` (from the start with
    /// `None`). A page at a time, so listing a million blobs costs no more memory than one page.
    pub fn file_blobs_after(&self, after: Option<&str>, limit: usize) -> Result<Vec<FileBlob>> {
        let start = match after {
            Some(after) => Bound::Excluded(after.as_bytes().to_vec()),
            None => Bound::Unbounded,
        };
        let mut out = Vec::new();
        for entry in self.inner.blobs.range((start, Bound::Unbounded)) {
            let (sha256, record) = entry?;
            let record: BlobRecord = decode(&record)?;
            if record.placement != Placement::File {
                continue;
            }
            out.push(FileBlob {
                sha256: String::from_utf8_lossy(&sha256).into_owned(),
                len: record.len,
            });
            if out.len() >= limit {
                break;
            }
        }
        Ok(out)
    }

    /// How many blobs are kept as files, and their bytes: the size of a migration.
    pub fn file_blob_totals(&self) -> Result<(u64, u64)> {
        let (mut count, mut bytes) = (0u64, 0u64);
        for entry in self.inner.blobs.iter() {
            let (_, record) = entry?;
            let record: BlobRecord = decode(&record)?;
            if record.placement == Placement::File {
                count += 1;
                bytes = bytes.saturating_add(record.len);
            }
        }
        Ok((count, bytes))
    }
}

/// A backend that reads a blob missing from `primary` from the data dir's blob directory.
///
/// After a switch from `fs` to `s3`, blobs uploaded between the last `migrate-store` run and
/// the restart are only on disk: the server keeps serving them from there, and the next run
/// copies them. Writes go to `primary` only; removals go to both, so a deleted blob does not
/// come back from the old copy.
pub(crate) struct Fallback {
    primary: Box<dyn BlobStore>,
    local: FileBlobs,
}

impl Fallback {
    pub(crate) fn new(primary: Box<dyn BlobStore>, local: FileBlobs) -> Self {
        Self { primary, local }
    }
}

impl Fallback {
    /// The primary's answer, or the local copy when the primary has no such blob.
    fn or_local(
        &self,
        sha256: &str,
        primary: io::Result<Box<dyn BlobRead>>,
    ) -> io::Result<Box<dyn BlobRead>> {
        match primary {
            Err(e) if e.kind() == io::ErrorKind::NotFound => match self.local.open(sha256) {
                Ok(file) => Ok(file),
                // Missing in both: what the caller sees is the primary's answer.
                Err(local) if local.kind() == io::ErrorKind::NotFound => Err(e),
                Err(local) => Err(local),
            },
            other => other,
        }
    }
}

impl BlobStore for Fallback {
    fn persist(&self, staged: Staged) -> io::Result<()> {
        self.primary.persist(staged)
    }

    fn persist_all(&self, staged: Vec<Staged>) -> io::Result<()> {
        self.primary.persist_all(staged)
    }

    fn sends_ahead(&self) -> bool {
        self.primary.sends_ahead()
    }

    fn open(&self, sha256: &str) -> io::Result<Box<dyn BlobRead>> {
        self.or_local(sha256, self.primary.open(sha256))
    }

    fn open_sized(&self, sha256: &str, len: u64) -> io::Result<Box<dyn BlobRead>> {
        self.or_local(sha256, self.primary.open_sized(sha256, len))
    }

    fn remove(&self, sha256: &str) -> io::Result<()> {
        self.primary.remove(sha256)?;
        self.local.remove(sha256)
    }

    /// Only the primary's blobs: the start-up sweep must never judge the old copies, which the
    /// migration removes itself once they are verified in the primary.
    fn list(&self) -> io::Result<Vec<String>> {
        self.primary.list()
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, reason = "test code")]
mod tests {
    use std::io::Read as _;

    use super::*;
    use crate::store::blob::Staging;

    fn put(store: &dyn BlobStore, tmp: &std::path::Path, bytes: &[u8]) -> String {
        let mut staging = Staging::new(tmp).unwrap();
        staging.write(bytes).unwrap();
        let staged = staging.finish().unwrap();
        let sha256 = staged.sha256.clone();
        store.persist(staged).unwrap();
        sha256
    }

    fn read(store: &dyn BlobStore, sha256: &str) -> io::Result<Vec<u8>> {
        let mut out = Vec::new();
        store.open(sha256)?.read_to_end(&mut out)?;
        Ok(out)
    }

    /// A blob only in the old blob directory is served, new blobs go to the primary only, and a
    /// removal takes the blob from both, so it cannot reappear from the old copy.
    #[test]
    fn fallback_reads_old_copies_writes_new_ones_to_the_primary() {
        let dir = tempfile::tempdir().unwrap();
        let tmp = dir.path().join("tmp");
        std::fs::create_dir_all(&tmp).unwrap();
        let old = FileBlobs::open(dir.path().join("old")).unwrap();
        let old_sha = put(&old, &tmp, b"uploaded before the switch");
        let primary = FileBlobs::open(dir.path().join("new")).unwrap();
        let both = Fallback::new(Box::new(primary.clone()), old.clone());

        assert_eq!(
            read(&both, &old_sha).unwrap(),
            b"uploaded before the switch"
        );
        let new_sha = put(&both, &tmp, b"uploaded after the switch");
        assert!(read(&primary, &new_sha).is_ok());
        assert_eq!(
            read(&old, &new_sha).unwrap_err().kind(),
            io::ErrorKind::NotFound
        );
        assert_eq!(both.list().unwrap(), vec![new_sha.clone()]);

        both.remove(&old_sha).unwrap();
        assert_eq!(
            read(&both, &old_sha).unwrap_err().kind(),
            io::ErrorKind::NotFound
        );
        assert_eq!(
            read(&old, &old_sha).unwrap_err().kind(),
            io::ErrorKind::NotFound
        );
    }
}
