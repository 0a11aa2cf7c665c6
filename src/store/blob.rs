//! Where media bytes live. Blobs are addressed by their sha256, so identical uploads share one
//! copy. Small blobs are sled values (chunked); large ones are files under `data_dir/blobs`.
//!
//! This module owns bytes only. Which media points at which blob, and how many do (the
//! reference count), is `store`'s business, kept in sled next to the metadata.

use std::{
    fs::{self, File},
    io::{self, Read, Seek, SeekFrom, Write},
    path::{Path, PathBuf},
};

use sha2::{Digest, Sha256};
use tempfile::NamedTempFile;

/// Size of one sled value for inline blobs, and of one read when streaming a blob file.
pub const CHUNK_SIZE: usize = 256 * 1024;

/// Where a blob's bytes are kept.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Placement {
    /// Chunks in the `blob_chunks` sled tree.
    Inline,
    /// A file in the blob directory.
    File,
}

/// A blob being received: a temp file in the data dir that disappears unless committed.
pub struct Staging {
    file: NamedTempFile,
    hasher: Sha256,
    len: u64,
}

/// A fully received, fsynced blob waiting to be committed under its hash.
pub struct Staged {
    pub(crate) file: NamedTempFile,
    pub sha256: String,
    pub len: u64,
}

impl Staging {
    pub fn new(tmp_dir: &Path) -> io::Result<Self> {
        Ok(Self {
            file: NamedTempFile::new_in(tmp_dir)?,
            hasher: Sha256::new(),
            len: 0,
        })
    }

    pub fn write(&mut self, buf: &[u8]) -> io::Result<()> {
        self.hasher.update(buf);
        self.file.as_file_mut().write_all(buf)?;
        self.len += u64::try_from(buf.len()).unwrap_or(u64::MAX);
        Ok(())
    }

    /// Another handle on the file, for positional reads while it is written.
    pub fn reader(&self) -> io::Result<File> {
        self.file.as_file().try_clone()
    }

    /// Drops the bytes received: the file is emptied before it goes, so its space comes back at
    /// once even while a reader still holds it open.
    pub fn discard(self) -> io::Result<()> {
        self.file.as_file().set_len(0)
    }

    /// Flushes the bytes to disk: after this, a crash loses nothing that is later committed.
    pub fn finish(self) -> io::Result<Staged> {
        self.file.as_file().sync_all()?;
        Ok(Staged {
            file: self.file,
            sha256: hex::encode(self.hasher.finalize()),
            len: self.len,
        })
    }
}

impl Staged {
    /// Reads the whole staged blob. Only used for inline blobs, which are small by config.
    pub fn read_all(&mut self) -> io::Result<Vec<u8>> {
        let file = self.file.as_file_mut();
        file.seek(SeekFrom::Start(0))?;
        let mut buf = Vec::with_capacity(usize::try_from(self.len).unwrap_or(0));
        file.read_to_end(&mut buf)?;
        Ok(buf)
    }
}

