//! The local disk cache of S3 blobs (`[store.s3] cache_max_size`): content-addressed files
//! `<dir>/<first two hex digits>/<sha256>`, so that hot media is read from the local disk
//! instead of the bucket, with Range and seeks, and keeps being served while S3 is down.
//!
//! The index is in memory: each file's length, least recently used first, whose total (with
//! the fills in progress) never passes the maximum; making room deletes the least recently used
//! files. It is rebuilt at start-up from the directory, oldest modification time first (a hit
//! touches its file), so the order survives a restart.
//!
//! A blob gets in two ways: a read of the whole object from its start (`Fill`, teed into a temp
//! file that is renamed into place only once complete and its sha256 matches), or a hard link
//! of a staged upload's file (the same bytes, already hashed). A ranged read, a seek, an error
//! or a client going away drops the temp file. At most one fill per blob runs at once. A fill
//! never takes the disk below `min_free_space`: it evicts, or is skipped. A file whose length
//! is not the blob's is never served: it is deleted and the blob read from S3.

use std::{
    collections::HashMap,
    fs::{self, File},
    io::{self, BufWriter, Read, Seek, SeekFrom, Write as _},
    path::{Path, PathBuf},
    sync::{
        Arc, Mutex, MutexGuard,
        atomic::{AtomicU64, Ordering},
    },
    time::SystemTime,
};

use hashlink::LinkedHashMap;
use num_traits::ToPrimitive as _;
use sha2::{Digest as _, Sha256};
use tempfile::NamedTempFile;

use crate::config::FreeSpace;

/// Where fills are written until they are complete; emptied at start-up.
const TMP: &str = "tmp";

pub(crate) struct Cache {
    dir: PathBuf,
    max: u64,
    floor: FreeSpace,
    state: Mutex<State>,
    next_fill: AtomicU64,
}

#[derive(Default)]
struct State {
    /// Blob -> its file's length; the front is the least recently used.
    files: LinkedHashMap<String, u64>,
    /// Sum of `files`' lengths.
    bytes: u64,
    /// Fills in progress: blob -> (fill id, bytes reserved for it).
    filling: HashMap<String, (u64, u64)>,
    /// Sum of the bytes reserved by `filling`.
    filling_bytes: u64,
}

impl Cache {
    /// Creates `dir` if needed, checks it is writable, and rebuilds the index from it.
    pub(crate) fn open(dir: PathBuf, max: u64, floor: FreeSpace) -> io::Result<Self> {
        check_dir(&dir)?;
        let tmp = dir.join(TMP);
        // Fills cut short by a crash: never complete, never indexed.
        if tmp.exists() {
            fs::remove_dir_all(&tmp)?;
        }
        fs::create_dir_all(&tmp)?;
        let cache = Self {
            dir,
            max,
            floor,
            state: Mutex::new(State::default()),
            next_fill: AtomicU64::new(0),
        };
        cache.rebuild()?;
        Ok(cache)
    }

