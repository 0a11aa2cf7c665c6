//! Media brought in from another media repository (`mxmedia import`): records written with the
//! media id, uploader, name, type and times they had there, many at a time in one transaction,
//! so that a crash leaves each item either fully visible or not at all.
//!
//! The importer stages every file in the store's tmp dir (copied and hashed, or hard-linked)
//! and flushes them to disk; `commit_import` makes the large ones blob files (one file-system
//! flush for the whole batch), reads the small ones into sled, and writes the records. Identical bytes become one blob, as for uploads.
//!
//! What the source knew beyond our `MediaMeta` is kept in `mediaid_imported` (`server/mediaId`
//! -> `ImportRecord` JSON): whether the media was uploaded before the source froze the
//! unauthenticated endpoints (Matrix v1.11, [§ content repository][spec]) and may still be
//! served there, whether it was marked safe from quarantine (also written to
//! `mediaid_protected`, so bulk quarantines pass it by as Synapse's do), and its last access
//! time. The record names the sha256 it was imported with, so a later delete and reuse of the
//! id never inherits it.
//!
//! [spec]: https://spec.matrix.org/v1.16/client-server-api/#content-repository

use std::{
    collections::HashSet,
    fs,
    path::{Component, Path, PathBuf},
};

use serde::{Deserialize, Serialize};
use sled::{Transactional, transaction::ConflictableTransactionError};
use tempfile::{NamedTempFile, TempPath};

use super::{
    Result, Store, StoreError, abort,
    blob::{Placement, Staged},
    blocked::Blocked,
    decode, encode, index, keys,
    refs::add_blob_ref,
    tx_error,
};
use crate::model::{
    id::MediaKey,
    meta::{Content, MediaMeta, MediaState},
};

/// The sled tree of `ImportRecord`s.
pub(super) const TREE: &str = "mediaid_imported";

/// One item to import. Serializable: a running server receives it over its socket.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ImportItem {
    /// `server/mediaId`, as in every media tree.
    pub key: String,
    pub uploader: String,
    /// Milliseconds since the epoch.
    pub created_at: u64,
    pub content: ImportContent,
    #[serde(default)]
    pub extra: ImportRecord,
    /// Last access at the source (`mediaid_access`), which the admin API shows and retention
    /// and `delete_old_media` go by; `None` for quarantined media.
    #[serde(default)]
    pub access_at: Option<u64>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum ImportContent {
    /// Bytes staged at `staged`, a path relative to the store's tmp dir, already hashed.
    File {
        staged: String,
        sha256: String,
        len: u64,
        content_type: String,
        filename: Option<String>,
    },
    /// Quarantined at the source: blocked here, so it answers 404 and is never fetched again.
    Quarantined { by: String, at: u64 },
}

/// What an import keeps that `MediaMeta` has no place for.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ImportRecord {
    /// The sha256 the media had when imported (`None` for quarantined media).
    #[serde(default)]
    pub sha256: Option<String>,
    /// The source served it only to authenticated requests; `false` for media uploaded
    /// before the unauthenticated endpoints were frozen there.
    #[serde(default = "yes")]
    pub authenticated: bool,
    #[serde(default)]
    pub safe_from_quarantine: bool,
    /// Milliseconds since the epoch.
    #[serde(default)]
    pub last_access: Option<u64>,
}

fn yes() -> bool {
    true
}

/// What the store holds under a key, as far as an import is concerned.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "state", rename_all = "snake_case")]
pub enum Known {
    Absent,
    /// Complete media with these bytes.
    Complete {
        sha256: String,
    },
    /// Reserved by `/create`, no bytes yet.
    Pending,
    Blocked,
}

/// What became of one item.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ImportOutcome {
    /// Written; `new_blob` is false when its bytes were already stored for other media.
    Imported { new_blob: bool },
    /// Blocked as the source's quarantine asked.
    Blocked,
    /// Something is stored (or blocked) under the id already: left as it is.
    AlreadyThere,
}

