//! `mxmedia import synapse`: brings a Synapse media repository's media into mxmedia, keeping
//! every `mxc://` URI, so the proxy can be switched from Synapse's media paths to mxmedia with
//! nothing lost.
//!
//! The rows of Synapse's database (`synapse` module) are streamed in batches. For each batch
//! the store says which ids it already has; each new item's file is copied into the data dir's
//! tmp dir while hashed (or hard-linked with `--link`, then hashed), checked against the length
//! and sha256 Synapse recorded, and the batch is committed in one transaction
//! (`Store::commit_import`). An id already stored is never touched again, so a second run
//! imports only what is new, and a run killed at any point leaves whole items or none: staged
//! files not yet committed are in tmp/, which the next run (and every server start) empties.
//!
//! With the server running, sled is its alone: the records go over the data dir's socket and
//! the server commits them (`socket`); with it stopped, this process opens the store itself.
//! Either way the files are staged by this process, so it must run as the data dir's owner.

mod progress;
pub mod socket;
pub mod synapse;

use std::{
    collections::BTreeMap,
    fs,
    io::{self, Read, Write},
    os::unix::{
        fs::{DirBuilderExt as _, MetadataExt as _},
        net::UnixStream,
    },
    path::{Path, PathBuf},
};

use sha2::{Digest, Sha256};

use self::{
    progress::Progress,
    synapse::{Database, Row, SourceError, Table},
};
use crate::{
    backup::SOCKET_NAME,
    clock::now_ms,
    config::Config,
    store::{
        Store,
        blob::CHUNK_SIZE,
        import::{ImportContent, ImportItem, ImportOutcome, ImportRecord, Known},
    },
};

/// Rows looked up and committed together: one transaction and one flush per batch.
const BATCH_ROWS: usize = 256;
/// A batch is committed early once its files reach this many bytes, so a crash loses little.
const BATCH_BYTES: u64 = 256 * 1024 * 1024;

/// What `mxmedia import synapse` was asked to do.
#[derive(Debug, Clone)]
pub struct Options {
    /// Synapse's `media_store_path`.
    pub media_store: PathBuf,
    /// A SQLite file or a `postgres://` URL.
    pub database: String,
    /// Also import `remote_media_cache`, media Synapse fetched from other servers.
    pub remote: bool,
    /// Hard-link files instead of copying them (same file system only).
    pub link: bool,
    /// Read and check everything, write nothing.
    pub dry_run: bool,
    /// Where the ids of items not imported, and why, are written.
    pub problems_file: PathBuf,
    /// Show a progress bar (a terminal) or print a progress line every few seconds.
    pub progress_bar: bool,
}

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("{}: not a directory (give Synapse's media_store_path)", .0.display())]
    NoMediaStore(PathBuf),
    #[error(transparent)]
    Source(#[from] SourceError),
    #[error(
        "{count} media rows belong to users of another server than {server_name} (e.g. {examples}): \
         wrong database, or SERVER_NAME is not the homeserver's server_name; nothing imported"
    )]
    ForeignUsers {
        server_name: String,
        count: u64,
        examples: String,
    },
    #[error(
        "{} belongs to uid {owner}: run the import as that user (e.g. `sudo -u mxmedia mxmedia \
         import …`), so the files it brings in belong to the server",
        data_dir.display()
    )]
    WrongUser { data_dir: PathBuf, owner: u32 },
    #[error(
        "--link: the media store {} and the data dir {} are on different file systems; \
         copy instead (leave out --link)",
        media_store.display(),
        data_dir.display()
    )]
    CrossDevice {
        media_store: PathBuf,
        data_dir: PathBuf,
    },
    #[error("opening the store in {}", data_dir.display())]
    Store {
        data_dir: PathBuf,
        #[source]
        source: crate::store::StoreError,
    },
    #[error("importing through the running server's socket {}", socket.display())]
    Socket {
        socket: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("committing a batch: {0}")]
    Commit(String),
    #[error("{}", path.display())]
    Io {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
}

