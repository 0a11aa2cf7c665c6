//! `mxmedia export synapse`: the way back. Writes this server's local media into a Synapse
//! media store (`local_content/ab/cd/rest`, Synapse's `MediaFilePaths`) and the SQL that
//! gives Synapse's `local_media_repository` a row for each item, so a Synapse given both serves
//! every `mxc://` URI as this server did: same id, bytes, name, type, uploader, times,
//! quarantine, protection and `authenticated` flag.
//!
//! The store is read one page at a time (`Store::export_page`) and every file is streamed, so
//! memory does not grow with the number or size of items. With the server running, sled is
//! its alone (sled opens no database read-only): pages and bytes come over the data dir's
//! socket (`socket`), as for `mxmedia backup` and `import`; with it stopped, this process
//! opens the store. Each file is written beside its final name and renamed there once whole
//! and checked against its sha256, so a Synapse never sees half a file; a file already there
//! with the same bytes is left alone, so a second run (or one after a kill) writes only what
//! is new. The SQL file appears, under its name, only once every file it names is on disk.

mod socket;
pub mod sql;

use std::{
    fs,
    io::{self, BufWriter, Read, Write},
    os::unix::{fs::MetadataExt as _, net::UnixStream},
    path::{Path, PathBuf},
};

use sha2::{Digest, Sha256};

pub use self::{
    socket::{REQUEST, serve},
    sql::Dialect,
};
use crate::{
    backup::SOCKET_NAME,
    config::Config,
    import::progress::Progress,
    store::{
        BlobReader, Store, StoreError,
        blob::{CHUNK_SIZE, file_path},
        export::{ExportItem, ExportPage},
    },
};

/// Items asked for at a time.
const PAGE: usize = 256;

/// What `mxmedia export synapse` was asked to do.
#[derive(Debug, Clone)]
pub struct Options {
    /// The media store to write: a new directory, or one an earlier export (or Synapse) wrote.
    pub media_store: PathBuf,
    /// Where the SQL goes.
    pub sql: PathBuf,
    pub dialect: Dialect,
    /// Hard-link blob files instead of copying them (same file system only).
    pub link: bool,
    /// Show a progress bar (a terminal) or print a progress line every few seconds.
    pub progress_bar: bool,
}

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(
        "--link: the media store {} and the data dir's blobs {} are on different file systems; \
         copy instead (leave out --link)",
        media_store.display(),
        blobs.display()
    )]
    CrossDevice {
        media_store: PathBuf,
        blobs: PathBuf,
    },
    #[error(
        "{} belongs to uid {owner} and the server is stopped: run the export as that user \
         (e.g. `sudo -u mxmedia mxmedia export …`), so files the database writes while open \
         keep their owner",
        data_dir.display()
    )]
    WrongUser { data_dir: PathBuf, owner: u32 },
    #[error("{} has no database: not an mxmedia data dir, or nothing stored yet", .0.display())]
    NoDatabase(PathBuf),
    #[error("opening the store in {}", data_dir.display())]
    Store {
        data_dir: PathBuf,
        #[source]
        source: StoreError,
    },
    #[error("exporting through the running server's socket {}", socket.display())]
    Socket {
        socket: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("reading the store: {0}")]
    Read(String),
    #[error("{}", path.display())]
    Io {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
}

/// Whether the server was running.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Source {
    RunningServer,
    StoppedDataDir,
}

/// What an export did.
#[derive(Debug, Clone)]
pub struct Report {
    pub source: Source,
    /// Items with a row in the SQL file: their file is in the media store.
    pub rows: u64,
    /// Of those, files written (copied) by this run.
    pub copied: u64,
    /// Files hard-linked by this run.
    pub linked: u64,
    /// Files that were already there with the same bytes (an earlier run).
    pub already_there: u64,
    /// Rows of quarantined media (exported with their bytes; Synapse does not serve them).
    pub quarantined: u64,
    /// Reservations whose bytes never came: nothing to export.
    pub pending: u64,
    /// Media deleted while the export ran.
    pub deleted_meanwhile: u64,
    /// Items that could not be exported (each named on stderr).
    pub failed: u64,
    pub bytes_copied: u64,
    pub bytes_linked: u64,
}

