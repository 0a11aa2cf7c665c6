//! `mxmedia backup DIR`: a consistent copy of the data dir, taken while the server runs or not.
//!
//! sled lets one process open a database, so while the server runs it is the one that reads it.
//! It listens on a Unix socket in the data dir (`backup.sock`, mode 0600: only the service user
//! and root may connect), which offers exactly one thing: a dump of the database taken in one
//! pause of the writers (`Store::dump`). Nothing is reachable over the network, and the server
//! writes nothing outside its data dir, so the systemd sandbox stays as it is.
//!
//! The `backup` command does the rest in its own process: it rebuilds the database from the
//! dump in `DIR/db`, then links or copies the blob files it points at from `data_dir/blobs`.
//! Blob files are immutable once stored, and the server removes none while the command is
//! connected, so the copy matches the database even if uploads and deletions go on. With the
//! server stopped (no socket answers), the command opens the database itself and does the same.
//!
//! Beside the database and blobs it takes what a restore needs to be the same server: the
//! federation signing key (when it lives in the data dir; the report says when it does not) and
//! the dev token.
//!
//! With blobs in S3 the database points at objects in the bucket, which the bucket's sweep
//! removes once no record points at them: a backup of the database alone is only as good as
//! the bucket's own history (versioning, replication). `--include-s3-blobs` makes it whole: the
//! command then asks for the bytes of every blob it lacks, over the same connection (the
//! running server reads them from its backend; a stopped data dir's store is read in this
//! process), verifies each by its hash while receiving it, and keeps it in `DIR/blobs`, so the
//! backup runs with blobs on disk, or goes back to a bucket with `mxmedia migrate-store --to s3`.
//!
//! The backup is built in a hidden sibling of `DIR` and renamed to `DIR` only when complete, so
//! `DIR` is always either absent or a whole data dir that `mxmedia serve` can run on. The blobs
//! of a run that was killed or failed stay in its hidden sibling; the next run into the same
//! `DIR` takes them over (each was verified before it was kept) and fetches only the rest.

pub mod lines;
pub(crate) mod progress;
mod socket;

use std::{
    collections::HashSet,
    fs,
    io::{self, BufReader, BufWriter, Write},
    os::unix::{
        fs::{DirBuilderExt as _, MetadataExt as _},
        net::UnixStream,
    },
    path::{Path, PathBuf},
};

pub use self::socket::{BackupSocket, Handler};

use self::progress::Progress;
use crate::{
    config::Config,
    federation::identity::GENERATED_KEY_FILE,
    store::{
        Store,
        backup::{
            BackupError, Placed, Restored, copy_blob_file, receive_blob, restore_dump, stage_blob,
            write_failure,
        },
        blob::{self, BlobStore as _, FileBlobs, Staged, Staging},
    },
};

/// The socket's name in the data dir.
pub const SOCKET_NAME: &str = "backup.sock";
/// What a client sends to ask for a dump.
const REQUEST: &[u8] = b"backup 1\n";
/// What a client sends to ask for a dump and then for blobs by their hash.
const REQUEST_WITH_BLOBS: &[u8] = b"backup 2\n";
/// The hidden sibling of `DIR` a backup is built in is named `.DIR` + this + the process id.
const PARTIAL_MARK: &str = ".partial-";
/// Files beside the database that belong to a data dir. Without the signing key a restored
/// server would make a new one, which no remote server accepts until the homeserver publishes
/// it.
const EXTRA_FILES: &[&str] = &["dev-token", GENERATED_KEY_FILE];

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("{} already exists; give a directory that does not exist yet", .0.display())]
    TargetExists(PathBuf),
    #[error("{} has no database: not an mxmedia data dir, or nothing stored yet", .0.display())]
    NoDatabase(PathBuf),
    #[error(
        "could not open the database in {} (if mxmedia is running: its backup socket {} did \
         not answer either: {connect})",
        data_dir.display(),
        socket.display()
    )]
    Open {
        data_dir: PathBuf,
        socket: PathBuf,
        connect: io::Error,
        #[source]
        source: crate::store::StoreError,
    },
    #[error(
        "{} belongs to uid {owner} and the server is stopped: run the backup as that user \
         (e.g. `sudo -u mxmedia mxmedia backup …`), so files the database writes while open keep \
         their owner",
        data_dir.display()
    )]
    WrongUser { data_dir: PathBuf, owner: u32 },
    #[error("asking the running server over {}", socket.display())]
    Socket {
        socket: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("{}", path.display())]
    Target {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error(transparent)]
    Copy(#[from] BackupError),
    #[error(
        "{source:#}; the {kept} blobs copied so far stay in {}: run the same command again to \
         go on from there",
        partial.display()
    )]
    Resumable {
        partial: PathBuf,
        kept: usize,
        source: Box<Error>,
    },
}

