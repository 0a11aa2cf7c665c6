//! The thumbnailer: a pool of dedicated threads with a bounded queue, in front of the image
//! engine (`mxmedia-image`), with single flight and stored results.
//!
//! HTTP workers never decode or resize: they queue a job and await its answer. A full queue is
//! answered at once with 429 rather than waited on, so a flood of thumbnail requests cannot
//! stall downloads. The same thumbnail asked for many times at once is rendered once.

pub mod pool;
pub mod select;

use std::{
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering},
    },
    time::Duration,
};

use mxmedia_image::{Limits, Method, Probe};
use quick_cache::sync::Cache;

use self::{
    pool::Pool,
    select::{Choice, ThumbSpec},
};
use crate::{
    config::ThumbnailConfig,
    error::{Error, Result},
    media::meta::Content,
    singleflight::SingleFlight,
    store::{BlobReader, Store, ThumbRecord},
};

/// What to send for a thumbnail request.
pub enum Served {
    /// The original bytes: the source is already small enough (the spec asks for this).
    Original { content_type: &'static str },
    /// A stored thumbnail.
    Thumbnail(ThumbRecord),
}

/// Why no thumbnail came out. The first two are remembered per source, so a bad file is
/// decoded only once; the others are about this moment and are not.
#[derive(Debug, Clone)]
enum Refusal {
    CannotThumbnail,
    TooLarge,
    Busy,
    Internal,
    /// The source was deleted meanwhile: nothing was stored.
    Gone,
}

impl From<Error> for Refusal {
    fn from(err: Error) -> Self {
        match err {
            Error::RateLimited { .. } => return Self::Busy,
            Error::NotFound => return Self::Gone,
            _ => {}
        }
        tracing::error!(error = %err, source = ?std::error::Error::source(&err), "thumbnail job failed");
        Self::Internal
    }
}

pub struct Thumbnailer {
    store: Store,
    pool: Pool,
    config: ThumbnailConfig,
    limits: Limits,
    probes: Cache<String, Result<Probe, Refusal>>,
    probe_flights: SingleFlight<String, Result<Probe, Refusal>>,
    renders: SingleFlight<String, Result<ThumbRecord, Refusal>>,
    generated: Arc<AtomicU64>,
}

impl Thumbnailer {
    pub fn new(config: &ThumbnailConfig, store: Store) -> Self {
        let workers = if config.workers == 0 {
            std::thread::available_parallelism().map_or(2, usize::from)
        } else {
            config.workers
        };
        let limits = Limits {
            max_pixels: config.max_source_pixels,
            max_frames: config.max_frames,
            max_total_animated_pixels: config.max_animated_pixels,
        };
        Self {
            store,
            pool: Pool::new(workers, config.queue),
            config: config.clone(),
            limits,
            probes: Cache::new(10_000),
            probe_flights: SingleFlight::default(),
            renders: SingleFlight::default(),
            generated: Arc::new(AtomicU64::new(0)),
        }
    }

    /// Thumbnails rendered since start.
    pub fn generated(&self) -> u64 {
        self.generated.load(Ordering::Relaxed)
    }

    /// Decides what answers a request for `content` and renders it if needed.
    pub async fn thumbnail(&self, content: &Content, req: ThumbSpec) -> Result<Served> {
        if content.len > self.config.max_source_size.as_u64() {
            return Err(too_large());
        }
        let (probe, source) = self.probe(content).await?;
        let spec = match select::choose(&probe, req, &self.config) {
            Choice::Original => {
                return Ok(Served::Original {
                    content_type: probe.format.content_type(),
                });
            }
            Choice::Render(spec) => spec,
        };
        let key = format!(
            "{}/{}x{}/{}/{}",
            content.sha256,
            spec.width,
            spec.height,
            method_name(spec.method),
            spec.animated
        );
        // A stored thumbnail is looked for here, off the pool, so hits never queue behind
        // renders. Not when the probe has just read the source: that request is on the pool's
        // path anyway, and the render job looks first.
        if source.is_none() {
            let lookup = key.clone();
            if let Some(record) = self
                .store
                .blocking(move |s| s.get_thumbnail(&lookup))
                .await?
            {
                return Ok(Served::Thumbnail(record));
            }
        }
        let (store, pool, limits, generated) = (
            self.store.clone(),
            self.pool.clone(),
            self.limits.clone(),
            self.generated.clone(),
        );
        let source = Source {
            sha256: content.sha256.clone(),
            len: content.len,
            bytes: source,
        };
        let (result, _) = self
            .renders
            .run(key.clone(), move || async move {
                render(store, pool, limits, source, key, spec, generated).await
            })
            .await;
        match result.map_err(|_| Error::internal(anyhow::anyhow!("thumbnail task lost")))? {
            Ok(record) => Ok(Served::Thumbnail(record)),
            Err(refusal) => Err(refusal_error(&refusal)),
        }
    }