/// Who writes the records.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Target {
    RunningServer,
    StoppedDataDir,
    /// `--dry-run`: nothing is written; the running server, if any, was asked what it has.
    DryRun {
        asked_server: bool,
    },
}

/// What an import did.
#[derive(Debug, Clone)]
pub struct Report {
    pub target: Target,
    /// Rows read from the database.
    pub rows: u64,
    /// Items now stored (local and remote).
    pub imported: u64,
    /// Quarantined items now blocked.
    pub blocked: u64,
    /// Items already stored by an earlier run (or otherwise present).
    pub already_there: u64,
    /// Rows not meant to be imported, by reason.
    pub skipped: BTreeMap<&'static str, u64>,
    pub missing_file: u64,
    pub hash_mismatch: u64,
    pub failed: u64,
    /// Bytes of new blobs copied into the data dir.
    pub bytes_copied: u64,
    /// Bytes of new blobs hard-linked.
    pub bytes_linked: u64,
    /// Bytes of imported items whose content was already stored.
    pub bytes_saved: u64,
    /// The problem list, if there were problems.
    pub problems_file: Option<PathBuf>,
}

impl Report {
    fn new(target: Target) -> Self {
        Self {
            target,
            rows: 0,
            imported: 0,
            blocked: 0,
            already_there: 0,
            skipped: BTreeMap::new(),
            missing_file: 0,
            hash_mismatch: 0,
            failed: 0,
            bytes_copied: 0,
            bytes_linked: 0,
            bytes_saved: 0,
            problems_file: None,
        }
    }

    /// Nothing failed: every item meant to be imported is stored.
    pub fn success(&self) -> bool {
        self.missing_file == 0 && self.hash_mismatch == 0 && self.failed == 0
    }
}

/// Where the records go.
enum Sink {
    Store(Store),
    Socket(socket::Client),
    /// Dry run: lookups from the running server if there is one.
    DryRun(Option<socket::Client>),
}

impl Sink {
    fn lookup(&mut self, keys: Vec<String>) -> Result<Vec<Known>, String> {
        match self {
            Self::Store(store) => store.import_lookup(&keys).map_err(|e| format!("{e:#}")),
            Self::Socket(client) | Self::DryRun(Some(client)) => {
                client.lookup(keys).map_err(|e| e.to_string())
            }
            Self::DryRun(None) => Ok(vec![Known::Absent; keys.len()]),
        }
    }

    fn commit(&mut self, items: Vec<ImportItem>) -> Result<Vec<ImportOutcome>, String> {
        match self {
            Self::Store(store) => store
                .commit_import(&items)
                .map_err(|e| format!("{:#}", anyhow::Error::from(e))),
            Self::Socket(client) => client.commit(items).map_err(|e| e.to_string()),
            Self::DryRun(_) => Ok(items
                .iter()
                .map(|item| match item.content {
                    ImportContent::File { .. } => ImportOutcome::Imported { new_blob: true },
                    ImportContent::Quarantined { .. } => ImportOutcome::Blocked,
                })
                .collect()),
        }
    }
}

/// Imports the Synapse media repository described by `options` into the data dir of `config`.
pub fn run(config: &Config, options: &Options) -> Result<Report, Error> {
    if !options.media_store.is_dir() {
        return Err(Error::NoMediaStore(options.media_store.clone()));
    }
    let mut db = Database::open(&options.database)?;
    let (total, foreign) = check_rows(&mut db, config, options)?;
    if foreign.count > 0 {
        return Err(Error::ForeignUsers {
            server_name: config.server_name.to_string(),
            count: foreign.count,
            examples: foreign.examples.join(", "),
        });
    }
    let (sink, target) = connect(config, options)?;
    let staging = if options.dry_run {
        None
    } else {
        Some(Staging::create(&config.data_dir, options)?)
    };
    let mut run = Run {
        config,
        options,
        sink,
        staging,
        report: Report::new(target),
        problems: Problems::new(&options.problems_file),
        progress: Progress::new(total, options.progress_bar),
        batch: Vec::new(),
        batch_bytes: 0,
        now: now_ms(),
    };
    let mut tables = vec![Table::Local];
    if options.remote {
        tables.push(Table::Remote);
    }
    let mut outcome = Ok(());
    for table in tables {
        outcome = db
            .for_each(table, &mut |row| run.push(row))
            .map_err(Error::from)
            .and_then(|r| r);
        if outcome.is_ok() {
            outcome = run.flush();
        }
        if outcome.is_err() {
            break;
        }
    }
    run.progress.finish();
    if let Some(staging) = &run.staging {
        staging.remove();
    }
    let problems = run.problems.finish();
    let mut report = run.report;
    outcome?;
    report.problems_file = problems?;
    Ok(report)
}