    fn path(&self, sha256: &str) -> PathBuf {
        super::super::blob::file_path(&self.dir, sha256)
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        // The state is a few counters and a map updated in small steps: after a panic
        // elsewhere it is still usable, and serving beats refusing every download.
        self.state
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Indexes the files left by earlier runs, oldest first, deleting those over the budget.
    fn rebuild(&self) -> io::Result<()> {
        let mut found = Vec::new();
        for shard in fs::read_dir(&self.dir)? {
            let shard = shard?;
            let name = shard.file_name();
            let Some(name) = name.to_str() else { continue };
            if name == TMP || !shard.file_type()?.is_dir() {
                continue;
            }
            for entry in fs::read_dir(shard.path())? {
                let entry = entry?;
                let Some(sha256) = entry.file_name().to_str().map(str::to_owned) else {
                    continue;
                };
                if !is_sha256(&sha256) || sha256.get(..2) != Some(name) {
                    continue;
                }
                let meta = entry.metadata()?;
                if !meta.is_file() {
                    continue;
                }
                let used = meta.modified().unwrap_or(SystemTime::UNIX_EPOCH);
                found.push((used, sha256, meta.len()));
            }
        }
        found.sort();
        let mut state = self.lock();
        for (_, sha256, len) in found {
            state.bytes = state.bytes.saturating_add(len);
            state.files.insert(sha256, len);
        }
        while state.bytes > self.max {
            if !self.evict_one(&mut state) {
                break;
            }
        }
        tracing::info!(
            files = state.files.len(),
            bytes = state.bytes,
            dir = %self.dir.display(),
            "S3 cache ready"
        );
        gauge(&state);
        Ok(())
    }

    /// The cached file of `sha256`, positioned at its start, if it is there whole: its length
    /// is the one indexed and, when given, `len` (the blob's, from its record).
    pub(crate) fn get(&self, sha256: &str, len: Option<u64>) -> Option<File> {
        let indexed = {
            let mut state = self.lock();
            let indexed = state.files.to_back(sha256).copied();
            if indexed.is_none() {
                drop(state);
                metrics::counter!("mxmedia_s3_cache_misses_total").increment(1);
                return None;
            }
            indexed
        };
        let path = self.path(sha256);
        let whole = File::open(&path).and_then(|file| {
            let on_disk = file.metadata()?.len();
            let right = Some(on_disk) == indexed && len.is_none_or(|len| len == on_disk);
            Ok(right.then_some(file))
        });
        match whole {
            Ok(Some(file)) => {
                // The order the next start-up rebuilds; a failure only costs that order.
                let _ = file.set_modified(SystemTime::now());
                metrics::counter!("mxmedia_s3_cache_hits_total").increment(1);
                Some(file)
            }
            other => {
                tracing::warn!(
                    sha256,
                    path = %path.display(),
                    problem = ?other.err(),
                    "S3 cache file missing or not the blob's length: dropped, reading S3"
                );
                self.remove(sha256);
                metrics::counter!("mxmedia_s3_cache_misses_total").increment(1);
                None
            }
        }
    }

    /// Drops `sha256` from the cache (its media was deleted), and any fill of it in progress.
    pub(crate) fn remove(&self, sha256: &str) {
        let mut state = self.lock();
        if let Some(len) = state.files.remove(sha256) {
            state.bytes = state.bytes.saturating_sub(len);
            self.delete_file(sha256);
        }
        if let Some((_, reserved)) = state.filling.remove(sha256) {
            state.filling_bytes = state.filling_bytes.saturating_sub(reserved);
        }
        gauge(&state);
    }

    /// Reserves room for `len` more bytes: false when the blob is cached or being filled, or
    /// cannot fit under the maximum or above the free-space floor even with everything evicted.
    fn reserve(&self, state: &mut State, sha256: &str, len: u64) -> bool {
        if len > self.max || state.files.contains_key(sha256) || state.filling.contains_key(sha256)
        {
            return false;
        }
        while state
            .bytes
            .saturating_add(state.filling_bytes)
            .saturating_add(len)
            > self.max
        {
            if !self.evict_one(state) {
                return false;
            }
        }
        let Ok((mut available, total)) = free_space(&self.dir) else {
            return false;
        };
        let floor = self.floor.bytes(total);
        let needed = |state: &State| {
            floor
                .saturating_add(state.filling_bytes)
                .saturating_add(len)
        };
        while available < needed(state) {
            let before = state.bytes;
            if !self.evict_one(state) {
                tracing::debug!(
                    sha256,
                    len,
                    available,
                    floor,
                    "not caching: the disk would go below MXMEDIA_STORE__MIN_FREE_SPACE"
                );
                return false;
            }
            available = available.saturating_add(before.saturating_sub(state.bytes));
        }
        true
    }

    /// Deletes the least recently used file; false when there is none.
    fn evict_one(&self, state: &mut State) -> bool {
        let Some((sha256, len)) = state.files.pop_front() else {
            return false;
        };
        state.bytes = state.bytes.saturating_sub(len);
        self.delete_file(&sha256);
        metrics::counter!("mxmedia_s3_cache_evictions_total").increment(1);
        gauge(state);
        true
    }

    fn delete_file(&self, sha256: &str) {
        let path = self.path(sha256);
        if let Err(e) = fs::remove_file(&path)
            && e.kind() != io::ErrorKind::NotFound
        {
            tracing::warn!(path = %path.display(), error = %e, "could not delete an S3 cache file");
        }
    }

    /// Reserves room for `sha256` (`len` bytes) as a fill in progress, unless it is cached,
    /// being filled, or does not fit.
    fn claim(self: &Arc<Self>, sha256: &str, len: u64) -> Option<Claim> {
        let id = self.next_fill.fetch_add(1, Ordering::Relaxed);
        let mut state = self.lock();
        if !self.reserve(&mut state, sha256, len) {
            return None;
        }
        state.filling.insert(sha256.to_owned(), (id, len));
        state.filling_bytes = state.filling_bytes.saturating_add(len);
        Some(Claim {
            cache: Arc::clone(self),
            sha256: sha256.to_owned(),
            id,
            len,
        })
    }

    /// Starts caching a read of the whole of `sha256` (`len` bytes), unless it is cached, being
    /// filled, or does not fit.
    pub(crate) fn fill(self: &Arc<Self>, sha256: &str, len: u64) -> Option<Fill> {
        let claim = self.claim(sha256, len)?;
        match NamedTempFile::new_in(self.dir.join(TMP)) {
            Ok(file) => Some(Fill {
                claim,
                file: Some(BufWriter::with_capacity(
                    super::super::blob::CHUNK_SIZE,
                    file,
                )),
                hasher: Sha256::new(),
                written: 0,
            }),
            Err(e) => {
                tracing::warn!(error = %e, "could not start an S3 cache file");
                None
            }
        }
    }

    /// Links a staged upload's file (its bytes hashed as they were received) into the cache's
    /// temp dir before the staged file goes; `Linked::commit` puts it in place once the object
    /// is in the bucket. None when it does not fit or cannot be linked (another file system).
    pub(crate) fn link(self: &Arc<Self>, sha256: &str, len: u64, staged: &Path) -> Option<Linked> {
        let claim = self.claim(sha256, len)?;
        let tmp = self.dir.join(TMP).join(format!("link-{}", claim.id));
        match fs::hard_link(staged, &tmp) {
            Ok(()) => Some(Linked { claim, tmp }),
            Err(e) => {
                tracing::debug!(error = %e, "not caching an upload: no hard link");
                None
            }
        }
    }
}

/// Room reserved for one blob being brought into the cache; given back when dropped.
struct Claim {
    cache: Arc<Cache>,
    sha256: String,
    id: u64,
    len: u64,
}

impl Claim {
    /// Moves the complete file `from` into place and indexes it, unless the blob was deleted
    /// while it was brought in.
    fn commit(&self, from: impl FnOnce(&Path) -> io::Result<()>) -> io::Result<()> {
        let path = self.cache.path(&self.sha256);
        if let Some(dir) = path.parent() {
            fs::create_dir_all(dir)?;
        }
        let mut state = self.cache.lock();
        if state.filling.get(&self.sha256).map(|(id, _)| *id) != Some(self.id) {
            // Removed meanwhile: its media is gone.
            return Ok(());
        }
        state.filling.remove(&self.sha256);
        state.filling_bytes = state.filling_bytes.saturating_sub(self.len);
        from(&path)?;
        state.files.insert(self.sha256.clone(), self.len);
        state.bytes = state.bytes.saturating_add(self.len);
        gauge(&state);
        Ok(())
    }
}

impl Drop for Claim {
    fn drop(&mut self) {
        let mut state = self.cache.lock();
        if state.filling.get(&self.sha256).map(|(id, _)| *id) == Some(self.id) {
            state.filling.remove(&self.sha256);
            state.filling_bytes = state.filling_bytes.saturating_sub(self.len);
        }
    }
}

/// A staged upload's file linked into the cache's temp dir, waiting for its put to succeed.
pub(crate) struct Linked {
    claim: Claim,
    tmp: PathBuf,
}

impl Linked {
    /// The object is in the bucket: the file goes in place.
    pub(crate) fn commit(self) {
        if let Err(e) = self.claim.commit(|path| fs::rename(&self.tmp, path)) {
            tracing::warn!(error = %e, "an uploaded blob was not cached");
        }
    }
}

impl Drop for Linked {
    fn drop(&mut self) {
        // Still there unless committed.
        let _ = fs::remove_file(&self.tmp);
    }
}

/// A read of a whole blob being copied into the cache. Dropped before `write` saw the last
/// byte, its temp file goes and nothing is cached.
pub(crate) struct Fill {
    claim: Claim,
    file: Option<BufWriter<NamedTempFile>>,
    hasher: Sha256,
    written: u64,
}

impl Fill {
    /// Copies `bytes`, read at offset `at` of the blob. False when the fill is over (the
    /// bytes were not the next ones, writing failed, or the blob is complete): drop it then.
    fn write(&mut self, at: u64, bytes: &[u8]) -> bool {
        if at != self.written {
            return false;
        }
        let Some(file) = self.file.as_mut() else {
            return false;
        };
        if let Err(e) = file.write_all(bytes) {
            tracing::warn!(error = %e, "writing an S3 cache file failed: not cached");
            return false;
        }
        self.hasher.update(bytes);
        self.written = self
            .written
            .saturating_add(u64::try_from(bytes.len()).unwrap_or(u64::MAX));
        if self.written < self.claim.len {
            return true;
        }
        if let Err(e) = self.commit() {
            tracing::warn!(error = %e, sha256 = self.claim.sha256, "an S3 cache file was not kept");
        }
        false
    }

