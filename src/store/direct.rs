//! Direct URLs: where a client may fetch a blob without its bytes passing through mxmedia (a
//! presigned object-store URL, a CDN in front of a public bucket). This module owns the
//! backend-neutral contract only: which headers the far end must answer with, how long the URL
//! may be kept. Backends that serve only through mxmedia (files) never offer one, and neither
//! are blobs kept inline in sled: those are cheaper to send than a redirect is to follow.

use std::time::Duration;

use super::{Result, Store, StoreError, blob::Placement, decode, refs::BlobRecord};

/// What a direct fetch must answer with: exactly the headers mxmedia would have sent itself.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DirectAnswer {
    /// `Content-Type`, already made safe (a charset added where browsers would guess one).
    pub content_type: String,
    /// `Content-Disposition`: `attachment` for every type a browser must not render.
    pub content_disposition: String,
    /// `Cache-Control` of the bytes.
    pub cache_control: String,
    /// Whether the bytes may also be served with whatever headers the bucket keeps for the
    /// object (a public URL cannot carry ours): only media a browser may show inline, whose
    /// disposition would have been `inline` anyway.
    pub plain_ok: bool,
}

/// A URL answering with a [`DirectAnswer`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DirectUrl {
    pub url: String,
    /// How long a client may keep using this URL (a redirect to it may be cached this long):
    /// well inside a presigned URL's validity, so a cached redirect never leads to a refusal.
    pub keep_for: Duration,
}

impl Store {
    /// Whether the blob backend can offer direct URLs at all: callers skip the lookup (and its
    /// blocking hop) when it cannot.
    pub fn serves_directly(&self) -> bool {
        self.inner.files.serves_directly()
    }

    /// A direct URL for the blob `sha256`, or `None` when it must be streamed by mxmedia: an
    /// inline blob, a backend without direct URLs, or an answer the backend cannot carry.
    pub fn direct_url(&self, sha256: &str, answer: &DirectAnswer) -> Result<Option<DirectUrl>> {
        if !self.serves_directly() {
            return Ok(None);
        }
        let Some(record) = self.inner.blobs.get(sha256)? else {
            // Deleted since its metadata was read.
            return Err(StoreError::NotFound);
        };
        let record: BlobRecord = decode(&record)?;
        match record.placement {
            Placement::Inline => Ok(None),
            Placement::File => Ok(self.inner.files.direct_url(sha256, answer)?),
        }
    }
}
