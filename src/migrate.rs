//! `mxmedia migrate-store --to s3|fs`: copies every blob kept as a file from one backend (the
//! data dir's `blobs/`, or the S3 bucket of `[store.s3]`) to the other, while the server keeps
//! serving from the one it runs on. Blobs kept inline in sled stay where they are.
//!
//! Which blobs: every file blob a record points at (`Store::file_blobs_after`), read from the
//! running server over the data dir's socket (`socket`), or from the store this process opens
//! when the server is stopped. Each is streamed through a staging file while hashed, written to
//! the target only if its bytes hash to its name, and checked there by length (`copy`). A blob
//! present in the target with its record's length was verified when written, so a rerun (after
//! a kill -9, say) skips it. While the command is connected the server removes no blob file,
//! so nothing listed vanishes midway.
//!
//! Uploads go on meanwhile: a pass that copied anything is followed by another, which picks
//! up the blobs recorded since; the README says to run the command once more right before
//! switching. After the switch to `s3`, blobs uploaded between that last run and the restart
//! are still served from `data_dir/blobs` (`store::backends::Fallback`), and the next run
//! copies them. `--remove-source` removes the old copies, only once the running server reports
//! that it reads from the target, and only those verified there.

mod copy;
pub mod socket;

use std::{
    collections::HashSet,
    fs, io,
    os::unix::{
        fs::{DirBuilderExt as _, MetadataExt as _},
        net::UnixStream,
    },
    path::{Path, PathBuf},
};

use self::copy::{Outcome, copy_blob};
use crate::{
    backup::{SOCKET_NAME, progress::Progress},
    config::Config,
    store::{
        Store, StoreError,
        backends::{Backend, FileBlob, open_backend},
        blob::BlobStore,
    },
};

/// Passes at most: the first copies everything, each further one what was uploaded during
/// the previous one. A server under constant upload load never reaches an empty pass.
const MAX_PASSES: u32 = 3;
/// File blobs read from a stopped store per page, as the socket pages them.
const PAGE: usize = 1000;
/// Failed blobs named one by one on stderr; the rest are only counted.
const MAX_NOTES: u64 = 100;

/// What `mxmedia migrate-store` was asked to do.
#[derive(Debug, Clone)]
pub struct Options {
    /// The backend to copy to; the source is the other one.
    pub to: Backend,
    /// Check which blobs the target lacks (and that the source has them), write nothing.
    pub dry_run: bool,
    /// Once every blob is verified in the target, remove the source copies.
    pub remove_source: bool,
    /// Show a progress bar (a terminal) or print a progress line every few seconds.
    pub progress_bar: bool,
}

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(
        "--to {0}: [store.s3] has no bucket; give the command MXMEDIA_STORE__S3__BUCKET and the \
         other MXMEDIA_STORE__S3__* settings (the server keeps running on what it was started with)"
    )]
    NoBucket(Backend),
    #[error("opening the {backend} backend")]
    Backend {
        backend: Backend,
        #[source]
        source: StoreError,
    },
    #[error("{} has no database: not an mxmedia data dir, or nothing stored yet", .0.display())]
    NoDatabase(PathBuf),
    #[error(
        "{} belongs to uid {owner}: run the migration as that user (e.g. `sudo -u mxmedia mxmedia \
         migrate-store …`), so the files it writes belong to the server",
        data_dir.display()
    )]
    WrongUser { data_dir: PathBuf, owner: u32 },
    #[error("opening the store in {}", data_dir.display())]
    Store {
        data_dir: PathBuf,
        #[source]
        source: StoreError,
    },
    #[error("listing the running server's blobs over {}", socket.display())]
    Socket {
        socket: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("listing the stopped store's blobs")]
    List(#[source] StoreError),
    #[error(
        "--remove-source: {reason}; the source copies stay. Switch the server to {to} (see the \
         README, \"Moving media to object storage\"), restart it, and run this again"
    )]
    NotSwitched { to: Backend, reason: String },
    #[error("{}", path.display())]
    Io {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
}

/// Who listed the blobs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Source {
    /// The running server, which reads from this backend.
    RunningServer(Backend),
    StoppedDataDir,
}

