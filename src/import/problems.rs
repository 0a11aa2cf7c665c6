//! The problem list an import writes: one `mxc://…<TAB>reason` line per item not imported.

use std::{
    fs,
    io::{self, Write},
    path::{Path, PathBuf},
};

use super::Error;

/// The problem list, written as problems come (`mxc://…<TAB>reason` lines), so memory does
/// not grow with their number. The file is created at the first problem only.
pub(super) struct Problems {
    path: PathBuf,
    out: Option<io::BufWriter<fs::File>>,
    error: Option<io::Error>,
}

impl Problems {
    pub(super) fn new(path: &Path) -> Self {
        Self {
            path: path.to_path_buf(),
            out: None,
            error: None,
        }
    }

    pub(super) fn add(&mut self, key: &str, reason: &str) {
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

    pub(super) fn finish(self) -> Result<Option<PathBuf>, Error> {
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
