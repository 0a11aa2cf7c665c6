//! In-memory caches in front of the store for the hottest path: downloads of small media.
//!
//! Complete media never changes, so its `Content` can be cached until the media is deleted; small
//! blobs are cached by hash under a byte budget. A hit serves a download without leaving the
//! HTTP worker: no blocking-pool hop, no copy (the body is a reference-counted `Bytes`).

use bytes::Bytes;
use quick_cache::{Weighter, sync::Cache};

use super::{id::MediaKey, meta::Content};

/// Entries of metadata to keep: about 200 bytes each, so about 10 MiB at most.
const META_ENTRIES: usize = 50_000;

pub struct MediaCache {
    meta: Cache<MediaKey, Content>,
    blobs: Option<Cache<String, Bytes, BlobWeight>>,
}

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
        }
    }

    pub fn content(&self, key: &MediaKey) -> Option<Content> {
        self.meta.get(key)
    }

    pub fn put_content(&self, key: MediaKey, content: Content) {
        self.meta.insert(key, content);
    }

    pub fn blob(&self, sha256: &str) -> Option<Bytes> {
        self.blobs.as_ref()?.get(sha256)
    }

    pub fn put_blob(&self, sha256: &str, bytes: Bytes) {
        if let Some(blobs) = &self.blobs {
            blobs.insert(sha256.to_owned(), bytes);
        }
    }

    pub fn forget(&self, key: &MediaKey) {
        self.meta.remove(key);
    }

    pub fn forget_all(&self) {
        self.meta.clear();
    }
}