impl Store {
    /// What is stored under each of `keys` (`server/mediaId`).
    pub fn import_lookup(&self, keys: &[String]) -> Result<Vec<Known>> {
        keys.iter()
            .map(|key| {
                if self.inner.blocked.contains_key(key.as_bytes())? {
                    return Ok(Known::Blocked);
                }
                let Some(value) = self.inner.meta.get(key.as_bytes())? else {
                    return Ok(Known::Absent);
                };
                Ok(match decode::<MediaMeta>(&value)?.state {
                    MediaState::Complete(content) => Known::Complete {
                        sha256: content.sha256,
                    },
                    MediaState::Pending { .. } => Known::Pending,
                })
            })
            .collect()
    }

    /// Writes `items` in one transaction and flushes; ids already in use are left alone. The
    /// staged files are consumed: moved into the blob directory or removed.
    pub fn commit_import(&self, items: &[ImportItem]) -> Result<Vec<ImportOutcome>> {
        let imported = self.inner.db.open_tree(TREE)?;
        let mut keys = Vec::with_capacity(items.len());
        for item in items {
            if keys::parse_media(item.key.as_bytes()).is_none() {
                return Err(StoreError::Misuse("import: not a server/mediaId key"));
            }
            keys.push(item.key.as_bytes());
        }
        let staged_paths = items
            .iter()
            .map(|item| match &item.content {
                ImportContent::File { staged, .. } => self.staged_path(staged).map(Some),
                ImportContent::Quarantined { .. } => Ok(None),
            })
            .collect::<Result<Vec<_>>>()?;
        let result = self.commit_import_staged(items, &keys, &staged_paths, &imported);
        for path in staged_paths.iter().flatten() {
            // Persisted files were renamed away; the rest (inline, duplicates) go now.
            if let Err(e) = fs::remove_file(path)
                && e.kind() != std::io::ErrorKind::NotFound
            {
                tracing::warn!(path = %path.display(), error = %e, "import: staged file left");
            }
        }
        result
    }