/// A backend for large blobs: files (`FileBlobs`) or an S3 bucket (`s3::S3Blobs`).
/// Every call blocks: callers run them off the async workers.
pub trait BlobStore: Send + Sync {
    /// Makes a staged blob durable under its hash. Idempotent for identical content.
    fn persist(&self, staged: Staged) -> io::Result<()>;
    /// Makes many staged blobs durable, as `persist` each would; a backend may share the
    /// flushes between them (an import commits hundreds at a time).
    fn persist_all(&self, staged: Vec<Staged>) -> io::Result<()> {
        staged.into_iter().try_for_each(|s| self.persist(s))
    }
    /// Opens a blob for reading from any offset.
    fn open(&self, sha256: &str) -> io::Result<Box<dyn BlobRead>>;
    /// Opens a blob whose record says it has `len` bytes: a backend with a cache serves its
    /// copy only if it has that length.
    fn open_sized(&self, sha256: &str, _len: u64) -> io::Result<Box<dyn BlobRead>> {
        self.open(sha256)
    }
    /// Removes a blob; a missing one is not an error.
    fn remove(&self, sha256: &str) -> io::Result<()>;
    /// Every blob present, for the start-up sweep of blobs no record points at. A backend
    /// whose puts are not under the store's lock (`sends_ahead`) lists only blobs old enough
    /// that no upload can still be committing them.
    fn list(&self) -> io::Result<Vec<String>>;
    /// Whether `persist` is slow (a network transfer): the store then calls it before taking
    /// its blob lock, with the hash pinned against removal until the record is committed,
    /// instead of under the lock as for a rename.
    fn sends_ahead(&self) -> bool {
        false
    }
    /// Whether this backend hands out direct URLs (see `direct`). Files never do.
    fn serves_directly(&self) -> bool {
        false
    }
    /// A URL the client may fetch the blob from without mxmedia, answering with `answer`'s
    /// headers; `None` when the backend cannot carry them.
    fn direct_url(
        &self,
        _sha256: &str,
        _answer: &super::direct::DirectAnswer,
    ) -> io::Result<Option<super::direct::DirectUrl>> {
        Ok(None)
    }
}

pub trait BlobRead: Read + Seek + Send {}
impl<T: Read + Seek + Send> BlobRead for T {}

/// Content-addressed files: `blobs/<first two hex digits>/<sha256>`.
#[derive(Debug, Clone)]
pub struct FileBlobs {
    root: PathBuf,
}

impl FileBlobs {
    pub fn open(root: PathBuf) -> io::Result<Self> {
        fs::create_dir_all(&root)?;
        Ok(Self { root })
    }

    fn path(&self, sha256: &str) -> PathBuf {
        file_path(&self.root, sha256)
    }
}

/// Where the blob `sha256` lives under the blob directory `root`.
pub fn file_path(root: &Path, sha256: &str) -> PathBuf {
    root.join(sha256.get(..2).unwrap_or("00")).join(sha256)
}

impl BlobStore for FileBlobs {
    fn persist(&self, staged: Staged) -> io::Result<()> {
        let path = self.path(&staged.sha256);
        let dir = path.parent().unwrap_or(&self.root).to_path_buf();
        fs::create_dir_all(&dir)?;
        staged.file.persist(&path).map_err(|e| e.error)?;
        // The rename is durable only once the directory entry is.
        File::open(&dir)?.sync_all()
    }

    fn persist_all(&self, staged: Vec<Staged>) -> io::Result<()> {
        if staged.is_empty() {
            return Ok(());
        }
        for one in staged {
            let path = self.path(&one.sha256);
            if let Some(dir) = path.parent() {
                fs::create_dir_all(dir)?;
            }
            one.file.persist(&path).map_err(|e| e.error)?;
        }
        // One flush of the file system makes every rename (and the bytes, which the importer
        // flushed the same way) durable: far cheaper than two fsyncs per file.
        nix::unistd::syncfs(File::open(&self.root)?).map_err(io::Error::from)
    }

    fn remove(&self, sha256: &str) -> io::Result<()> {
        match fs::remove_file(self.path(sha256)) {
            Err(e) if e.kind() != io::ErrorKind::NotFound => Err(e),
            _ => Ok(()),
        }
    }

    fn list(&self) -> io::Result<Vec<String>> {
        let mut out = Vec::new();
        for shard in fs::read_dir(&self.root)? {
            let shard = shard?;
            if !shard.file_type()?.is_dir() {
                continue;
            }
            for entry in fs::read_dir(shard.path())? {
                if let Some(name) = entry?.file_name().to_str() {
                    out.push(name.to_owned());
                }
            }
        }
        Ok(out)
    }

    fn open(&self, sha256: &str) -> io::Result<Box<dyn BlobRead>> {
        Ok(Box::new(File::open(self.path(sha256))?))
    }
}
