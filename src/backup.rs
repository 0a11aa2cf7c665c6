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
//! The backup is built in a hidden sibling of `DIR` and renamed to `DIR` only when complete, so
//! `DIR` is always either absent or a whole data dir that `mxmedia serve` can run on.

pub mod lines;
mod socket;

use std::{
    fs,
    io::{self, BufReader, BufWriter, Write},
    os::unix::{
        fs::{DirBuilderExt as _, MetadataExt as _},
        net::UnixStream,
    },
    path::{Path, PathBuf},
};

pub use self::socket::{BackupSocket, Handler};

use crate::{
    config::Config,
    federation::identity::GENERATED_KEY_FILE,
    store::{
        Store,
        backup::{BackupError, Placed, Restored, copy_blob_file, restore_dump, write_failure},
    },
};

/// The socket's name in the data dir.
pub const SOCKET_NAME: &str = "backup.sock";
/// What a client sends to ask for a dump.
const REQUEST: &[u8] = b"backup 1\n";
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
    pub files_linked: usize,
    pub files_copied: usize,
    pub file_bytes: u64,
    pub signing_key: SigningKey,
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
pub fn run(config: &Config, target: &Path) -> Result<Report, Error> {
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
    let mut partial_name = std::ffi::OsString::from(".");
    partial_name.push(name);
    partial_name.push(format!(".partial-{}", std::process::id()));
    let partial = parent.join(partial_name);
    // Private like the data dir: it holds users' media and perhaps the dev token.
    fs::DirBuilder::new()
        .mode(0o700)
        .create(&partial)
        .map_err(|source| Error::Target {
            path: partial.clone(),
            source,
        })?;
    let report = match fill(config, &partial) {
        Ok(report) => report,
        Err(e) => {
            let _ = fs::remove_dir_all(&partial);
            return Err(e);
        }
    };
    fs::rename(&partial, target).map_err(target_err)?;
    sync_dir(&parent).map_err(target_err)?;
    Ok(report)
}

fn fill(config: &Config, partial: &Path) -> Result<Report, Error> {
    let data_dir = &config.data_dir;
    let socket = data_dir.join(SOCKET_NAME);
    let socket_err = |source| Error::Socket {
        socket: socket.clone(),
        source,
    };
    let (source, restored, connection) = match UnixStream::connect(&socket) {
        Ok(mut stream) => {
            stream.write_all(REQUEST).map_err(socket_err)?;
            let restored = restore_dump(&mut BufReader::new(&stream), &partial.join("db"))?;
            // Kept open until the files are copied: the server removes none meanwhile.
            (Source::RunningServer, restored, Some(stream))
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
            (Source::StoppedDataDir, restored, None)
        }
    };
    let mut report = Report {
        source,
        trees: restored.stats.trees,
        entries: restored.stats.entries,
        files_linked: 0,
        files_copied: 0,
        file_bytes: 0,
        signing_key: SigningKey::None,
    };
    let (from, to) = (data_dir.join("blobs"), partial.join("blobs"));
    fs::create_dir_all(&to).map_err(BackupError::from)?;
    // With blobs in S3 the files are objects in the bucket, which the backup does not copy.
    let files: &[(String, u64)] = if config.store.s3.is_some() {
        &[]
    } else {
        &restored.files
    };
    for (sha256, len) in files {
        match copy_blob_file(&from, &to, sha256, *len)? {
            Placed::Linked => report.files_linked += 1,
            Placed::Copied => report.files_copied += 1,
        }
        report.file_bytes += len;
    }
    for dir in fs::read_dir(&to).map_err(BackupError::from)? {
        sync_dir(&dir.map_err(BackupError::from)?.path()).map_err(BackupError::from)?;
    }
    sync_dir(&to).map_err(BackupError::from)?;
    drop(connection);
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