impl Report {
    /// Nothing failed: every stored item has its file and row.
    pub fn success(&self) -> bool {
        self.failed == 0
    }
}

/// Where the pages and bytes come from.
enum Reader {
    Store(Store),
    Socket(socket::Client),
}

impl Reader {
    fn page(&mut self, own: &str, after: Option<&str>) -> Result<ExportPage, Error> {
        match self {
            Self::Store(store) => store
                .export_page(own, after, PAGE)
                .map_err(|e| Error::Read(format!("{e:#}"))),
            Self::Socket(client) => client
                .page(own, after, PAGE)
                .map_err(|e| Error::Read(e.to_string())),
        }
    }

    /// Copies the bytes of `sha256` into `out`; `Ok(false)` if they are gone.
    fn read(&mut self, sha256: &str, out: &mut dyn Write) -> io::Result<bool> {
        match self {
            Self::Store(store) => match store.open_blob(sha256) {
                Ok(BlobReader::Inline(bytes)) => out.write_all(&bytes).map(|()| true),
                Ok(BlobReader::Stream(mut file)) => io::copy(&mut file, out).map(|_| true),
                Err(StoreError::NotFound) => Ok(false),
                Err(e) => Err(io::Error::other(format!("{e:#}"))),
            },
            Self::Socket(client) => {
                Ok(matches!(client.read(sha256, out)?, socket::Fetched::Copied))
            }
        }
    }
}

/// Exports the local media of the data dir of `config` as `options` says.
pub fn run(config: &Config, options: &Options) -> Result<Report, Error> {
    let io_err = |path: &Path| {
        let path = path.to_path_buf();
        move |source| Error::Io { path, source }
    };
    let store_dir = &options.media_store;
    fs::create_dir_all(store_dir.join("local_content")).map_err(io_err(store_dir))?;
    let blobs = config.data_dir.join("blobs");
    if options.link {
        let from = fs::metadata(&blobs).map_err(io_err(&blobs))?;
        let to = fs::metadata(store_dir).map_err(io_err(store_dir))?;
        if from.dev() != to.dev() {
            return Err(Error::CrossDevice {
                media_store: store_dir.clone(),
                blobs,
            });
        }
    }
    let (mut reader, source) = connect(config)?;
    let own = config.server_name.as_str();
    let total = count(&mut reader, own)?;
    let mut report = Report {
        source,
        rows: 0,
        copied: 0,
        linked: 0,
        already_there: 0,
        quarantined: 0,
        pending: 0,
        deleted_meanwhile: 0,
        failed: 0,
        bytes_copied: 0,
        bytes_linked: 0,
    };
    let partial = partial_name(&options.sql);
    let file = fs::File::create(&partial).map_err(io_err(&partial))?;
    let mut sql = BufWriter::new(file);
    let result = (|| {
        options.dialect.header(&mut sql).map_err(io_err(&partial))?;
        let mut progress = Progress::new("export", total, options.progress_bar);
        let mut after: Option<String> = None;
        loop {
            let page = reader.page(own, after.as_deref())?;
            report.pending += page.pending;
            for item in &page.items {
                progress.row();
                match export_item(&mut reader, config, options, item, &blobs) {
                    Ok(Placed::Gone) => report.deleted_meanwhile += 1,
                    Ok(placed) => {
                        match placed {
                            Placed::Copied => {
                                report.copied += 1;
                                report.bytes_copied += item.len;
                                progress.bytes(item.len);
                            }
                            Placed::Linked => {
                                report.linked += 1;
                                report.bytes_linked += item.len;
                                progress.bytes(item.len);
                            }
                            Placed::Identical => report.already_there += 1,
                            // Counted above; no row for it.
                            Placed::Gone => continue,
                        }
                        options
                            .dialect
                            .insert(&mut sql, item)
                            .map_err(io_err(&partial))?;
                        report.rows += 1;
                        report.quarantined += u64::from(item.quarantined_by.is_some());
                    }
                    Err(reason) => {
                        report.failed += 1;
                        progress.note(&format!("mxc://{own}/{}: {reason}", item.media_id));
                    }
                }
            }
            match page.last {
                Some(last) => after = Some(last),
                None => break,
            }
        }
        progress.finish();
        options.dialect.footer(&mut sql).map_err(io_err(&partial))?;
        let file = sql.into_inner().map_err(|e| Error::Io {
            path: partial.clone(),
            source: e.into_error(),
        })?;
        // The files first, then the SQL naming them: loaded SQL never points at a lost file.
        let store = fs::File::open(store_dir).map_err(io_err(store_dir))?;
        nix::unistd::syncfs(store)
            .map_err(io::Error::from)
            .map_err(io_err(store_dir))?;
        file.sync_all().map_err(io_err(&partial))?;
        fs::rename(&partial, &options.sql).map_err(io_err(&options.sql))
    })();
    if result.is_err() {
        let _ = fs::remove_file(&partial);
    }
    result.map(|()| report)
}

