//! `--thumbnails`: the thumbnails Synapse made and stored (`local_media_repository_thumbnails`,
//! `remote_media_cache_thumbnails`; files under `local_thumbnails/`, `remote_thumbnail/`) are
//! kept as this server's stored thumbnails where one is exactly what we would serve: the same
//! method, a configured size of ours for which our renderer gives the same width and height
//! from that source, and a type we render (JPEG, PNG). Every other one is left out and made
//! again on demand, as without the option.
//!
//! Runs after the media: a thumbnail is kept only for media stored here (its key names the
//! bytes it was made from, so it goes with them). Thumbnails already stored are left alone,
//! so a second run adds nothing.

use std::{fs, io::Read as _, path::PathBuf};

use mxmedia_image::{Method, Probe};

use super::{
    Error,
    batch::Run,
    staging::copy_hashed,
    synapse::{self, Row, Table, ThumbRow},
};
use crate::{
    model::thumb::ThumbSpec,
    store::{
        import::{ImportThumb, Known, ThumbOutcome},
        keys,
    },
};

/// Thumbnail rows looked up and committed together.
const BATCH: usize = 256;
/// Bytes of an original read to learn its size from its header.
const HEADER_BYTES: u64 = 256 * 1024;

/// What became of the source's thumbnails.
#[derive(Debug, Clone, Default)]
pub struct ThumbReport {
    pub imported: u64,
    pub already_there: u64,
    /// Not what this server would serve (size, method or type), or of media not stored here:
    /// made again on demand.
    pub left_out: u64,
    /// The file was missing or unreadable.
    pub failed: u64,
}

impl Run<'_> {
    /// Imports the thumbnails of `table` (after its media).
    pub(super) fn import_thumbnails(
        &mut self,
        db: &mut synapse::Database,
        table: Table,
    ) -> Result<(), Error> {
        let mut batch = Vec::new();
        let outcome = db.for_each_thumbnail::<Error>(table, &mut |row| {
            batch.push(row);
            if batch.len() >= BATCH {
                self.thumbnail_batch(std::mem::take(&mut batch))?;
            }
            Ok(())
        })?;
        outcome?;
        self.thumbnail_batch(batch)
    }

    fn thumbnail_batch(&mut self, rows: Vec<ThumbRow>) -> Result<(), Error> {
        if rows.is_empty() {
            return Ok(());
        }
        let own = self.config.server_name.as_str();
        let keys: Vec<String> = rows
            .iter()
            .map(|r| format!("{}/{}", r.origin.as_deref().unwrap_or(own), r.media_id))
            .collect();
        let known = self.sink.lookup(keys.clone()).map_err(Error::Commit)?;
        let mut probed: Option<(String, Option<Probe>)> = None;
        let mut thumbs = Vec::new();
        for ((row, key), known) in rows.into_iter().zip(keys).zip(known) {
            let Known::Complete { sha256 } = known else {
                self.report.thumbnails.left_out += 1;
                continue;
            };
            // Rows come grouped by media: probe each original once.
            let probe = match &probed {
                Some((k, probe)) if *k == key => *probe,
                _ => {
                    let probe = self.probe_original(&row);
                    probed = Some((key.clone(), probe));
                    probe
                }
            };
            let Some(spec) = probe.and_then(|p| self.matching_spec(&p, &row)) else {
                self.report.thumbnails.left_out += 1;
                continue;
            };
            let Ok(source) = synapse::thumbnail_path(&self.options.media_store, &row) else {
                self.report.thumbnails.left_out += 1;
                continue;
            };
            let staged = self.staging.as_mut().map(super::staging::Staging::next);
            let copied = copy_hashed(
                &source,
                staged.as_ref().map(|(path, _)| path.as_path()),
                self.options.link,
            );
            let expected = row.length.and_then(|l| u64::try_from(l).ok());
            match copied {
                Ok((hash, len)) if expected.is_none_or(|e| e == len) => thumbs.push(ImportThumb {
                    key: keys::thumb(&sha256, spec),
                    staged: staged.map(|(_, name)| name).unwrap_or_default(),
                    sha256: hash,
                    len,
                    content_type: row.content_type.clone(),
                }),
                Ok(_) | Err(_) => {
                    if let Some((path, _)) = &staged {
                        let _ = fs::remove_file(path);
                    }
                    self.report.thumbnails.failed += 1;
                    self.progress.note(&format!(
                        "mxc://{key}: thumbnail {} missing, unreadable or not the length recorded",
                        source.display()
                    ));
                }
            }
        }
        if thumbs.is_empty() {
            return Ok(());
        }
        for outcome in self.sink.commit_thumbnails(thumbs).map_err(Error::Commit)? {
            match outcome {
                ThumbOutcome::Imported => self.report.thumbnails.imported += 1,
                ThumbOutcome::AlreadyThere => self.report.thumbnails.already_there += 1,
                ThumbOutcome::SourceGone => self.report.thumbnails.left_out += 1,
            }
        }
        Ok(())
    }

    /// The size of the original of `row` from its header, if it is an image we thumbnail.
    fn probe_original(&self, row: &ThumbRow) -> Option<Probe> {
        let media = Row {
            origin: row.origin.clone(),
            media_id: row.media_id.clone(),
            filesystem_id: row.filesystem_id.clone(),
            ..Row::default()
        };
        let path: PathBuf = synapse::file_path(&self.options.media_store, &media).ok()?;
        let mut header = Vec::new();
        fs::File::open(path)
            .ok()?
            .take(HEADER_BYTES)
            .read_to_end(&mut header)
            .ok()?;
        mxmedia_image::probe(&header).ok()
    }

    /// The configured size of ours that `row` is the thumbnail of, as our renderer would make
    /// it from a source of `probe`'s size; `None` when there is none.
    fn matching_spec(&self, probe: &Probe, row: &ThumbRow) -> Option<ThumbSpec> {
        if !matches!(row.content_type.as_str(), "image/jpeg" | "image/png") {
            return None;
        }
        let method: Method = row.method.parse().ok()?;
        let (width, height) = (
            u32::try_from(row.width).ok()?,
            u32::try_from(row.height).ok()?,
        );
        let size = self.config.thumbnails.sizes.iter().find(|s| {
            s.method == method
                // A source that small is served as it is: no thumbnail is looked up.
                && !probe.fits_within(s.width, s.height)
                && mxmedia_image::target_dims(probe.width, probe.height, s.width, s.height, method)
                    == (width, height)
        })?;
        Some(ThumbSpec {
            width: size.width,
            height: size.height,
            method,
            animated: false,
        })
    }
}
