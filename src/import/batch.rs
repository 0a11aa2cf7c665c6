//! The import's run loop: the first pass over the rows (counting them, refusing users of
//! another server), then each row sorted (skipped, a problem, or a candidate), gathered into
//! batches, checked against its file, and committed.

use std::{fs, io};

use super::{
    Error, Options, Report,
    problems::Problems,
    progress::Progress,
    sink::Sink,
    staging::{Staging, copy_hashed},
    synapse::{self, Database, Row, Table},
};
use crate::{
    config::Config,
    store::import::{ImportContent, ImportItem, ImportOutcome, ImportRecord, Known},
};

/// Rows looked up and committed together: one transaction and one flush per batch.
const BATCH_ROWS: usize = 256;
/// A batch is committed early once its files reach this many bytes, so a crash loses little.
const BATCH_BYTES: u64 = 256 * 1024 * 1024;
pub(super) struct Foreign {
    pub(super) count: u64,
    pub(super) examples: Vec<String>,
}

/// The first pass: counts the rows (for the progress bar) and finds users of another server,
/// which means the wrong database or the wrong `SERVER_NAME`: better to stop before anything.
pub(super) fn check_rows(
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

/// A row that is to be imported, with its id in the store.
pub(super) struct Candidate {
    row: Row,
    key: String,
}

pub(super) struct Run<'a> {
    pub(super) config: &'a Config,
    pub(super) options: &'a Options,
    pub(super) sink: Sink,
    pub(super) staging: Option<Staging>,
    pub(super) report: Report,
    pub(super) problems: Problems,
    pub(super) progress: Progress,
    pub(super) batch: Vec<Candidate>,
    pub(super) batch_bytes: u64,
    pub(super) now: u64,
}

impl Run<'_> {
    /// Takes one row; imports the batch once it is full.
    pub(super) fn push(&mut self, row: Row) -> Result<(), Error> {
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
    pub(super) fn flush(&mut self) -> Result<(), Error> {
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
        // Synapse leaves `last_access_ts` NULL on rows it never served; they were new then.
        let access_at = Some(extra.last_access.unwrap_or(created_at));
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
                access_at: None,
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
            access_at,
        })
    }
}