    fn commit_import_staged(
        &self,
        items: &[ImportItem],
        keys: &[&[u8]],
        staged_paths: &[Option<PathBuf>],
        imported: &sled::Tree,
    ) -> Result<Vec<ImportOutcome>> {
        let _writing = self.writing()?;
        let guard = self.lock_blobs()?;
        // Complete media and blob records are written only under the blob lock, which we hold:
        // what we see now is what the transaction sees, but for reservations and blocks, which
        // it checks again.
        let mut inline = Vec::with_capacity(items.len());
        let mut persisted = Vec::new();
        let mut to_persist = Vec::new();
        let mut seen = HashSet::new();
        for ((item, key), path) in items.iter().zip(keys).zip(staged_paths) {
            let (ImportContent::File { sha256, len, .. }, Some(path)) = (&item.content, path)
            else {
                inline.push(None);
                continue;
            };
            let taken =
                self.inner.meta.contains_key(key)? || self.inner.blocked.contains_key(key)?;
            if taken || !seen.insert(sha256.clone()) || self.inner.blobs.contains_key(sha256)? {
                inline.push(None);
                continue;
            }
            let actual = fs::metadata(path)?.len();
            if actual != *len {
                return Err(StoreError::Corrupt(format!(
                    "import: staged {} has {actual} bytes, not {len}",
                    path.display()
                )));
            }
            if *len <= self.inner.inline_max {
                inline.push(Some(fs::read(path)?));
            } else {
                inline.push(None);
                let staged = Staged {
                    file: NamedTempFile::from_parts(
                        fs::File::open(path)?,
                        TempPath::try_from_path(path)?,
                    ),
                    sha256: sha256.clone(),
                    len: *len,
                };
                to_persist.push(staged);
                persisted.push(sha256.clone());
            }
        }
        if let Err(e) = self.inner.files.persist_all(to_persist) {
            // Some may have been renamed into place already: none is referenced yet.
            self.unlink_unreferenced(&guard, &persisted)?;
            return Err(e.into());
        }
        let trees = (
            &self.inner.meta,
            &self.inner.blobs,
            &self.inner.chunks,
            &self.inner.blocked,
            &self.inner.access,
            imported,
            &self.inner.user_index,
            &self.inner.hash_index,
            &self.inner.protected,
            &self.inner.usage,
        );
        let result = trees
            .transaction(
                |(
                    meta,
                    blobs,
                    chunks,
                    blocked,
                    access,
                    imported,
                    user_index,
                    hash_index,
                    safe,
                    usage,
                )| {
                    let mut outcomes = Vec::with_capacity(items.len());
                    for ((item, key), bytes) in items.iter().zip(keys).zip(&inline) {
                        if meta.get(key)?.is_some() || blocked.get(key)?.is_some() {
                            outcomes.push(ImportOutcome::AlreadyThere);
                            continue;
                        }
                        match &item.content {
                            ImportContent::Quarantined { by, at } => {
                                let record = Blocked {
                                    by: by.clone(),
                                    at: *at,
                                };
                                blocked.insert(
                                    *key,
                                    encode(&record).map_err(ConflictableTransactionError::Abort)?,
                                )?;
                                outcomes.push(ImportOutcome::Blocked);
                            }
                            ImportContent::File {
                                sha256,
                                len,
                                content_type,
                                filename,
                                ..
                            } => {
                                let new_blob = blobs.get(sha256.as_bytes())?.is_none();
                                let placement = if *len <= self.inner.inline_max {
                                    Placement::Inline
                                } else {
                                    Placement::File
                                };
                                if new_blob && placement == Placement::Inline && bytes.is_none() {
                                    // Read before only for blobs that looked new; not one then.
                                    return abort(StoreError::Corrupt(format!(
                                        "import: blob {sha256} vanished under the blob lock"
                                    )));
                                }
                                add_blob_ref(
                                    blobs,
                                    chunks,
                                    sha256,
                                    *len,
                                    placement,
                                    bytes.as_deref(),
                                )?;
                                let record = MediaMeta {
                                    uploader: item.uploader.clone(),
                                    created_at: item.created_at,
                                    state: MediaState::Complete(Content {
                                        content_type: content_type.clone(),
                                        filename: filename.clone(),
                                        len: *len,
                                        sha256: sha256.clone(),
                                    }),
                                };
                                meta.insert(
                                    *key,
                                    encode(&record).map_err(ConflictableTransactionError::Abort)?,
                                )?;
                                index::add(user_index, hash_index, key, &record)?;
                                // Imported media counts against its uploader's quota like any
                                // upload of theirs.
                                super::usage::count(usage, &item.uploader, *len, true)?;
                                if item.extra.safe_from_quarantine {
                                    // Protected with the record, so no crash leaves it exposed
                                    // to bulk quarantines. Synapse keeps no time of protection:
                                    // the upload's is the earliest it can have been.
                                    safe.insert(*key, &item.created_at.to_be_bytes())?;
                                }
                                outcomes.push(ImportOutcome::Imported { new_blob });
                            }
                        }
                        if let Some(ms) = item.access_at {
                            access.insert(*key, &ms.to_be_bytes())?;
                        }
                        imported.insert(
                            *key,
                            encode(&item.extra).map_err(ConflictableTransactionError::Abort)?,
                        )?;
                    }
                    Ok(outcomes)
                },
            )
            .map_err(tx_error);
        // A file persisted for an id that turned out taken belongs to no record: drop it.
        let cleanup = self.unlink_unreferenced(&guard, &persisted);
        let outcomes = result?;
        cleanup?;
        drop(guard);
        self.flush()?;
        Ok(outcomes)
    }