struct Foreign {
    count: u64,
    examples: Vec<String>,
}

/// The first pass: counts the rows (for the progress bar) and finds users of another server,
/// which means the wrong database or the wrong `SERVER_NAME`: better to stop before anything.
fn check_rows(
    db: &mut Database,
    config: &Config,
    options: &Options,
) -> Result<(u64, Foreign), Error> {
    let mut total = 0u64;
    let mut foreign = Foreign {
        count: 0,
        examples: Vec::new(),
    };
    db.for_each::<()>(Table::Local, &mut |row| {
        total += 1;
        if let Some(user) = &row.user_id
            && row.url_cache.is_none()
            && user_server(user) != Some(config.server_name.as_str())
        {
            foreign.count += 1;
            if foreign.examples.len() < 3 {
                foreign.examples.push(format!("{user} ({})", row.media_id));
            }
        }
        Ok(())
    })?
    .ok();
    if options.remote {
        db.for_each::<()>(Table::Remote, &mut |_| {
            total += 1;
            Ok(())
        })?
        .ok();
    }
    Ok((total, foreign))
}

/// The server part of a user id `@local:server`.
fn user_server(user_id: &str) -> Option<&str> {
    user_id.strip_prefix('@')?.split_once(':').map(|(_, s)| s)
}

fn connect(config: &Config, options: &Options) -> Result<(Sink, Target), Error> {
    let data_dir = &config.data_dir;
    let socket = data_dir.join(SOCKET_NAME);
    let socket_err = |source| Error::Socket {
        socket: socket.clone(),
        source,
    };
    let running = UnixStream::connect(&socket).ok();
    if options.dry_run {
        let client = running.map(socket::Client::start).transpose();
        let client = client.map_err(socket_err)?;
        let asked_server = client.is_some();
        return Ok((Sink::DryRun(client), Target::DryRun { asked_server }));
    }
    // Files staged here become the server's blob files: they must be its user's.
    if let Ok(meta) = fs::metadata(data_dir)
        && meta.uid() != nix::unistd::geteuid().as_raw()
    {
        return Err(Error::WrongUser {
            data_dir: data_dir.clone(),
            owner: meta.uid(),
        });
    }
    if let Some(stream) = running {
        let client = socket::Client::start(stream).map_err(socket_err)?;
        return Ok((Sink::Socket(client), Target::RunningServer));
    }
    let store = Store::open(config).map_err(|source| Error::Store {
        data_dir: data_dir.clone(),
        source,
    })?;
    Ok((Sink::Store(store), Target::StoppedDataDir))
}

/// This run's own directory in the data dir's tmp dir.
struct Staging {
    dir: PathBuf,
    /// The tmp dir's name for `dir`, as the store expects it.
    name: String,
    next: u64,
}

impl Staging {
    fn create(data_dir: &Path, options: &Options) -> Result<Self, Error> {
        let tmp = data_dir.join("tmp");
        let io_err = |path: &Path| {
            let path = path.to_path_buf();
            move |source| Error::Io { path, source }
        };
        fs::create_dir_all(&tmp).map_err(io_err(&tmp))?;
        remove_stale(&tmp);
        let name = format!("import-{}", std::process::id());
        let dir = tmp.join(&name);
        fs::DirBuilder::new()
            .mode(0o700)
            .create(&dir)
            .map_err(io_err(&dir))?;
        if options.link {
            let from = fs::metadata(&options.media_store).map_err(io_err(&options.media_store))?;
            let to = fs::metadata(&dir).map_err(io_err(&dir))?;
            if from.dev() != to.dev() {
                let _ = fs::remove_dir(&dir);
                return Err(Error::CrossDevice {
                    media_store: options.media_store.clone(),
                    data_dir: data_dir.to_path_buf(),
                });
            }
        }
        Ok(Self { dir, name, next: 0 })
    }