fn connect(config: &Config) -> Result<(Reader, Source), Error> {
    let data_dir = &config.data_dir;
    let socket = data_dir.join(SOCKET_NAME);
    if let Ok(stream) = UnixStream::connect(&socket) {
        let client = socket::Client::start(stream).map_err(|source| Error::Socket {
            socket: socket.clone(),
            source,
        })?;
        return Ok((Reader::Socket(client), Source::RunningServer));
    }
    let Ok(db) = fs::metadata(data_dir.join("db")) else {
        return Err(Error::NoDatabase(data_dir.clone()));
    };
    // sled writes while open (snapshots, recovery): as another user it would leave files the
    // service user may not be able to replace.
    if db.uid() != nix::unistd::geteuid().as_raw() {
        return Err(Error::WrongUser {
            data_dir: data_dir.clone(),
            owner: db.uid(),
        });
    }
    let store = Store::open(config).map_err(|source| Error::Store {
        data_dir: data_dir.clone(),
        source,
    })?;
    Ok((Reader::Store(store), Source::StoppedDataDir))
}

/// The number of items, for the progress bar: one pass over the metadata, no bytes.
fn count(reader: &mut Reader, own: &str) -> Result<u64, Error> {
    let mut total = 0u64;
    let mut after: Option<String> = None;
    loop {
        let page = reader.page(own, after.as_deref())?;
        total += u64::try_from(page.items.len()).unwrap_or(u64::MAX);
        match page.last {
            Some(last) => after = Some(last),
            None => return Ok(total),
        }
    }
}

/// `dir/.name.partial`, beside `path`: always the same name, so a run after a killed one
/// replaces what that one left.
fn partial_name(path: &Path) -> PathBuf {
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    path.with_file_name(format!(".{name}.partial"))
}

/// How an item's file got into the media store.
enum Placed {
    Copied,
    Linked,
    /// Already there with the same bytes.
    Identical,
    /// Deleted here since its page was read: no file, no row.
    Gone,
}

/// Where Synapse looks for the local media `media_id`: `local_content/ab/cd/rest`.
fn local_content(media_store: &Path, media_id: &str) -> Option<PathBuf> {
    let a = media_id.get(..2)?;
    let b = media_id.get(2..4)?;
    let rest = media_id.get(4..).filter(|r| !r.is_empty())?;
    Some(media_store.join("local_content").join(a).join(b).join(rest))
}