    /// Puts the complete file in place if its hash is its name.
    fn commit(&mut self) -> io::Result<()> {
        let Some(file) = self.file.take() else {
            return Ok(());
        };
        let sha256 = hex::encode(std::mem::take(&mut self.hasher).finalize());
        if self.written != self.claim.len || sha256 != self.claim.sha256 {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                format!("read {} bytes hashing to {sha256}", self.written),
            ));
        }
        let file = file.into_inner().map_err(io::IntoInnerError::into_error)?;
        // Renamed only once on disk: after a crash, a file in place is a whole one.
        file.as_file().sync_data()?;
        self.claim
            .commit(|path| file.persist(path).map(drop).map_err(|e| e.error))
    }
}

/// A blob reader whose bytes, if read in order from the start to the end, fill the cache.
pub(crate) struct Teed<R> {
    inner: R,
    pos: u64,
    fill: Option<Fill>,
}

impl<R> Teed<R> {
    pub(crate) fn new(inner: R, fill: Fill) -> Self {
        Self {
            inner,
            pos: 0,
            fill: Some(fill),
        }
    }
}

impl<R: Read> Read for Teed<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = match self.inner.read(buf) {
            Ok(n) => n,
            Err(e) => {
                self.fill = None;
                return Err(e);
            }
        };
        if let Some(fill) = &mut self.fill {
            let more = match buf.get(..n) {
                Some(read) if n > 0 => fill.write(self.pos, read),
                // The end before the blob's length: never cached.
                _ => false,
            };
            if !more {
                self.fill = None;
            }
        }
        self.pos = self
            .pos
            .saturating_add(u64::try_from(n).unwrap_or(u64::MAX));
        Ok(n)
    }
}

