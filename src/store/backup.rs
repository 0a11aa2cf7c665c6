//! Consistent copies of a store that may be in use: the database is read in one pause of the
//! writers and written out as a stream; blob files are copied afterwards, and while that happens
//! no blob file is removed, so every file the copied database points at is still there.
//!
//! Which process does what (a socket to the running server, or opening a stopped data dir) is
//! the top-level `backup` module's business; this module only knows the store's layout.
//!
//! The stream (version 1) starts with the line `mxmedia-dump 1`, then frames, lengths as
//! big-endian u32:
//! - `T` len name: the entries that follow belong to this sled tree;
//! - `E` len key len value: one entry;
//! - `.`: the end of a complete dump;
//! - `!` len message: the dump failed on the sending side.
//!
//! With blobs in S3 (or another backend that is not the data dir), `mxmedia backup
//! --include-s3-blobs` then asks for the bytes of each blob the dump points at, by its sha256 on
//! a line; the answer is `D` len bytes frames (at most one `CHUNK_SIZE` each), then `.`, or `-`
//! len message when the blob cannot be read. The reader hashes what it receives and keeps a
//! blob only if it hashes to its name (`receive_blob`).

use std::{
    fs,
    io::{self, BufRead, Read, Write},
    path::{Path, PathBuf},
};

use sha2::{Digest, Sha256};

use super::{
    BlobRecord, Store,
    blob::{self, BlobRead, CHUNK_SIZE, Placement, Staged, Staging},
    decode,
};
use super::{Result, StoreError};

const HEADER: &[u8] = b"mxmedia-dump 1\n";
/// sled values are at most one inline chunk here; anything far larger is a broken stream.
const MAX_FRAME: usize = 64 * 1024 * 1024;
/// Entries written to the new database per sled batch.
const BATCH_ENTRIES: usize = 512;

#[derive(Debug, thiserror::Error)]
pub enum BackupError {
    #[error(transparent)]
    Io(#[from] io::Error),
    #[error("writing the backup database")]
    Sled(#[from] sled::Error),
    #[error("the database stream is malformed: {0}")]
    Format(&'static str),
    #[error("the server could not read its database: {0}")]
    Remote(String),
    #[error(
        "blob {sha256} is in the database but its file {} is missing (if the server keeps its \
         blobs in S3, give this command the same MXMEDIA_STORE__S3__* settings, or \
         --include-s3-blobs)",
        path.display()
    )]
    MissingBlob { sha256: String, path: PathBuf },
    #[error(
        "blob file {} does not hold what the database says (length or sha256 differs)",
        path.display()
    )]
    CorruptBlob { path: PathBuf },
    #[error("reading the copied database")]
    Store(#[from] StoreError),
    #[error("blob {sha256} could not be read: {message}")]
    UnreadableBlob { sha256: String, message: String },
    #[error(
        "blob {sha256} does not hold what the database says: {len} bytes hashing to {found}, \
         its record says {expected} bytes"
    )]
    BlobMismatch {
        sha256: String,
        found: String,
        len: u64,
        expected: u64,
    },
}

/// Backups in progress and the blob files whose removal waits for them.
#[derive(Debug, Default)]
pub(super) struct Holds {
    running: usize,
    deferred: Vec<String>,
}

/// Keeps every blob file on disk while it lives. Removals asked for meanwhile happen when the
/// last hold is dropped, and only for blobs that are still unreferenced then.
pub struct BlobHold {
    store: Store,
}

impl Drop for BlobHold {
    fn drop(&mut self) {
        if let Err(e) = self.store.release_hold() {
            // The files stay; the sweep at the next start removes them.
            tracing::warn!(error = %e, "removing blob files deferred by a backup failed");
        }
    }
}

/// What a dump held.
#[derive(Debug, Clone, Copy, Default)]
pub struct DumpStats {
    pub trees: usize,
    pub entries: u64,
}