/// Puts the file of `item` in place, or says why not.
fn export_item(
    reader: &mut Reader,
    config: &Config,
    options: &Options,
    item: &ExportItem,
    blobs: &Path,
) -> Result<Placed, String> {
    // Media ids here are `[A-Za-z0-9_-]`: no path can leave the media store.
    let dest = local_content(&options.media_store, &item.media_id)
        .ok_or("media id too short for Synapse's layout (5 characters at least)")?;
    let dir = dest.parent().ok_or("no parent directory")?;
    fs::create_dir_all(dir).map_err(|e| format!("creating {}: {e}", dir.display()))?;
    let partial = partial_name(&dest);
    let _ = fs::remove_file(&partial);
    let blob_file = file_path(blobs, &item.sha256);
    if identical(&dest, item, options.link.then_some(blob_file.as_path())) {
        return Ok(Placed::Identical);
    }
    if options.link
        && item.len > config.store.inline_blob_max.as_u64()
        && fs::metadata(&blob_file).is_ok_and(|m| m.len() == item.len)
        && fs::hard_link(&blob_file, &partial).is_ok()
    {
        // The blob file is named by its hash and never changes: no need to read it.
        return fs::rename(&partial, &dest)
            .map(|()| Placed::Linked)
            .map_err(|e| format!("renaming into {}: {e}", dest.display()));
    }
    let written = (|| -> io::Result<Option<(String, u64)>> {
        let mut out = Hashing::new(fs::File::create(&partial)?);
        if !reader.read(&item.sha256, &mut out)? {
            return Ok(None);
        }
        Ok(Some(out.finish()?))
    })();
    let outcome = match written {
        Ok(None) => Ok(Placed::Gone),
        Ok(Some((sha256, len))) if sha256 == item.sha256 && len == item.len => {
            return fs::rename(&partial, &dest)
                .map(|()| Placed::Copied)
                .map_err(|e| format!("renaming into {}: {e}", dest.display()));
        }
        Ok(Some((sha256, len))) => Err(format!(
            "the stored bytes read back as {len} bytes with sha256 {sha256}, not {} bytes with \
             sha256 {}: not exported",
            item.len, item.sha256
        )),
        Err(e) => Err(format!("writing {}: {e}", partial.display())),
    };
    let _ = fs::remove_file(&partial);
    outcome
}

/// Whether `dest` already holds the bytes of `item`: the blob file itself (an earlier
/// `--link`), or a file with the same length and sha256.
fn identical(dest: &Path, item: &ExportItem, blob_file: Option<&Path>) -> bool {
    let Ok(meta) = fs::symlink_metadata(dest) else {
        return false;
    };
    if !meta.is_file() || meta.len() != item.len {
        return false;
    }
    if let Some(blob) = blob_file.and_then(|b| fs::metadata(b).ok())
        && blob.dev() == meta.dev()
        && blob.ino() == meta.ino()
    {
        return true;
    }
    hash_file(dest).is_ok_and(|(sha256, len)| sha256 == item.sha256 && len == item.len)
}

fn hash_file(path: &Path) -> io::Result<(String, u64)> {
    let mut input = fs::File::open(path)?;
    let mut out = Hashing::new(io::sink());
    let mut buf = vec![0u8; CHUNK_SIZE];
    loop {
        let n = match input.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        };
        out.write_all(buf.get(..n).unwrap_or_default())?;
    }
    out.finish()
}

/// A writer that hashes what goes through it.
struct Hashing<W: Write> {
    out: BufWriter<W>,
    hasher: Sha256,
    len: u64,
}

impl<W: Write> Hashing<W> {
    fn new(out: W) -> Self {
        Self {
            out: BufWriter::with_capacity(CHUNK_SIZE, out),
            hasher: Sha256::new(),
            len: 0,
        }
    }

    fn finish(mut self) -> io::Result<(String, u64)> {
        self.out.flush()?;
        Ok((hex::encode(self.hasher.finalize()), self.len))
    }
}

impl<W: Write> Write for Hashing<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.out.write(buf)?;
        let written = buf.get(..n).unwrap_or_default();
        self.hasher.update(written);
        self.len += u64::try_from(n).unwrap_or(u64::MAX);
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.out.flush()
    }
}
