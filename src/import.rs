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

mod batch;
mod problems;
pub(crate) mod progress;
mod sink;
pub mod socket;
pub(crate) mod staging;
pub mod synapse;
mod thumbs;

use std::{collections::BTreeMap, io, path::PathBuf};

pub use self::thumbs::ThumbReport;
use self::{
    batch::{Run, check_rows},
    problems::Problems,
    progress::Progress,
    sink::connect,
    staging::Staging,
    synapse::{Database, SourceError, Table},
};
use crate::{clock::now_ms, config::Config};

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
    /// Also keep the thumbnails Synapse stored, where they are what this server would serve.
    pub thumbnails: bool,
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
    /// With `--thumbnails`: what became of Synapse's thumbnails.
    pub thumbnails: ThumbReport,
}

impl Report {
    pub(super) fn new(target: Target) -> Self {
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
            thumbnails: ThumbReport::default(),
        }
    }

    /// Nothing failed: every item meant to be imported is stored.
    pub fn success(&self) -> bool {
        self.missing_file == 0 && self.hash_mismatch == 0 && self.failed == 0
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
        progress: Progress::new("import", total, options.progress_bar),
        batch: Vec::new(),
        batch_bytes: 0,
        now: now_ms(),
    };
    let mut tables = vec![Table::Local];
    if options.remote {
        tables.push(Table::Remote);
    }
    let mut outcome = Ok(());
    for &table in &tables {
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
    if options.thumbnails {
        for &table in &tables {
            if outcome.is_ok() {
                outcome = run.import_thumbnails(&mut db, table);
            }
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