/// A database rebuilt from a dump, and the blob files it points at.
#[derive(Debug)]
pub struct Restored {
    pub stats: DumpStats,
    /// sha256 and length of every blob kept as a file.
    pub files: Vec<(String, u64)>,
}

/// How a blob file reached the backup.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Placed {
    /// A hard link: same file system, no bytes copied. Blob files are never changed in place.
    Linked,
    /// Copied and checked against its sha256.
    Copied,
}

impl Store {
    /// Starts keeping blob files: take this before `dump` and drop it once the files are copied.
    pub fn hold_blob_files(&self) -> Result<BlobHold> {
        self.lock_holds()?.running += 1;
        Ok(BlobHold {
            store: self.clone(),
        })
    }

    /// Writes every tree to `out` while no writer runs: uploads that finish meanwhile wait for
    /// the end of the dump (reads go on). Blob files are not included; see `hold_blob_files`.
    pub fn dump(&self, out: &mut dyn Write) -> Result<DumpStats> {
        let _paused = self
            .inner
            .write_gate
            .write()
            .map_err(|_| StoreError::Poisoned("store write gate"))?;
        let mut stats = DumpStats::default();
        out.write_all(HEADER)?;
        for name in self.inner.db.tree_names() {
            let tree = self.inner.db.open_tree(&name)?;
            out.write_all(b"T")?;
            write_bytes(out, &name)?;
            stats.trees += 1;
            for entry in tree.iter() {
                let (key, value) = entry?;
                out.write_all(b"E")?;
                write_bytes(out, &key)?;
                write_bytes(out, &value)?;
                stats.entries += 1;
            }
        }
        out.write_all(b".")?;
        out.flush()?;
        Ok(stats)
    }

    /// Removes a blob file now, or when the running backups are done. Call with the blob lock,
    /// once the removal of its last record is on disk.
    pub(super) fn remove_blob_file(&self, sha256: &str) -> Result<()> {
        let mut holds = self.lock_holds()?;
        if holds.running > 0 {
            holds.deferred.push(sha256.to_owned());
            return Ok(());
        }
        drop(holds);
        self.remove_unpinned(sha256)
    }

    fn release_hold(&self) -> Result<()> {
        let _writing = self.writing()?;
        let _blobs = self.lock_blobs()?;
        // Kept locked while removing, so a backup starting now sees the files already gone
        // rather than losing them after it has read the database.
        let mut holds = self.lock_holds()?;
        holds.running = holds.running.saturating_sub(1);
        if holds.running > 0 || holds.deferred.is_empty() {
            return Ok(());
        }
        // The removals that made these files unreferenced must be on disk before the files go.
        self.flush()?;
        for sha256 in std::mem::take(&mut holds.deferred) {
            // Uploaded again while the backup ran: the file is in use once more.
            if self.inner.blobs.get(&sha256)?.is_none() {
                self.remove_unpinned(&sha256)?;
            }
        }
        Ok(())
    }

    /// Opens the blob `sha256` in its backend (files or the bucket), whether or not a record
    /// still points at it: while a hold lasts, blobs whose last record went after the dump are
    /// still there, and a backup wants them. Only a well-formed hash names a blob.
    pub fn open_held_blob(&self, sha256: &str) -> io::Result<Box<dyn BlobRead>> {
        if !is_sha256(sha256) {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "not a sha256 in lowercase hex",
            ));
        }
        self.inner.files.open(sha256)
    }

    fn lock_holds(&self) -> Result<std::sync::MutexGuard<'_, Holds>> {
        self.inner
            .backups
            .lock()
            .map_err(|_| StoreError::Poisoned("backup holds"))
    }
}

/// Sends a failure in place of the rest of a dump.
pub fn write_failure(out: &mut dyn Write, message: &str) -> io::Result<()> {
    out.write_all(b"!")?;
    write_bytes(out, message.as_bytes())?;
    out.flush()
}