    /// Where a staged file named by the importer lies: inside the tmp dir, nowhere else.
    fn staged_path(&self, staged: &str) -> Result<PathBuf> {
        let relative = Path::new(staged);
        if staged.is_empty()
            || !relative
                .components()
                .all(|c| matches!(c, Component::Normal(_)))
        {
            return Err(StoreError::Misuse(
                "import: staged path outside the tmp dir",
            ));
        }
        Ok(self.inner.tmp_dir.join(relative))
    }

    /// Where importers stage files: under the tmp dir, which is emptied at every start.
    pub fn import_staging_root(&self) -> &Path {
        &self.inner.tmp_dir
    }

    /// What an import kept about `key` besides its metadata.
    pub fn import_record(&self, key: &MediaKey) -> Result<Option<ImportRecord>> {
        self.inner
            .db
            .open_tree(TREE)?
            .get(keys::media(key))?
            .map(|v| decode(&v))
            .transpose()
    }

    /// Whether `key`, with the bytes `sha256` it has now, was imported as media its source
    /// served without authentication (uploaded before the freeze).
    pub fn imported_unauthenticated(&self, key: &MediaKey, sha256: &str) -> Result<bool> {
        Ok(self
            .import_record(key)?
            .is_some_and(|r| !r.authenticated && r.sha256.as_deref() == Some(sha256)))
    }
}

/// A thumbnail the source had made, to keep as the thumbnail `key` (`keys::thumb`).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ImportThumb {
    pub key: String,
    /// Bytes staged at this path relative to the tmp dir, already hashed.
    pub staged: String,
    pub sha256: String,
    pub len: u64,
    pub content_type: String,
}

/// What became of one thumbnail.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ThumbOutcome {
    Imported,
    /// A thumbnail is stored under the key already (an earlier run, or rendered here).
    AlreadyThere,
    /// The media it was made from is gone (or its bytes are quarantined).
    SourceGone,
}

impl Store {
    /// Stores imported thumbnails, leaving any already stored under their keys as they are.
    /// Like rendered ones they are not flushed one by one: one flush at the end.
    pub fn commit_import_thumbnails(&self, thumbs: &[ImportThumb]) -> Result<Vec<ThumbOutcome>> {
        let mut outcomes = Vec::with_capacity(thumbs.len());
        for thumb in thumbs {
            let path = self.staged_path(&thumb.staged)?;
            let outcome = self.commit_import_thumbnail(thumb, &path);
            if let Err(e) = fs::remove_file(&path)
                && e.kind() != std::io::ErrorKind::NotFound
            {
                tracing::warn!(path = %path.display(), error = %e, "import: staged file left");
            }
            outcomes.push(outcome?);
        }
        self.flush()?;
        Ok(outcomes)
    }

    fn commit_import_thumbnail(&self, thumb: &ImportThumb, path: &Path) -> Result<ThumbOutcome> {
        if self.get_thumbnail(&thumb.key)?.is_some() {
            return Ok(ThumbOutcome::AlreadyThere);
        }
        let actual = fs::metadata(path)?.len();
        if actual != thumb.len {
            return Err(StoreError::Corrupt(format!(
                "import: staged {} has {actual} bytes, not {}",
                path.display(),
                thumb.len
            )));
        }
        let stored = if thumb.len <= self.inner.inline_max {
            self.put_thumbnail(&thumb.key, &fs::read(path)?, &thumb.content_type)
        } else {
            let staged = Staged {
                file: NamedTempFile::from_parts(
                    fs::File::open(path)?,
                    TempPath::try_from_path(path)?,
                ),
                sha256: thumb.sha256.clone(),
                len: thumb.len,
            };
            self.commit_thumbnail(&thumb.key, staged, &thumb.content_type)
        };
        match stored {
            Ok(_) => Ok(ThumbOutcome::Imported),
            Err(StoreError::NotFound) => Ok(ThumbOutcome::SourceGone),
            Err(e) => Err(e),
        }
    }
}
