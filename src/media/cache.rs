//! In-memory caches in front of the store for the hottest path: downloads of small media.
//!
//! Complete media never changes, so its `Content` can be cached until the media is deleted; small
//! blobs are cached by hash under a byte budget. A hit serves a download without leaving the
//! HTTP worker: no blocking-pool hop, no copy (the body is a reference-counted `Bytes`).
//!
//! A deletion must win against fills that read the store before it and insert after it, or a
//! deleted id would be served from memory for as long as it stays cached. So every fill carries
//! a `Ticket` taken before its store read, and a fill whose ticket is older than the latest
//! `forget` does not stay: deletions are rare, and a lost fill only costs the next request a
//! store read.

use std::sync::atomic::{AtomicU64, Ordering};

use bytes::Bytes;
use quick_cache::{Weighter, sync::Cache};

use crate::model::{id::MediaKey, meta::Content};

/// Entries of metadata to keep: about 200 bytes each, so about 10 MiB at most.
const META_ENTRIES: usize = 50_000;

pub struct MediaCache {
    meta: Cache<MediaKey, Content>,
    blobs: Option<Cache<String, Bytes, BlobWeight>>,
    /// Bumped by every forget, before it removes anything.
    forgets: AtomicU64,
}

/// Taken before reading the store for a fill; see the module doc.
#[derive(Debug, Clone, Copy)]
pub struct Ticket(u64);

#[derive(Clone)]
struct BlobWeight;

impl Weighter<String, Bytes> for BlobWeight {
    fn weight(&self, _key: &String, value: &Bytes) -> u64 {
        u64::try_from(value.len()).unwrap_or(u64::MAX).max(1)
    }
}

impl MediaCache {
    /// `blob_budget` bytes of small blobs; 0 turns the blob cache off.
    pub fn new(blob_budget: u64) -> Self {
        let blobs = (blob_budget > 0).then(|| {
            // The estimate only sizes the table: assume 32 KiB per blob on average.
            let estimated = usize::try_from(blob_budget / 32_768)
                .unwrap_or(1024)
                .max(16);
            Cache::with_weighter(estimated, blob_budget, BlobWeight)
        });
        Self {
            meta: Cache::new(META_ENTRIES),
            blobs,
            forgets: AtomicU64::new(0),
        }
    }

    /// Take this before the store read whose result is to be cached.
    pub fn ticket(&self) -> Ticket {
        Ticket(self.forgets.load(Ordering::SeqCst))
    }

    /// Whether a forget happened since `ticket` was taken.
    pub(crate) fn stale(&self, ticket: Ticket) -> bool {
        self.forgets.load(Ordering::SeqCst) != ticket.0
    }

    pub fn content(&self, key: &MediaKey) -> Option<Content> {
        self.meta.get(key)
    }

    /// Caches `content`, read from the store after `ticket` was taken.
    pub fn put_content(&self, ticket: Ticket, key: MediaKey, content: Content) {
        // Insert, then look: a forget that bumped the counter after this look removes the entry
        // itself; one that bumped it before is seen here.
        self.meta.insert(key.clone(), content);
        if self.stale(ticket) {
            self.meta.remove(&key);
        }
    }

    pub fn blob(&self, sha256: &str) -> Option<Bytes> {
        self.blobs.as_ref()?.get(sha256)
    }

    /// Caches a blob's bytes, read from the store after `ticket` was taken.
    pub fn put_blob(&self, ticket: Ticket, sha256: &str, bytes: Bytes) {
        if let Some(blobs) = &self.blobs {
            blobs.insert(sha256.to_owned(), bytes);
            if self.stale(ticket) {
                blobs.remove(sha256);
            }
        }
    }

    /// Forgets `key`, and with `sha256` the bytes it pointed at. Call after the store change.
    pub fn forget(&self, key: &MediaKey, sha256: Option<&str>) {
        self.forgets.fetch_add(1, Ordering::SeqCst);
        self.meta.remove(key);
        if let (Some(blobs), Some(sha256)) = (&self.blobs, sha256) {
            blobs.remove(sha256);
        }
    }

    pub fn forget_all(&self) {
        self.forgets.fetch_add(1, Ordering::SeqCst);
        self.meta.clear();
    }
}

#[cfg(test)]
mod tests {
    use super::{Content, MediaCache, MediaKey};

    fn key() -> MediaKey {
        MediaKey {
            server_name: "localhost".parse().unwrap(),
            media_id: mxmedia_proto::ids::MediaId::generate(),
        }
    }

    fn content() -> Content {
        Content {
            content_type: "text/plain".into(),
            filename: None,
            len: 3,
            sha256: "ab".repeat(32),
        }
    }

    /// A fill that read the store before a deletion and inserts after it does not stay.
    #[test]
    fn fills_older_than_a_forget_do_not_stay() {
        let cache = MediaCache::new(1 << 20);
        let (key, content) = (key(), content());
        let ticket = cache.ticket();
        cache.forget(&key, Some(&content.sha256));
        cache.put_content(ticket, key.clone(), content.clone());
        cache.put_blob(ticket, &content.sha256, bytes::Bytes::from_static(b"abc"));
        assert!(cache.content(&key).is_none());
        assert!(cache.blob(&content.sha256).is_none());

        let ticket = cache.ticket();
        cache.put_content(ticket, key.clone(), content.clone());
        assert_eq!(cache.content(&key), Some(content));
    }
}