/// What a migration did.
#[derive(Debug, Clone)]
pub struct Report {
    pub source: Source,
    pub from: Backend,
    pub to: Backend,
    pub dry_run: bool,
    /// Passes over the records.
    pub passes: u32,
    /// Blobs copied and verified (in a dry run: that would be copied).
    pub copied: u64,
    /// Blobs the target had already.
    pub already_there: u64,
    /// Blobs not copied: corrupt or missing in the source, or a backend failed.
    pub failed: u64,
    pub bytes_copied: u64,
    pub bytes_already_there: u64,
    /// With `--remove-source`: source copies removed, and bytes.
    pub removed: u64,
    pub bytes_removed: u64,
}

impl Report {
    /// Nothing failed: every file blob is in the target.
    pub fn success(&self) -> bool {
        self.failed == 0
    }
}

/// Where the list of blobs comes from.
enum Records {
    Server(socket::Client),
    Local(Store),
}

impl Records {
    fn page(&mut self, after: Option<&str>) -> Result<Vec<FileBlob>, Error> {
        match self {
            Self::Server(client) => client.page(after).map_err(|source| Error::Socket {
                socket: PathBuf::from(SOCKET_NAME),
                source,
            }),
            Self::Local(store) => store.file_blobs_after(after, PAGE).map_err(Error::List),
        }
    }

    /// Runs `each` on every file blob, a page at a time.
    fn for_each(&mut self, each: &mut dyn FnMut(&FileBlob)) -> Result<(), Error> {
        let mut after: Option<String> = None;
        loop {
            let page = self.page(after.as_deref())?;
            let Some(last) = page.last() else {
                return Ok(());
            };
            after = Some(last.sha256.clone());
            page.iter().for_each(&mut *each);
        }
    }
}

/// Copies the file blobs of the data dir of `config` to `options.to`.
pub fn run(config: &Config, options: &Options) -> Result<Report, Error> {
    let from = match options.to {
        Backend::Fs => Backend::S3,
        Backend::S3 => Backend::Fs,
    };
    if !s3_configured(config) {
        return Err(Error::NoBucket(options.to));
    }
    let data_dir = &config.data_dir;
    if !data_dir.join("db").exists() {
        return Err(Error::NoDatabase(data_dir.clone()));
    }
    // Files written here (staging, and the blob files of `--to fs`) must be the server's.
    if !options.dry_run
        && let Ok(meta) = fs::metadata(data_dir)
        && meta.uid() != nix::unistd::geteuid().as_raw()
    {
        return Err(Error::WrongUser {
            data_dir: data_dir.clone(),
            owner: meta.uid(),
        });
    }
    let (mut records, source, totals) = connect(config)?;
    if options.remove_source {
        match source {
            Source::RunningServer(active) if active == options.to => {}
            Source::RunningServer(active) => {
                return Err(Error::NotSwitched {
                    to: options.to,
                    reason: format!("the running server still reads from {active}"),
                });
            }
            Source::StoppedDataDir => {
                return Err(Error::NotSwitched {
                    to: options.to,
                    reason: "the server is stopped, so nothing confirms which backend it reads"
                        .to_owned(),
                });
            }
        }
    }
    let open = |backend| {
        open_backend(config, backend).map_err(|source| Error::Backend { backend, source })
    };
    let (source_store, target_store) = (open(from)?, open(options.to)?);
    let staging = if options.dry_run {
        None
    } else {
        Some(StagingDir::create(data_dir)?)
    };
    let mut report = Report {
        source,
        from,
        to: options.to,
        dry_run: options.dry_run,
        passes: 0,
        copied: 0,
        already_there: 0,
        failed: 0,
        bytes_copied: 0,
        bytes_already_there: 0,
        removed: 0,
        bytes_removed: 0,
    };
    let mut progress = Progress::new("migrate-store", totals.0, totals.1, options.progress_bar);
    let outcome = copy_passes(
        &mut records,
        &*source_store,
        &*target_store,
        staging.as_ref().map(|s| s.dir.as_path()),
        &mut report,
        &mut progress,
    );
    progress.finish();
    drop(staging);
    outcome?;
    if options.remove_source && !options.dry_run && report.success() {
        remove_source(&mut records, &*source_store, &*target_store, &mut report)?;
        if from == Backend::Fs {
            prune_empty_dirs(&data_dir.join("blobs"));
        }
    }
    Ok(report)
}