    /// The source's header, remembered per hash; concurrent requests for one source read it
    /// once. The request that read it gets its bytes too, so a render that follows does not
    /// read a multi-megabyte photo twice.
    async fn probe(&self, content: &Content) -> Result<(Probe, Option<Vec<u8>>)> {
        if let Some(cached) = self.probes.get(&content.sha256) {
            return cached.map(|p| (p, None)).map_err(|r| refusal_error(&r));
        }
        let (store, pool) = (self.store.clone(), self.pool.clone());
        let (sha256, len) = (content.sha256.clone(), content.len);
        // Only the leader's work runs; a waiter's sender is dropped unused.
        let (bytes_tx, mut bytes_rx) = tokio::sync::oneshot::channel();
        let (outcome, _) = self
            .probe_flights
            .run(content.sha256.clone(), move || async move {
                let job = pool.run(move || -> Result<Result<Probe, Refusal>> {
                    let source = read_source(&store, &sha256, len)?;
                    let probe = mxmedia_image::probe(&source).map_err(|e| refusal(&e));
                    let _ = bytes_tx.send(source);
                    Ok(probe)
                });
                job.await
                    .and_then(|r| r)
                    .unwrap_or_else(|e| Err(Refusal::from(e)))
            })
            .await;
        let outcome =
            outcome.map_err(|_| Error::internal(anyhow::anyhow!("thumbnail probe lost")))?;
        // What the file is, is remembered; a full queue or a failure of ours is not.
        if !matches!(
            outcome,
            Err(Refusal::Busy | Refusal::Internal | Refusal::Gone)
        ) {
            self.probes.insert(content.sha256.clone(), outcome.clone());
        }
        let probe = outcome.map_err(|r| refusal_error(&r))?;
        Ok((probe, bytes_rx.try_recv().ok()))
    }
}

/// A source to render from: its bytes if the caller has them already.
struct Source {
    sha256: String,
    len: u64,
    bytes: Option<Vec<u8>>,
}

async fn render(
    store: Store,
    pool: Pool,
    limits: Limits,
    source: Source,
    key: String,
    spec: ThumbSpec,
    generated: Arc<AtomicU64>,
) -> Result<ThumbRecord, Refusal> {
    // One job does the lookup, the render and the store: each hop between threads costs as
    // much as a small thumbnail's encoding.
    pool.run(move || -> Result<Result<ThumbRecord, Refusal>> {
        // A flight that ended between our caller's lookup and this one's start has stored the
        // thumbnail already: look again rather than render it twice.
        if let Some(record) = store.get_thumbnail(&key)? {
            return Ok(Ok(record));
        }
        let bytes = match source.bytes {
            Some(bytes) => bytes,
            None => read_source(&store, &source.sha256, source.len)?,
        };
        let thumb = match mxmedia_image::thumbnail(
            &bytes,
            spec.width,
            spec.height,
            spec.method,
            spec.animated,
            &limits,
        ) {
            Ok(thumb) => thumb,
            Err(e) => return Ok(Err(refusal(&e))),
        };
        drop(bytes);
        generated.fetch_add(1, Ordering::Relaxed);
        metrics::counter!("mxmedia_thumbnails_generated_total").increment(1);
        Ok(Ok(store.put_thumbnail(
            &key,
            &thumb.bytes,
            thumb.content_type,
        )?))
    })
    .await?
    .map_err(Refusal::from)?
}

/// Reads a whole source blob of `len` bytes: the engine decodes from memory, and sources are
/// size-capped.
fn read_source(store: &Store, sha256: &str, len: u64) -> Result<Vec<u8>> {
    match store.open_blob(sha256)? {
        BlobReader::Inline(bytes) => Ok(bytes.to_vec()),
        BlobReader::Stream(mut reader) => {
            let mut out = Vec::with_capacity(usize::try_from(len).unwrap_or(0));
            std::io::Read::read_to_end(&mut reader, &mut out)?;
            Ok(out)
        }
    }
}

fn refusal(err: &mxmedia_image::Error) -> Refusal {
    match err {
        mxmedia_image::Error::TooLarge { .. } | mxmedia_image::Error::TooManyFrames { .. } => {
            Refusal::TooLarge
        }
        mxmedia_image::Error::Unsupported
        | mxmedia_image::Error::Corrupt(_)
        | mxmedia_image::Error::Internal(_) => {
            tracing::debug!(error = %err, "cannot thumbnail");
            Refusal::CannotThumbnail
        }
    }
}

fn refusal_error(refusal: &Refusal) -> Error {
    match refusal {
        Refusal::CannotThumbnail => {
            Error::CannotThumbnail("Cannot generate thumbnails for the requested content".into())
        }
        Refusal::TooLarge => too_large(),
        Refusal::Busy => Error::RateLimited {
            retry_after: RETRY_AFTER,
        },
        Refusal::Internal => Error::internal(anyhow::anyhow!("thumbnail rendering failed")),
        Refusal::Gone => Error::NotFound,
    }
}

fn too_large() -> Error {
    Error::TooLarge("The image is too large to thumbnail".into())
}

pub(crate) fn method_name(method: Method) -> &'static str {
    match method {
        Method::Crop => "crop",
        Method::Scale => "scale",
    }
}

/// How long a queued job may wait before the client is better served by a retry.
pub const RETRY_AFTER: Duration = Duration::from_secs(1);