/// Builds a new sled database at `db_dir` (which must not exist) from a dump.
pub fn restore_dump(input: &mut dyn BufRead, db_dir: &Path) -> Result<Restored, BackupError> {
    let mut header = [0u8; HEADER.len()];
    input.read_exact(&mut header)?;
    if header != HEADER {
        return Err(BackupError::Format("unknown header"));
    }
    let db = sled::Config::new().path(db_dir).create_new(true).open()?;
    let mut stats = DumpStats::default();
    let mut tree: Option<sled::Tree> = None;
    let mut batch = sled::Batch::default();
    let mut batched = 0;
    loop {
        let mut tag = [0u8; 1];
        input.read_exact(&mut tag).map_err(cut_short)?;
        match &tag {
            b"T" => {
                if let Some(tree) = &tree {
                    tree.apply_batch(std::mem::take(&mut batch))?;
                    batched = 0;
                }
                tree = Some(db.open_tree(read_bytes(input)?)?);
                stats.trees += 1;
            }
            b"E" => {
                let Some(current) = &tree else {
                    return Err(BackupError::Format("an entry before any tree"));
                };
                let key = read_bytes(input)?;
                let value = read_bytes(input)?;
                batch.insert(key, value);
                stats.entries += 1;
                batched += 1;
                if batched == BATCH_ENTRIES {
                    current.apply_batch(std::mem::take(&mut batch))?;
                    batched = 0;
                }
            }
            b"." => break,
            b"!" => {
                let message = read_bytes(input)?;
                return Err(BackupError::Remote(
                    String::from_utf8_lossy(&message).into_owned(),
                ));
            }
            _ => return Err(BackupError::Format("unknown frame")),
        }
    }
    if let Some(tree) = &tree {
        tree.apply_batch(batch)?;
    }
    db.flush()?;
    let mut files = Vec::new();
    for entry in db.open_tree("sha256_blob")?.iter() {
        let (sha256, record) = entry?;
        let record: BlobRecord = decode(&record)?;
        if record.placement == Placement::File {
            files.push((String::from_utf8_lossy(&sha256).into_owned(), record.len));
        }
    }
    Ok(Restored { stats, files })
}

/// Puts blob `sha256` from the blob directory `from` into the blob directory `to`: a hard link
/// when both are on one file system, else a copy whose sha256 is checked.
pub fn copy_blob_file(
    from: &Path,
    to: &Path,
    sha256: &str,
    len: u64,
) -> Result<Placed, BackupError> {
    let source = blob::file_path(from, sha256);
    let target = blob::file_path(to, sha256);
    let dir = target.parent().unwrap_or(to);
    fs::create_dir_all(dir)?;
    match fs::metadata(&source) {
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            return Err(BackupError::MissingBlob {
                sha256: sha256.to_owned(),
                path: source,
            });
        }
        Err(e) => return Err(e.into()),
        Ok(meta) if meta.len() != len => return Err(BackupError::CorruptBlob { path: source }),
        Ok(_) => {}
    }
    if fs::hard_link(&source, &target).is_ok() {
        return Ok(Placed::Linked);
    }
    let mut reader = fs::File::open(&source)?;
    let mut tmp = tempfile::NamedTempFile::new_in(dir)?;
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; CHUNK_SIZE];
    loop {
        let n = reader.read(&mut buf)?;
        let Some(chunk) = buf.get(..n).filter(|c| !c.is_empty()) else {
            break;
        };
        hasher.update(chunk);
        tmp.write_all(chunk)?;
    }
    if hex::encode(hasher.finalize()) != sha256 {
        return Err(BackupError::CorruptBlob { path: source });
    }
    tmp.as_file().sync_all()?;
    tmp.persist(&target).map_err(|e| e.error)?;
    Ok(Placed::Copied)
}

