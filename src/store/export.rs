//! Local media as another media repository needs it (`mxmedia export`): pages of complete
//! local media in key order, each with what Synapse's `local_media_repository` keeps beside
//! the bytes (quarantine, protection, whether the deprecated unauthenticated endpoints may
//! serve it, last access). Reads only: pages are independent, so an export holds no iterator
//! or lock between them, whether it runs in the server (over the socket) or beside a stopped
//! one.

use serde::{Deserialize, Serialize};

use super::{Result, Store, decode, import::ImportRecord, quarantine::Quarantined, read_u64};
use crate::model::meta::{MediaMeta, MediaState};

/// Most items a page may ask for: a page is one JSON line over the socket.
pub const MAX_PAGE: usize = 1024;

/// One complete local media item.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ExportItem {
    pub media_id: String,
    pub uploader: String,
    /// Milliseconds since the epoch.
    pub created_at: u64,
    pub content_type: String,
    pub filename: Option<String>,
    pub len: u64,
    pub sha256: String,
    /// Who quarantined it, if anyone: it is exported with its bytes and stays unserved there.
    pub quarantined_by: Option<String>,
    /// Protected from quarantine by an admin (Synapse's `safe_from_quarantine`).
    pub protected: bool,
    /// Served only to authenticated requests: everything uploaded here, and what an import
    /// brought in as such. `false` only for imported media uploaded before the source froze
    /// the unauthenticated endpoints.
    pub authenticated: bool,
    /// Milliseconds since the epoch, if known.
    pub last_access: Option<u64>,
}

/// One page of local media, from the key after `after`.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct ExportPage {
    pub items: Vec<ExportItem>,
    /// Reservations (`/create`) whose bytes never came: nothing to export.
    pub pending: u64,
    /// The last key looked at; `None` when the media ran out.
    pub last: Option<String>,
}

impl Store {
    /// Up to `limit` (at most `MAX_PAGE`) ids of local media of the server `own`, the first
    /// after the `server/mediaId` key `after`.
    pub fn export_page(&self, own: &str, after: Option<&str>, limit: usize) -> Result<ExportPage> {
        let limit = limit.clamp(1, MAX_PAGE);
        let mut prefix = own.as_bytes().to_vec();
        prefix.push(b'/');
        let start = match after {
            // Past `after` itself: the smallest key greater than it.
            Some(after) if after.as_bytes().starts_with(&prefix) => {
                let mut k = after.as_bytes().to_vec();
                k.push(0);
                k
            }
            _ => prefix.clone(),
        };
        let mut page = ExportPage::default();
        let mut seen = 0usize;
        for entry in self.inner.meta.range(start..) {
            let (db_key, raw) = entry?;
            if !db_key.starts_with(&prefix) {
                break;
            }
            let key = String::from_utf8_lossy(&db_key).into_owned();
            seen += 1;
            let meta: MediaMeta = decode(&raw)?;
            let media_id = key.get(prefix.len()..).unwrap_or_default().to_owned();
            page.last = Some(key);
            let preview_image = meta.is_preview_image();
            match meta.state {
                MediaState::Pending { .. } => page.pending += 1,
                // A URL preview's image is a cache, nobody's media: the importer skips Synapse's
                // `url_cache` rows likewise, and Synapse fetches its own previews.
                MediaState::Complete(_) if preview_image => {}
                MediaState::Complete(content) => {
                    let quarantined_by = self
                        .inner
                        .quarantine
                        .get(&db_key)?
                        .map(|v| decode::<Quarantined>(&v))
                        .transpose()?
                        .map(|q| q.by);
                    let imported = self
                        .inner
                        .db
                        .open_tree(super::import::TREE)?
                        .get(&db_key)?
                        .map(|v| decode::<ImportRecord>(&v))
                        .transpose()?
                        // A record for other bytes belongs to media since deleted.
                        .filter(|r| r.sha256.as_deref() == Some(content.sha256.as_str()));
                    let last_access = match self.inner.access.get(&db_key)? {
                        Some(v) => Some(read_u64(&v)),
                        None => imported.as_ref().and_then(|r| r.last_access),
                    };
                    page.items.push(ExportItem {
                        media_id,
                        uploader: meta.uploader,
                        created_at: meta.created_at,
                        content_type: content.content_type,
                        filename: content.filename,
                        len: content.len,
                        sha256: content.sha256,
                        quarantined_by,
                        protected: self.inner.protected.contains_key(&db_key)?,
                        authenticated: imported.as_ref().is_none_or(|r| r.authenticated),
                        last_access,
                    });
                }
            }
            if seen >= limit {
                return Ok(page);
            }
        }
        // Fewer than asked: the end.
        page.last = None;
        Ok(page)
    }
}