/// Whether the command was given an S3 bucket: both directions need it.
fn s3_configured(config: &Config) -> bool {
    config.store.s3.is_some()
}

/// The running server's records over its socket, or, with it stopped, the store itself.
fn connect(config: &Config) -> Result<(Records, Source, (u64, u64)), Error> {
    let data_dir = &config.data_dir;
    let socket = data_dir.join(SOCKET_NAME);
    if let Ok(stream) = UnixStream::connect(&socket) {
        let client = socket::Client::start(stream).map_err(|source| Error::Socket {
            socket: socket.clone(),
            source,
        })?;
        let (source, totals) = (
            Source::RunningServer(client.backend),
            (client.files, client.bytes),
        );
        return Ok((Records::Server(client), source, totals));
    }
    let store = Store::open(config).map_err(|source| Error::Store {
        data_dir: data_dir.clone(),
        source,
    })?;
    let totals = store.file_blob_totals().map_err(Error::List)?;
    Ok((Records::Local(store), Source::StoppedDataDir, totals))
}

/// The copy passes: the first over every blob, each further one only if the one before copied
/// something, since uploads may have come meanwhile.
fn copy_passes(
    records: &mut Records,
    source: &dyn BlobStore,
    target: &dyn BlobStore,
    tmp_dir: Option<&Path>,
    report: &mut Report,
    progress: &mut Progress,
) -> Result<(), Error> {
    // Hashes that failed, so a later pass that fails them again counts them once.
    let mut failed: HashSet<String> = HashSet::new();
    for pass in 1..=MAX_PASSES {
        report.passes = pass;
        let mut copied_now = 0u64;
        records.for_each(&mut |blob| {
            let outcome = copy_blob(source, target, tmp_dir, blob);
            if pass == 1 {
                progress.blob(blob.len);
            }
            match outcome {
                Outcome::AlreadyThere if pass == 1 => {
                    report.already_there += 1;
                    report.bytes_already_there += blob.len;
                }
                Outcome::AlreadyThere => {}
                Outcome::Copied => {
                    copied_now += 1;
                    report.copied += 1;
                    report.bytes_copied += blob.len;
                    if failed.remove(&blob.sha256) {
                        report.failed = report.failed.saturating_sub(1);
                    }
                }
                Outcome::Failed(why) => {
                    if failed.insert(blob.sha256.clone()) {
                        report.failed += 1;
                        if report.failed <= MAX_NOTES {
                            progress.note(&format!("blob {}: {why}", blob.sha256));
                        }
                    }
                }
            }
        })?;
        if tmp_dir.is_none() || copied_now == 0 {
            break;
        }
    }
    Ok(())
}

/// Removes from `source` every blob verified in `target`.
fn remove_source(
    records: &mut Records,
    source: &dyn BlobStore,
    target: &dyn BlobStore,
    report: &mut Report,
) -> Result<(), Error> {
    let mut first_error: Option<io::Error> = None;
    records.for_each(&mut |blob| {
        if first_error.is_some() {
            return;
        }
        let removed = copy::stored_len(target, &blob.sha256).and_then(|found| {
            if found != Some(blob.len) {
                return Ok(false);
            }
            source.remove(&blob.sha256).map(|()| true)
        });
        match removed {
            Ok(true) => {
                report.removed += 1;
                report.bytes_removed += blob.len;
            }
            Ok(false) => {}
            Err(e) => first_error = Some(e),
        }
    })?;
    match first_error {
        Some(source) => Err(Error::Io {
            path: PathBuf::from(format!("removing source copies from {}", report.from)),
            source,
        }),
        None => Ok(()),
    }
}

/// Removes the blob directory's empty shard directories, and the directory itself once empty:
/// a server started on S3 then stops looking there for blobs missing from the bucket.
fn prune_empty_dirs(root: &Path) {
    if let Ok(entries) = fs::read_dir(root) {
        for entry in entries.flatten() {
            // Fails, as meant, when the shard still holds a file.
            let _ = fs::remove_dir(entry.path());
        }
    }
    let _ = fs::remove_dir(root);
}