impl<R: Seek> Seek for Teed<R> {
    fn seek(&mut self, to: SeekFrom) -> io::Result<u64> {
        let at = self.inner.seek(to)?;
        if at != self.pos {
            // A ranged read: not the whole blob.
            self.fill = None;
        }
        self.pos = at;
        Ok(at)
    }
}

/// Creates `dir` if needed and checks that a file can be written in it: the start-up and
/// `check-config` check of `MXMEDIA_STORE__S3__CACHE_DIR`.
pub fn check_dir(dir: &Path) -> io::Result<()> {
    let named = |what: &str, e: io::Error| {
        io::Error::new(
            e.kind(),
            format!(
                "MXMEDIA_STORE__S3__CACHE_DIR: {what} {}: {e}",
                dir.display()
            ),
        )
    };
    fs::create_dir_all(dir).map_err(|e| named("creating", e))?;
    let mut probe = NamedTempFile::new_in(dir).map_err(|e| named("writing a file in", e))?;
    probe
        .as_file_mut()
        .write_all(b"mxmedia")
        .map_err(|e| named("writing a file in", e))?;
    Ok(())
}

fn is_sha256(name: &str) -> bool {
    name.len() == 64
        && name
            .bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

/// (available, total) bytes of the file system holding `dir`.
fn free_space(dir: &Path) -> io::Result<(u64, u64)> {
    let stat = nix::sys::statvfs::statvfs(dir).map_err(io::Error::from)?;
    let frsize = stat.fragment_size();
    Ok((
        stat.blocks_available().saturating_mul(frsize),
        stat.blocks().saturating_mul(frsize),
    ))
}

fn gauge(state: &State) {
    metrics::gauge!("mxmedia_s3_cache_bytes").set(state.bytes.to_f64().unwrap_or(f64::MAX));
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::indexing_slicing, reason = "test code")]
mod tests {
    use std::io::Cursor;