    /// A fresh file name: its path here and its name relative to the tmp dir.
    fn next(&mut self) -> (PathBuf, String) {
        self.next += 1;
        let file = format!("{}", self.next);
        (self.dir.join(&file), format!("{}/{file}", self.name))
    }

    fn sync(&self) -> io::Result<()> {
        nix::unistd::syncfs(fs::File::open(&self.dir)?).map_err(io::Error::from)
    }

    fn remove(&self) {
        if let Err(e) = fs::remove_dir_all(&self.dir)
            && e.kind() != io::ErrorKind::NotFound
        {
            eprintln!(
                "mxmedia: could not remove {}: {e} (the server's next start does)",
                self.dir.display()
            );
        }
    }
}

/// Staging dirs of imports that were killed: their process is gone, so are their uses.
fn remove_stale(tmp: &Path) {
    let Ok(entries) = fs::read_dir(tmp) else {
        return;
    };
    for entry in entries.flatten() {
        let name = entry.file_name();
        let Some(pid) = name
            .to_str()
            .and_then(|n| n.strip_prefix("import-"))
            .and_then(|p| p.parse::<u32>().ok())
        else {
            continue;
        };
        if !Path::new(&format!("/proc/{pid}")).exists() {
            let _ = fs::remove_dir_all(entry.path());
        }
    }
}

/// A row that is to be imported, with its id in the store.
struct Candidate {
    row: Row,
    key: String,
}

struct Run<'a> {
    config: &'a Config,
    options: &'a Options,
    sink: Sink,
    staging: Option<Staging>,
    report: Report,
    problems: Problems,
    progress: Progress,
    batch: Vec<Candidate>,
    batch_bytes: u64,
    now: u64,
}