/// This run's staging directory in the data dir's tmp dir (same file system as the blob
/// directory, so `--to fs` renames into place). Removed when dropped; those of killed runs are
/// removed by the next run, and by the server's next start.
struct StagingDir {
    dir: PathBuf,
}

impl StagingDir {
    fn create(data_dir: &Path) -> Result<Self, Error> {
        let tmp = data_dir.join("tmp");
        let io_err = |path: &Path| {
            let path = path.to_path_buf();
            move |source| Error::Io { path, source }
        };
        fs::create_dir_all(&tmp).map_err(io_err(&tmp))?;
        crate::import::staging::remove_stale(&tmp, "migrate-");
        let dir = tmp.join(format!("migrate-{}", std::process::id()));
        fs::DirBuilder::new()
            .mode(0o700)
            .create(&dir)
            .map_err(io_err(&dir))?;
        Ok(Self { dir })
    }
}

impl Drop for StagingDir {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.dir);
    }
}

#[cfg(test)]
#[allow(
    clippy::unwrap_used,
    clippy::indexing_slicing,
    reason = "test code: a failed unwrap or index is a test failure"
)]
mod tests {
    use mxmedia_proto::ids::{MediaId, ServerName};

    use super::*;
    use crate::{
        model::id::MediaKey,
        store::{
            Expect, Upload,
            blob::{FileBlobs, file_path},
        },
    };

    /// Stores `bytes` as a new local upload: its key and hash (also for `socket_tests`).
    pub(super) fn put_keyed(store: &Store, bytes: &[u8]) -> (MediaKey, String) {
        let key = MediaKey {
            server_name: "localhost".parse::<ServerName>().unwrap(),
            media_id: MediaId::generate(),
        };
        let mut staging = store.stage().unwrap();
        staging.write(bytes).unwrap();
        let staged = staging.finish().unwrap();
        let sha256 = staged.sha256.clone();
        let upload = Upload {
            content_type: "text/plain".into(),
            filename: None,
            uploader: "@a:localhost",
            created_at: 1,
            expect: Expect::Absent,
        };
        store.commit_upload(&key, staged, upload).unwrap();
        (key, sha256)
    }

    fn put(store: &Store, bytes: &[u8]) -> String {
        put_keyed(store, bytes).1
    }

    fn report() -> Report {
        Report {
            source: Source::StoppedDataDir,
            from: Backend::Fs,
            to: Backend::Fs,
            dry_run: false,
            passes: 0,
            copied: 0,
            already_there: 0,
            failed: 0,
            bytes_copied: 0,
            bytes_already_there: 0,
            removed: 0,
            bytes_removed: 0,
        }
    }