    use super::*;

    fn sha(bytes: &[u8]) -> String {
        hex::encode(Sha256::digest(bytes))
    }

    fn open(dir: &Path, max: u64) -> Arc<Cache> {
        Arc::new(Cache::open(dir.to_path_buf(), max, FreeSpace::Bytes(0)).unwrap())
    }

    fn read_through(cache: &Arc<Cache>, name: &str, bytes: &[u8], seek_to: Option<u64>) {
        let len = u64::try_from(bytes.len()).unwrap();
        let fill = cache.fill(name, len).unwrap();
        let mut teed = Teed::new(Cursor::new(bytes.to_vec()), fill);
        if let Some(at) = seek_to {
            teed.seek(SeekFrom::Start(at)).unwrap();
        }
        let mut out = Vec::new();
        teed.read_to_end(&mut out).unwrap();
    }

    /// Only a read from the first byte to the last whose sha256 is the blob's name is kept; a
    /// second fill of a blob being filled is refused (concurrent misses make one fill).
    #[test]
    fn only_whole_verified_reads_are_kept_and_one_fill_per_blob_runs() {
        let dir = tempfile::tempdir().unwrap();
        let cache = open(dir.path(), 1 << 20);
        let bytes = vec![7u8; 300_000];
        let name = sha(&bytes);

        let first = cache.fill(&name, 300_000).unwrap();
        assert!(cache.fill(&name, 300_000).is_none(), "one fill at a time");
        drop(first);

        read_through(&cache, &name, &bytes, Some(10));
        assert!(cache.get(&name, None).is_none(), "a read from the middle");
        let other = vec![8u8; 300_000];
        read_through(&cache, &name, &other, None);
        assert!(
            cache.get(&name, None).is_none(),
            "bytes not matching the hash"
        );
        assert_eq!(fs::read_dir(dir.path().join(TMP)).unwrap().count(), 0);

        read_through(&cache, &name, &bytes, None);
        let mut file = cache.get(&name, Some(300_000)).unwrap();
        let mut out = Vec::new();
        file.read_to_end(&mut out).unwrap();
        assert_eq!(out, bytes);
        assert!(
            cache.get(&name, Some(299_999)).is_none(),
            "a record of another length is a miss, and the file goes"
        );
        assert!(!cache.path(&name).exists());
    }

    /// At start-up, temp files go and the files are indexed oldest first: over the size, the
    /// oldest are deleted.
    #[test]
    fn the_rebuild_keeps_the_newest_within_the_size() {
        let dir = tempfile::tempdir().unwrap();
        let names: Vec<String> = (0u8..3).map(|i| sha(&[i])).collect();
        let now = SystemTime::now();
        for (age, name) in (0u64..3).rev().zip(&names) {
            let path = super::super::super::blob::file_path(dir.path(), name);
            fs::create_dir_all(path.parent().unwrap()).unwrap();
            fs::write(&path, [0u8; 10]).unwrap();
            let when = now - std::time::Duration::from_secs(100 * (age + 1));
            File::options()
                .write(true)
                .open(&path)
                .unwrap()
                .set_modified(when)
                .unwrap();
        }
        fs::create_dir_all(dir.path().join(TMP)).unwrap();
        fs::write(dir.path().join(TMP).join("cut-short"), b"x").unwrap();

        let cache = open(dir.path(), 25);
        assert_eq!(fs::read_dir(dir.path().join(TMP)).unwrap().count(), 0);
        assert!(!cache.path(&names[0]).exists(), "the oldest went");
        assert!(cache.get(&names[1], Some(10)).is_some());
        assert!(cache.get(&names[2], Some(10)).is_some());
    }
}