impl Run<'_> {
    /// Takes one row; imports the batch once it is full.
    fn push(&mut self, row: Row) -> Result<(), Error> {
        self.report.rows += 1;
        self.progress.row();
        let skip = |report: &mut Report, reason| {
            *report.skipped.entry(reason).or_default() += 1;
            Ok(())
        };
        if row.url_cache.is_some() {
            return skip(&mut self.report, "URL preview");
        }
        if row.media_length.is_none() && row.quarantined_by.is_none() {
            return skip(&mut self.report, "async upload never completed");
        }
        let server = match &row.origin {
            None => self.config.server_name.as_str(),
            Some(origin) if origin.as_str() == self.config.server_name.as_str() => {
                return skip(&mut self.report, "remote cache row of our own server");
            }
            Some(origin) => origin.as_str(),
        };
        let key = format!("{server}/{}", row.media_id);
        if crate::store::keys::parse_media(key.as_bytes()).is_none() {
            self.problem(&key, "invalid server name or media id: not imported");
            self.report.failed += 1;
            return Ok(());
        }
        self.batch_bytes += row
            .media_length
            .and_then(|l| u64::try_from(l).ok())
            .unwrap_or(0);
        self.batch.push(Candidate { row, key });
        if self.batch.len() >= BATCH_ROWS || self.batch_bytes >= BATCH_BYTES {
            self.flush()?;
        }
        Ok(())
    }

    fn problem(&mut self, key: &str, reason: &str) {
        self.progress.note(&format!("mxc://{key}: {reason}"));
        self.problems.add(key, reason);
    }

    /// Imports the rows gathered so far.
    fn flush(&mut self) -> Result<(), Error> {
        let batch = std::mem::take(&mut self.batch);
        self.batch_bytes = 0;
        if batch.is_empty() {
            return Ok(());
        }
        let keys = batch.iter().map(|c| c.key.clone()).collect();
        let known = self.sink.lookup(keys).map_err(Error::Commit)?;
        let mut items = Vec::new();
        for (candidate, known) in batch.into_iter().zip(known) {
            if known != Known::Absent {
                self.report.already_there += 1;
                continue;
            }
            if let Some(item) = self.prepare(candidate) {
                items.push(item);
            }
        }
        if items.is_empty() {
            return Ok(());
        }
        let lens: Vec<(String, u64, bool)> = items
            .iter()
            .map(|item| match &item.content {
                ImportContent::File { len, .. } => (item.key.clone(), *len, true),
                ImportContent::Quarantined { .. } => (item.key.clone(), 0, false),
            })
            .collect();
        if let Some(staging) = &self.staging {
            // The staged bytes (copies, or linked files Synapse may not have flushed yet) reach
            // the disk before any record points at them: one flush for the whole batch.
            staging.sync().map_err(|source| Error::Io {
                path: staging.dir.clone(),
                source,
            })?;
        }
        let outcomes = self.sink.commit(items).map_err(Error::Commit)?;
        for ((_key, len, _), outcome) in lens.iter().zip(outcomes) {
            match outcome {
                ImportOutcome::Imported { new_blob: true } => {
                    self.report.imported += 1;
                    self.progress.bytes(*len);
                    if self.options.link {
                        self.report.bytes_linked += len;
                    } else {
                        self.report.bytes_copied += len;
                    }
                }
                ImportOutcome::Imported { new_blob: false } => {
                    self.report.imported += 1;
                    self.report.bytes_saved += len;
                }
                ImportOutcome::Blocked => self.report.blocked += 1,
                ImportOutcome::AlreadyThere => self.report.already_there += 1,
            }
        }
        Ok(())
    }

    /// The item to commit for a row not stored yet, or `None` (counted) if it cannot be.
    fn prepare(&mut self, candidate: Candidate) -> Option<ImportItem> {
        let Candidate { row, key } = candidate;
        let extra = ImportRecord {
            sha256: None,
            authenticated: row.authenticated,
            safe_from_quarantine: row.safe_from_quarantine,
            last_access: row.last_access_ts.and_then(|t| u64::try_from(t).ok()),
        };
        let created_at = row
            .created_ts
            .and_then(|t| u64::try_from(t).ok())
            .unwrap_or(self.now);
        let uploader = match &row.origin {
            None => row.user_id.clone().unwrap_or_default(),
            Some(origin) => origin.clone(),
        };
        let remote_access = match &row.origin {
            Some(_) => Some(extra.last_access.unwrap_or(created_at)),
            None => None,
        };
        if let Some(by) = &row.quarantined_by {
            return Some(ImportItem {
                key,
                uploader,
                created_at,
                content: ImportContent::Quarantined {
                    by: by.clone(),
                    at: self.now,
                },
                extra,
                remote_access: None,
            });
        }
        let source = match synapse::file_path(&self.options.media_store, &row) {
            Ok(path) => path,
            Err(reason) => {
                self.report.failed += 1;
                self.problem(&key, reason);
                return None;
            }
        };
        let staged = self.staging.as_mut().map(Staging::next);
        let copied = copy_hashed(
            &source,
            staged.as_ref().map(|(path, _)| path.as_path()),
            self.options.link,
        );
        let (sha256, len) = match copied {
            Ok(done) => done,
            Err(e) => {
                if let Some((path, _)) = &staged {
                    let _ = fs::remove_file(path);
                }
                if e.kind() == io::ErrorKind::NotFound {
                    self.report.missing_file += 1;
                    self.problem(&key, &format!("missing file {}", source.display()));
                } else {
                    self.report.failed += 1;
                    self.problem(&key, &format!("reading {}: {e}", source.display()));
                }
                return None;
            }
        };
        let expected_len = row.media_length.and_then(|l| u64::try_from(l).ok());
        let mismatch = if expected_len.is_some_and(|l| l != len) {
            Some(format!(
                "length mismatch: the file has {len} bytes, the database says {}",
                expected_len.unwrap_or(0)
            ))
        } else if let Some(expected) = row.sha256.as_deref().filter(|s| !s.is_empty())
            && !expected.eq_ignore_ascii_case(&sha256)
        {
            Some(format!(
                "sha256 mismatch: the file hashes to {sha256}, the database says {expected}"
            ))
        } else {
            None
        };
        if let Some(reason) = mismatch {
            if let Some((path, _)) = &staged {
                let _ = fs::remove_file(path);
            }
            self.report.hash_mismatch += 1;
            self.problem(&key, &reason);
            return None;
        }
        let content_type = row
            .media_type
            .filter(|t| !t.is_empty())
            .unwrap_or_else(|| "application/octet-stream".to_owned());
        Some(ImportItem {
            key,
            uploader,
            created_at,
            content: ImportContent::File {
                staged: staged.map(|(_, name)| name).unwrap_or_default(),
                sha256: sha256.clone(),
                len,
                content_type,
                filename: row.upload_name.filter(|n| !n.is_empty()),
            },
            extra: ImportRecord {
                sha256: Some(sha256),
                ..extra
            },
            remote_access,
        })
    }
}