    /// Every file blob the records point at reaches the target byte for byte (inline ones stay
    /// in sled), a rerun copies nothing, a corrupt source blob is counted as failed and not
    /// copied, and removing the source takes only blobs verified in the target.
    #[test]
    fn passes_copy_every_file_blob_once_and_skip_corrupt_ones() {
        let dir = tempfile::tempdir().unwrap();
        let config = Config {
            data_dir: dir.path().to_path_buf(),
            ..Config::default()
        };
        let store = Store::open(&config).unwrap();
        let blobs: Vec<(String, Vec<u8>)> = (0..25u8)
            .map(|i| {
                let bytes = vec![i; 10_000 + usize::from(i) * 1000];
                (put(&store, &bytes), bytes)
            })
            .collect();
        let inline = put(&store, b"small: kept in sled");
        let from_root = dir.path().join("blobs");
        let to_root = dir.path().join("elsewhere");
        let source = FileBlobs::open(from_root.clone()).unwrap();
        let target = FileBlobs::open(to_root.clone()).unwrap();
        let tmp = StagingDir::create(dir.path()).unwrap();
        let mut records = Records::Local(store.clone());
        let mut progress = Progress::new("migrate-store", 0, 0, false);

        let mut first = report();
        copy_passes(
            &mut records,
            &source,
            &target,
            Some(&tmp.dir),
            &mut first,
            &mut progress,
        )
        .unwrap();
        assert_eq!(
            (first.copied, first.already_there, first.failed),
            (25, 0, 0)
        );
        // A pass copied something, so a second one looked for uploads made meanwhile.
        assert_eq!(first.passes, 2);
        for (sha256, bytes) in &blobs {
            assert_eq!(&std::fs::read(file_path(&to_root, sha256)).unwrap(), bytes);
        }
        assert!(!file_path(&to_root, &inline).exists());

        // A new upload, and one source blob rotting: the rerun copies only the new one.
        let (new_sha, new_bytes) = (put(&store, &[7u8; 50_000]), vec![7u8; 50_000]);
        let rotten = {
            let (sha256, bytes) = &blobs[3];
            std::fs::remove_file(file_path(&to_root, sha256)).unwrap();
            let mut rotted = bytes.clone();
            rotted[100] ^= 1;
            std::fs::write(file_path(&from_root, sha256), rotted).unwrap();
            sha256.clone()
        };
        let mut second = report();
        copy_passes(
            &mut records,
            &source,
            &target,
            Some(&tmp.dir),
            &mut second,
            &mut progress,
        )
        .unwrap();
        assert_eq!(
            (second.copied, second.already_there, second.failed),
            (1, 24, 1)
        );
        assert_eq!(
            std::fs::read(file_path(&to_root, &new_sha)).unwrap(),
            new_bytes
        );
        assert!(!file_path(&to_root, &rotten).exists());
        assert!(!second.success());

        remove_source(&mut records, &source, &target, &mut second).unwrap();
        assert_eq!(second.removed, 25);
        assert!(
            file_path(&from_root, &rotten).exists(),
            "unverified copy removed"
        );
        assert!(!file_path(&from_root, &new_sha).exists());
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, reason = "test code")]
mod socket_tests {
    use std::os::unix::net::UnixStream;

    use super::{tests::put_keyed as put, *};
    use crate::{
        backup::{BackupSocket, Handler},
        store::blob::file_path,
    };

    const HANDLERS: &[(&[u8], Handler)] = &[(socket::REQUEST, socket::serve)];

    /// The running server lists every file blob over its socket, page by page, with its
    /// backend; a blob deleted while the migration is connected keeps its file until the
    /// migration hangs up, so a listed blob never vanishes before it is copied.
    #[test]
    fn running_server_lists_blobs_and_keeps_them_while_connected() {
        let dir = tempfile::tempdir().unwrap();
        let config = Config {
            data_dir: dir.path().to_path_buf(),
            ..Config::default()
        };
        let store = Store::open(&config).unwrap();
        let mut shas: Vec<String> = (0..1010u32)
            .map(|i| put(&store, &[i.to_be_bytes().as_slice(); 1300].concat()).1)
            .collect();
        let (doomed, doomed_sha) = put(&store, &[9u8; 9000]);
        shas.push(doomed_sha.clone());
        shas.sort();
        let _socket = BackupSocket::listen_with(store.clone(), HANDLERS).unwrap();

        let stream = UnixStream::connect(dir.path().join(SOCKET_NAME)).unwrap();
        let mut records = Records::Server(socket::Client::start(stream).unwrap());
        let Records::Server(client) = &records else {
            unreachable!()
        };
        assert_eq!(client.backend, Backend::Fs);
        assert_eq!(client.files, 1011);
        store.delete_media(&doomed).unwrap();
        let blob_file = file_path(&dir.path().join("blobs"), &doomed_sha);
        assert!(blob_file.exists(), "removed while a migration is connected");

        let mut listed = Vec::new();
        records
            .for_each(&mut |b| listed.push(b.sha256.clone()))
            .unwrap();
        // The deleted blob's record is gone, so it is no longer listed; all others are.
        shas.retain(|s| *s != doomed_sha);
        assert_eq!(listed, shas);

        drop(records);
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        while blob_file.exists() {
            assert!(
                std::time::Instant::now() < deadline,
                "the removal never came"
            );
            std::thread::sleep(std::time::Duration::from_millis(10));
        }
    }
}