/// What `mxmedia backup` was asked to do.
#[derive(Debug, Clone, Copy, Default)]
pub struct Options {
    /// Also copy into the backup every blob the data dir lacks (with blobs in S3: all of
    /// them), read from the server's backend, so the backup does not depend on the bucket.
    pub include_s3_blobs: bool,
    /// Show a progress bar (a terminal) or print a progress line every few seconds.
    pub progress_bar: bool,
}

/// Whether the server was running when the backup was taken.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Source {
    RunningServer,
    StoppedDataDir,
}

/// What a backup holds.
#[derive(Debug)]
pub struct Report {
    pub source: Source,
    pub trees: usize,
    pub entries: u64,
    /// Blob files taken from the data dir's `blobs/`.
    pub files_linked: usize,
    pub files_copied: usize,
    /// Blobs fetched from the server's backend (the bucket), with `include_s3_blobs`.
    pub files_fetched: usize,
    /// Blobs taken over from an earlier run that did not finish.
    pub files_resumed: usize,
    /// Bytes of all the blob files in the backup.
    pub file_bytes: u64,
    /// With blobs in S3 and without `include_s3_blobs`: the bucket, and the blobs the backup
    /// points at there without holding them.
    pub left_in_bucket: Option<LeftInBucket>,
    pub signing_key: SigningKey,
}

/// Blobs the backup's database points at in the bucket, not copied.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LeftInBucket {
    pub bucket: String,
    pub prefix: String,
    pub files: usize,
    pub bytes: u64,
}

/// Where the federation signing key is, as far as the backup is concerned.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SigningKey {
    /// In the data dir, so in the backup (this path, relative to the data dir).
    InBackup(PathBuf),
    /// `federation.signing_key_path` points outside the data dir: not in the backup.
    Elsewhere(PathBuf),
    /// None yet: the server makes one at its first start.
    None,
}

/// Backs up the data dir of `config` into `target`, which must not exist yet.
pub fn run(config: &Config, target: &Path, options: &Options) -> Result<Report, Error> {
    let target_err = |source| Error::Target {
        path: target.to_path_buf(),
        source,
    };
    if target.symlink_metadata().is_ok() {
        return Err(Error::TargetExists(target.to_path_buf()));
    }
    let Some(name) = target.file_name() else {
        return Err(target_err(io::Error::new(
            io::ErrorKind::InvalidInput,
            "not a directory name",
        )));
    };
    let parent = match target.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    };
    let mut prefix = std::ffi::OsString::from(".");
    prefix.push(name);
    prefix.push(PARTIAL_MARK);
    let mut partial_name = prefix.clone();
    partial_name.push(std::process::id().to_string());
    let partial = parent.join(partial_name);
    // Private like the data dir: it holds users' media and perhaps the dev token.
    fs::DirBuilder::new()
        .mode(0o700)
        .create(&partial)
        .map_err(|source| Error::Target {
            path: partial.clone(),
            source,
        })?;
    let resumed = take_over_stale(&parent, &prefix, &partial);
    let report = match fill(config, &partial, options, resumed) {
        Ok(report) => report,
        Err(e) => {
            let kept = count_blob_files(&partial.join("blobs"));
            if options.include_s3_blobs && kept > 0 {
                return Err(Error::Resumable {
                    partial,
                    kept,
                    source: Box::new(e),
                });
            }
            let _ = fs::remove_dir_all(&partial);
            return Err(e);
        }
    };
    fs::rename(&partial, target).map_err(target_err)?;
    sync_dir(&parent).map_err(target_err)?;
    Ok(report)
}

/// Takes over the blobs of the partial backups into the same `DIR` whose process is gone
/// (killed, or failed), moving them into `partial`, and removes those partial backups. Returns
/// whether any blobs were taken over.
fn take_over_stale(parent: &Path, prefix: &std::ffi::OsStr, partial: &Path) -> bool {
    let Ok(entries) = fs::read_dir(parent) else {
        return false;
    };
    let prefix = prefix.to_string_lossy();
    let mut taken = false;
    for entry in entries.flatten() {
        let path = entry.path();
        let name = entry.file_name();
        let Some(pid) = name
            .to_str()
            .and_then(|n| n.strip_prefix(prefix.as_ref()))
            .and_then(|pid| pid.parse::<u32>().ok())
        else {
            continue;
        };
        if path == partial || process_alive(pid) {
            continue;
        }
        if !taken && fs::rename(path.join("blobs"), partial.join("blobs")).is_ok() {
            taken = true;
        }
        let _ = fs::remove_dir_all(&path);
    }
    taken
}

/// Whether process `pid` exists (Linux: it has a `/proc` entry), whoever it belongs to.
fn process_alive(pid: u32) -> bool {
    Path::new("/proc").join(pid.to_string()).exists()
}

