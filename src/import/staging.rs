//! Staging an import's files: this run's own directory in the data dir's tmp dir (and the
//! removal of those left by killed runs), and the copy (or hard link) of each file into it
//! while it is hashed.

use std::{
    fs,
    io::{self, Read, Write},
    os::unix::fs::{DirBuilderExt as _, MetadataExt as _},
    path::{Path, PathBuf},
};

use sha2::{Digest, Sha256};

use super::{Error, Options};
use crate::store::blob::CHUNK_SIZE;

/// This run's own directory in the data dir's tmp dir.
pub(super) struct Staging {
    pub(super) dir: PathBuf,
    /// The tmp dir's name for `dir`, as the store expects it.
    name: String,
    next: u64,
}

impl Staging {
    pub(super) fn create(data_dir: &Path, options: &Options) -> Result<Self, Error> {
        let tmp = data_dir.join("tmp");
        let io_err = |path: &Path| {
            let path = path.to_path_buf();
            move |source| Error::Io { path, source }
        };
        fs::create_dir_all(&tmp).map_err(io_err(&tmp))?;
        remove_stale(&tmp, "import-");
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
    pub(super) fn next(&mut self) -> (PathBuf, String) {
        self.next += 1;
        let file = format!("{}", self.next);
        (self.dir.join(&file), format!("{}/{file}", self.name))
    }

    pub(super) fn sync(&self) -> io::Result<()> {
        nix::unistd::syncfs(fs::File::open(&self.dir)?).map_err(io::Error::from)
    }

    pub(super) fn remove(&self) {
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

/// Staging dirs `<prefix><pid>` of commands that were killed (imports, migrations): their
/// process is gone, so are their uses.
pub(crate) fn remove_stale(tmp: &Path, prefix: &str) {
    let Ok(entries) = fs::read_dir(tmp) else {
        return;
    };
    for entry in entries.flatten() {
        let name = entry.file_name();
        let Some(pid) = name
            .to_str()
            .and_then(|n| n.strip_prefix(prefix))
            .and_then(|p| p.parse::<u32>().ok())
        else {
            continue;
        };
        if !Path::new(&format!("/proc/{pid}")).exists() {
            let _ = fs::remove_dir_all(entry.path());
        }
    }
}

/// Hashes `source`, copying it to `staged` on the way (or hard-linking it there with `link`).
/// Not flushed: `Run::flush` flushes a whole batch at once before it is committed.
pub(super) fn copy_hashed(
    source: &Path,
    staged: Option<&Path>,
    link: bool,
) -> io::Result<(String, u64)> {
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