/// Sends the bytes of blob `sha256` as frames (see the module's doc), or the reason it cannot.
/// An error writing to `out` means the reader is gone.
pub fn send_blob(store: &Store, sha256: &str, out: &mut dyn Write) -> io::Result<()> {
    let mut reader = match store.open_held_blob(sha256) {
        Ok(reader) => reader,
        Err(e) => return send_blob_failure(out, &e),
    };
    let mut buf = vec![0u8; CHUNK_SIZE];
    loop {
        let n = match reader.read(&mut buf) {
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return send_blob_failure(out, &e),
        };
        let Some(chunk) = buf.get(..n).filter(|c| !c.is_empty()) else {
            break;
        };
        out.write_all(b"D")?;
        write_bytes(out, chunk)?;
    }
    out.write_all(b".")?;
    out.flush()
}

fn send_blob_failure(out: &mut dyn Write, e: &io::Error) -> io::Result<()> {
    out.write_all(b"-")?;
    write_bytes(out, e.to_string().as_bytes())?;
    out.flush()
}

/// Receives the frames of blob `sha256` (`send_blob`) into `staging`, and hands it back staged
/// only if its bytes hash to `sha256` and number `len`.
pub fn receive_blob(
    input: &mut dyn BufRead,
    mut staging: Staging,
    sha256: &str,
    len: u64,
) -> Result<Staged, BackupError> {
    loop {
        let mut tag = [0u8; 1];
        input.read_exact(&mut tag).map_err(cut_short)?;
        match &tag {
            b"D" => staging.write(&read_bytes(input)?)?,
            b"." => break,
            b"-" => {
                let message = read_bytes(input)?;
                return Err(BackupError::UnreadableBlob {
                    sha256: sha256.to_owned(),
                    message: String::from_utf8_lossy(&message).into_owned(),
                });
            }
            _ => return Err(BackupError::Format("unknown blob frame")),
        }
    }
    verified(staging.finish()?, sha256, len)
}

/// Streams blob `sha256` from `reader` into `staging`, verified as `receive_blob` does.
pub fn stage_blob(
    reader: &mut dyn Read,
    mut staging: Staging,
    sha256: &str,
    len: u64,
) -> Result<Staged, BackupError> {
    let mut buf = vec![0u8; CHUNK_SIZE];
    loop {
        let n = match reader.read(&mut buf) {
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => {
                return Err(BackupError::UnreadableBlob {
                    sha256: sha256.to_owned(),
                    message: e.to_string(),
                });
            }
        };
        let Some(chunk) = buf.get(..n).filter(|c| !c.is_empty()) else {
            break;
        };
        staging.write(chunk)?;
    }
    verified(staging.finish()?, sha256, len)
}

fn verified(staged: Staged, sha256: &str, len: u64) -> Result<Staged, BackupError> {
    if staged.sha256 == sha256 && staged.len == len {
        return Ok(staged);
    }
    Err(BackupError::BlobMismatch {
        sha256: sha256.to_owned(),
        found: staged.sha256.clone(),
        len: staged.len,
        expected: len,
    })
}

/// Whether `name` is a sha256 as blobs are named: 64 lowercase hex digits.
pub fn is_sha256(name: &str) -> bool {
    name.len() == 64 && name.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
}

fn write_bytes(out: &mut dyn Write, bytes: &[u8]) -> io::Result<()> {
    let len = u32::try_from(bytes.len())
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "sled value over 4 GiB"))?;
    out.write_all(&len.to_be_bytes())?;
    out.write_all(bytes)
}

fn read_bytes(input: &mut dyn BufRead) -> Result<Vec<u8>, BackupError> {
    let mut len = [0u8; 4];
    input.read_exact(&mut len).map_err(cut_short)?;
    let len = usize::try_from(u32::from_be_bytes(len)).unwrap_or(usize::MAX);
    if len > MAX_FRAME {
        return Err(BackupError::Format("a frame over 64 MiB"));
    }
    let mut bytes = vec![0u8; len];
    input.read_exact(&mut bytes).map_err(cut_short)?;
    Ok(bytes)
}

/// A stream that stops before its end mark: the sender died or hung up.
fn cut_short(err: io::Error) -> BackupError {
    if err.kind() == io::ErrorKind::UnexpectedEof {
        BackupError::Format("it ended before its end mark")
    } else {
        err.into()
    }
}