fn count_blob_files(root: &Path) -> usize {
    fs::read_dir(root)
        .into_iter()
        .flatten()
        .flatten()
        .map(|shard| fs::read_dir(shard.path()).map_or(0, Iterator::count))
        .sum()
}

/// Where the bytes of blobs missing from the data dir come from.
enum Fetcher {
    /// The running server, over the backup connection.
    Server {
        reader: BufReader<UnixStream>,
        writer: BufWriter<UnixStream>,
    },
    /// The stopped data dir's store, opened by this process.
    Local(Store),
}

impl Fetcher {
    fn fetch(&mut self, tmp: &Path, sha256: &str, len: u64) -> Result<Staged, BackupError> {
        let staging = Staging::new(tmp)?;
        match self {
            Self::Server { reader, writer } => {
                writer.write_all(sha256.as_bytes())?;
                writer.write_all(b"\n")?;
                writer.flush()?;
                receive_blob(reader, staging, sha256, len)
            }
            Self::Local(store) => {
                let mut blob =
                    store
                        .open_held_blob(sha256)
                        .map_err(|e| BackupError::UnreadableBlob {
                            sha256: sha256.to_owned(),
                            message: e.to_string(),
                        })?;
                stage_blob(&mut blob, staging, sha256, len)
            }
        }
    }
}

fn fill(
    config: &Config,
    partial: &Path,
    options: &Options,
    resumed: bool,
) -> Result<Report, Error> {
    let data_dir = &config.data_dir;
    let socket = data_dir.join(SOCKET_NAME);
    let socket_err = |source| Error::Socket {
        socket: socket.clone(),
        source,
    };
    let request = if options.include_s3_blobs {
        REQUEST_WITH_BLOBS
    } else {
        REQUEST
    };
    let (source, restored, mut fetcher) = match UnixStream::connect(&socket) {
        Ok(stream) => {
            let mut writer = BufWriter::new(stream.try_clone().map_err(socket_err)?);
            writer.write_all(request).map_err(socket_err)?;
            writer.flush().map_err(socket_err)?;
            let mut reader = BufReader::new(stream);
            let restored = restore_dump(&mut reader, &partial.join("db"))?;
            // Kept open until the blobs are copied: the server removes none meanwhile.
            (
                Source::RunningServer,
                restored,
                Fetcher::Server { reader, writer },
            )
        }
        Err(connect) => {
            let Ok(db) = fs::metadata(data_dir.join("db")) else {
                return Err(Error::NoDatabase(data_dir.clone()));
            };
            // sled writes while open (snapshots, recovery): as root it would leave files the
            // service user may not be able to replace.
            if db.uid() != nix::unistd::geteuid().as_raw() {
                return Err(Error::WrongUser {
                    data_dir: data_dir.clone(),
                    owner: db.uid(),
                });
            }
            let store = Store::open(config).map_err(|source| Error::Open {
                data_dir: data_dir.clone(),
                socket: socket.clone(),
                connect,
                source,
            })?;
            let restored = dump_in_process(&store, &partial.join("db"))?;
            (Source::StoppedDataDir, restored, Fetcher::Local(store))
        }
    };
    let mut report = Report {
        source,
        trees: restored.stats.trees,
        entries: restored.stats.entries,
        files_linked: 0,
        files_copied: 0,
        files_fetched: 0,
        files_resumed: 0,
        file_bytes: 0,
        left_in_bucket: None,
        signing_key: SigningKey::None,
    };
    copy_blobs(
        config,
        partial,
        options,
        &restored,
        &mut fetcher,
        &mut report,
    )?;
    if resumed {
        prune_unlisted(&partial.join("blobs"), &restored.files);
    }
    let to = partial.join("blobs");
    for dir in fs::read_dir(&to).map_err(BackupError::from)? {
        sync_dir(&dir.map_err(BackupError::from)?.path()).map_err(BackupError::from)?;
    }
    sync_dir(&to).map_err(BackupError::from)?;
    drop(fetcher);
    for name in EXTRA_FILES {
        if copy_extra(data_dir, partial, Path::new(name))? && *name == GENERATED_KEY_FILE {
            report.signing_key = SigningKey::InBackup(PathBuf::from(name));
        }
    }
    if let Some(path) = &config.federation.signing_key_path {
        report.signing_key = match in_data_dir(data_dir, path) {
            Some(relative) if copy_extra(data_dir, partial, &relative)? => {
                SigningKey::InBackup(relative)
            }
            _ => SigningKey::Elsewhere(path.clone()),
        };
    }
    sync_dir(partial).map_err(BackupError::from)?;
    Ok(report)
}

