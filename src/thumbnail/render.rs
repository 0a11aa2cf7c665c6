//! One render job: look for a stored thumbnail, read the source if the probe has not, decode
//! and resize within the limits, store the result. All of it runs on one pool thread, as each
//! hop between threads costs as much as encoding a small thumbnail.

use std::sync::{
    Arc,
    atomic::{AtomicU64, Ordering},
};

use mxmedia_image::Limits;

use super::{PoolError, error, pool::Pool};
use crate::{
    model::thumb::ThumbSpec,
    store::{BlobReader, Store, StoreError, ThumbRecord},
};

/// A source to render from: its bytes if the caller has them already.
pub(super) struct Source {
    pub(super) sha256: String,
    pub(super) len: u64,
    pub(super) bytes: Option<Vec<u8>>,
}

/// What renders count.
pub(super) struct Counters {
    pub(super) generated: Arc<AtomicU64>,
    pub(super) attempted: Arc<AtomicU64>,
}

pub(super) async fn render(
    store: Store,
    pool: Pool,
    limits: Limits,
    source: Source,
    key: String,
    spec: ThumbSpec,
    counters: Counters,
) -> Result<ThumbRecord, PoolError> {
    // One job does the lookup, the render and the store: each hop between threads costs as
    // much as a small thumbnail's encoding.
    let job = pool.run(move || -> Result<ThumbRecord, PoolError> {
        // A flight that ended between our caller's lookup and this one's start has stored the
        // thumbnail already: look again rather than render it twice.
        if let Some(record) = store.get_thumbnail(&key)? {
            return Ok(record);
        }
        let bytes = match source.bytes {
            Some(bytes) => bytes,
            None => read_source(&store, &source.sha256, source.len)?,
        };
        counters.attempted.fetch_add(1, Ordering::Relaxed);
        let thumb = match mxmedia_image::thumbnail(
            &bytes,
            spec.width,
            spec.height,
            spec.method,
            spec.animated,
            &limits,
        ) {
            Ok(thumb) => thumb,
            Err(e) => return Err(error::from_engine(&e)),
        };
        drop(bytes);
        counters.generated.fetch_add(1, Ordering::Relaxed);
        metrics::counter!("mxmedia_thumbnails_generated_total").increment(1);
        Ok(store.put_thumbnail(&key, &thumb.bytes, thumb.content_type)?)
    });
    job.await.unwrap_or_else(|refused| Err(refused.into()))
}

/// Reads a whole source blob of `len` bytes: the engine decodes from memory, and sources are
/// size-capped.
pub(super) fn read_source(store: &Store, sha256: &str, len: u64) -> Result<Vec<u8>, StoreError> {
    match store.open_blob(sha256)? {
        BlobReader::Inline(bytes) => Ok(bytes.to_vec()),
        BlobReader::Stream(mut reader) => {
            let mut out = Vec::with_capacity(usize::try_from(len).unwrap_or(0));
            std::io::Read::read_to_end(&mut reader, &mut out)?;
            Ok(out)
        }
    }
}