/// Hashes `source`, copying it to `staged` on the way (or hard-linking it there with `link`).
/// Not flushed: `Run::flush` flushes a whole batch at once before it is committed.
fn copy_hashed(source: &Path, staged: Option<&Path>, link: bool) -> io::Result<(String, u64)> {
    let mut hasher = Sha256::new();
    let mut len = 0u64;
    let mut buf = vec![0u8; CHUNK_SIZE];
    // Checked before opening: opening a FIFO would wait for a writer.
    if !fs::metadata(source)?.is_file() {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            "not a regular file",
        ));
    }
    let mut input = fs::File::open(source)?;
    let mut output = match staged {
        Some(path) if link => {
            fs::hard_link(source, path)?;
            input = fs::File::open(path)?;
            None
        }
        Some(path) => Some(
            fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .open(path)?,
        ),
        None => None,
    };
    loop {
        let n = match input.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        };
        let chunk = buf.get(..n).unwrap_or_default();
        hasher.update(chunk);
        if let Some(out) = &mut output {
            out.write_all(chunk)?;
        }
        len += u64::try_from(n).unwrap_or(u64::MAX);
    }
    Ok((hex::encode(hasher.finalize()), len))
}

/// The problem list, written as problems come (`mxc://…<TAB>reason` lines), so memory does
/// not grow with their number. The file is created at the first problem only.
struct Problems {
    path: PathBuf,
    out: Option<io::BufWriter<fs::File>>,
    error: Option<io::Error>,
}

impl Problems {
    fn new(path: &Path) -> Self {
        Self {
            path: path.to_path_buf(),
            out: None,
            error: None,
        }
    }

    fn add(&mut self, key: &str, reason: &str) {
        if self.error.is_some() {
            return;
        }
        let written = match &mut self.out {
            Some(out) => writeln!(out, "mxc://{key}\t{reason}"),
            None => fs::File::create(&self.path).and_then(|file| {
                let mut out = io::BufWriter::new(file);
                writeln!(out, "mxc://{key}\t{reason}")?;
                self.out = Some(out);
                Ok(())
            }),
        };
        if let Err(e) = written {
            self.error = Some(e);
        }
    }

    fn finish(self) -> Result<Option<PathBuf>, Error> {
        let io_err = |source| Error::Io {
            path: self.path.clone(),
            source,
        };
        if let Some(e) = self.error {
            return Err(io_err(e));
        }
        match self.out {
            Some(mut out) => {
                out.flush().map_err(io_err)?;
                Ok(Some(self.path.clone()))
            }
            None => {
                // A list left by an earlier run would describe problems that may be gone.
                match fs::remove_file(&self.path) {
                    Err(e) if e.kind() != io::ErrorKind::NotFound => Err(io_err(e)),
                    _ => Ok(None),
                }
            }
        }
    }
}

impl Options {
    /// `--database` for messages: a PostgreSQL URL without its password.
    pub fn database_for_display(&self) -> String {
        if synapse::is_postgres_url(&self.database) {
            synapse::redact_url(&self.database)
        } else {
            self.database.clone()
        }
    }
}