/// Puts every blob file the backup's database points at into `partial/blobs`: taken over from
/// an earlier run, linked or copied from the data dir, fetched from the server's backend (with
/// `include_s3_blobs`), or, with blobs in S3, counted as left in the bucket.
fn copy_blobs(
    config: &Config,
    partial: &Path,
    options: &Options,
    restored: &Restored,
    fetcher: &mut Fetcher,
    report: &mut Report,
) -> Result<(), Error> {
    let (from, to) = (config.data_dir.join("blobs"), partial.join("blobs"));
    let target = FileBlobs::open(to.clone()).map_err(BackupError::from)?;
    let tmp = partial.join("tmp");
    fs::create_dir_all(&tmp).map_err(BackupError::from)?;
    let total_bytes = restored.files.iter().map(|(_, len)| len).sum();
    let total_files = u64::try_from(restored.files.len()).unwrap_or(u64::MAX);
    let mut progress = Progress::new("backup", total_files, total_bytes, options.progress_bar);
    let in_bucket = config.store.s3.as_ref();
    let mut left = 0usize;
    let mut left_bytes = 0u64;
    let copied = restored.files.iter().try_for_each(|(sha256, len)| {
        let len = *len;
        progress.blob(len);
        if has_len(&blob::file_path(&to, sha256), len) {
            report.files_resumed += 1;
        } else if (in_bucket.is_none() && !options.include_s3_blobs)
            || has_len(&blob::file_path(&from, sha256), len)
        {
            match copy_blob_file(&from, &to, sha256, len)? {
                Placed::Linked => report.files_linked += 1,
                Placed::Copied => report.files_copied += 1,
            }
        } else if options.include_s3_blobs {
            let staged = fetcher.fetch(&tmp, sha256, len)?;
            target.persist(staged)?;
            report.files_fetched += 1;
        } else {
            left += 1;
            left_bytes += len;
            return Ok(());
        }
        report.file_bytes += len;
        Ok::<_, BackupError>(())
    });
    progress.finish();
    copied?;
    let _ = fs::remove_dir_all(&tmp);
    if left > 0
        && let Some(s3) = in_bucket
    {
        report.left_in_bucket = Some(LeftInBucket {
            bucket: s3.bucket.clone(),
            prefix: s3.prefix.clone(),
            files: left,
            bytes: left_bytes,
        });
    }
    Ok(())
}

/// Whether `path` is a file of `len` bytes. Blob files are complete once they have their name
/// (verified, flushed, then renamed), so the length tells a whole one.
fn has_len(path: &Path, len: u64) -> bool {
    fs::metadata(path).is_ok_and(|m| m.is_file() && m.len() == len)
}

/// Removes the blob files no record of the backup points at: taken over from an earlier run,
/// whose media was deleted since.
fn prune_unlisted(root: &Path, files: &[(String, u64)]) {
    let listed: HashSet<&str> = files.iter().map(|(sha256, _)| sha256.as_str()).collect();
    for shard in fs::read_dir(root).into_iter().flatten().flatten() {
        for file in fs::read_dir(shard.path()).into_iter().flatten().flatten() {
            let name = file.file_name();
            if !name.to_str().is_some_and(|n| listed.contains(n)) {
                let _ = fs::remove_file(file.path());
            }
        }
    }
}

/// Copies `relative` from the data dir into the backup, mode and all, if it exists.
fn copy_extra(data_dir: &Path, partial: &Path, relative: &Path) -> Result<bool, BackupError> {
    let from = data_dir.join(relative);
    if !from.is_file() {
        return Ok(false);
    }
    let to = partial.join(relative);
    if let Some(dir) = to.parent() {
        fs::create_dir_all(dir)?;
    }
    // `fs::copy` keeps the mode: the key and the token stay readable by their owner only.
    fs::copy(&from, &to)?;
    fs::File::open(&to)?.sync_all()?;
    Ok(true)
}

/// `path` relative to the data dir, if it lies inside it.
fn in_data_dir(data_dir: &Path, path: &Path) -> Option<PathBuf> {
    let dir = data_dir.canonicalize().ok()?;
    let path = path.canonicalize().ok()?;
    path.strip_prefix(&dir).ok().map(Path::to_path_buf)
}

/// The same dump as over the socket, from a store this process opened.
fn dump_in_process(store: &Store, db_dir: &Path) -> Result<Restored, BackupError> {
    let (sender, receiver) = UnixStream::pair()?;
    std::thread::scope(|scope| {
        let writer = scope.spawn(move || {
            let mut out = BufWriter::new(&sender);
            if let Err(e) = store.dump(&mut out) {
                let _ = write_failure(&mut out, &e.to_string());
            }
        });
        let restored = restore_dump(&mut BufReader::new(&receiver), db_dir);
        // The reader stopped early only on an error; closing lets a blocked writer finish.
        drop(receiver);
        let _ = writer.join();
        restored
    })
}

fn sync_dir(path: &Path) -> io::Result<()> {
    fs::File::open(path)?.sync_all()
}
