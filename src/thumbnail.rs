//! The thumbnailer: a pool of dedicated threads with a bounded queue, in front of the image
//! engine (`mxmedia-image`), with single flight and stored results.
//!
//! HTTP workers never decode or resize: they queue a job and await its answer. A full queue is
//! answered at once with 429 rather than waited on, so a flood of thumbnail requests cannot
//! stall downloads. The same thumbnail asked for many times at once is rendered once.
//!
//! No job runs unbounded: the engine refuses sources whose structure promises too much work
//! before decoding, and every job has a time budget (`pool.rs` says how an overrun is cut
//! loose). A source that could not be thumbnailed (too costly, corrupt, or over the budget) is
//! remembered for a while, so asking again costs a lookup, not another decode.

mod error;
pub mod pool;
mod render;
pub mod select;

use std::{
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering},
    },
    time::{Duration, Instant},
};

use mxmedia_image::{Limits, Probe};
use quick_cache::sync::Cache;

pub use self::error::PoolError;
use self::{
    pool::Pool,
    render::{Counters, Source, read_source, render},
    select::Choice,
};
use crate::{
    config::ThumbnailConfig,
    model::{meta::Content, thumb::ThumbSpec},
    singleflight::SingleFlight,
    store::{Store, ThumbRecord, keys},
};

/// What to send for a thumbnail request.
pub enum Served {
    /// The original bytes: the source is already small enough (the spec asks for this).
    Original { content_type: &'static str },
    /// A stored thumbnail.
    Thumbnail(ThumbRecord),
}

/// Sources that could not be thumbnailed, by hash, with when that was found: bounded, and each
/// entry is believed for `ttl` only, as a timeout may have been bad luck under load.
struct FailureMemory {
    failed: Cache<String, (Instant, PoolError)>,
    ttl: Duration,
}

impl FailureMemory {
    fn get(&self, sha256: &str) -> Option<PoolError> {
        let (at, refusal) = self.failed.get(sha256)?;
        if at.elapsed() < self.ttl {
            return Some(refusal);
        }
        self.failed.remove(sha256);
        None
    }

    fn remember(&self, sha256: &str, refusal: &PoolError) {
        if refusal.about_the_source() {
            self.failed
                .insert(sha256.to_owned(), (Instant::now(), refusal.clone()));
        }
    }
}

pub struct Thumbnailer {
    store: Store,
    pool: Pool,
    config: ThumbnailConfig,
    limits: Limits,
    probes: Cache<String, Result<Probe, PoolError>>,
    probe_flights: SingleFlight<String, Result<Probe, PoolError>>,
    renders: SingleFlight<String, Result<ThumbRecord, PoolError>>,
    /// Shared with render flights, which remember a refusal before they end.
    failures: Arc<FailureMemory>,
    generated: Arc<AtomicU64>,
    attempted: Arc<AtomicU64>,
}

impl Thumbnailer {
    pub fn new(config: &ThumbnailConfig, store: Store) -> Self {
        let workers = if config.workers == 0 {
            std::thread::available_parallelism().map_or(2, usize::from)
        } else {
            config.workers
        };
        let budget = job_budget(config.job_timeout_secs);
        let limits = Limits {
            max_pixels: config.max_source_pixels,
            max_frames: config.max_frames,
            max_total_animated_pixels: config.max_animated_pixels,
            time_budget: Some(budget),
            ..Limits::default()
        };
        Self {
            store,
            // Twice as many overrunning threads as workers may be cut loose before the pool
            // stops replacing them (see `pool.rs`).
            pool: Pool::new(workers, config.queue, budget, workers.saturating_mul(2)),
            config: config.clone(),
            limits,
            probes: Cache::new(10_000),
            probe_flights: SingleFlight::default(),
            renders: SingleFlight::default(),
            failures: Arc::new(FailureMemory {
                failed: Cache::new(10_000),
                ttl: Duration::from_secs(config.failure_cache_secs),
            }),
            generated: Arc::new(AtomicU64::new(0)),
            attempted: Arc::new(AtomicU64::new(0)),
        }
    }

    /// Thumbnails rendered since start.
    pub fn generated(&self) -> u64 {
        self.generated.load(Ordering::Relaxed)
    }

    /// Renders begun since start (decodes started), whatever came of them.
    pub fn attempted(&self) -> u64 {
        self.attempted.load(Ordering::Relaxed)
    }

    /// Threads the pool has started, replacements for overrunning ones included.
    pub fn threads_started(&self) -> usize {
        self.pool.threads_started()
    }

    /// Decides what answers a request for `content` and renders it if needed.
    pub async fn thumbnail(&self, content: &Content, req: ThumbSpec) -> Result<Served, PoolError> {
        let (spec, key, source) = match self.plan(content, req).await? {
            Planned::Original(served) => return Ok(served),
            Planned::Render { spec, key, source } => (spec, key, source),
        };
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
        let counters = Counters {
            generated: self.generated.clone(),
            attempted: self.attempted.clone(),
        };
        let (store, pool, limits) = (self.store.clone(), self.pool.clone(), self.limits.clone());
        let source = Source {
            sha256: content.sha256.clone(),
            len: content.len,
            bytes: source,
        };
        let failures = Arc::clone(&self.failures);
        let (result, _) = self
            .renders
            .run(key.clone(), move || async move {
                // A flight for this source that ended between our caller's look at the failure
                // memory and this start has refused it already; and a refusal is remembered
                // before this flight ends, so no caller arriving after it starts another.
                if let Some(refusal) = failures.get(&source.sha256) {
                    return Err(refusal);
                }
                let sha256 = source.sha256.clone();
                let rendered = render(store, pool, limits, source, key, spec, counters).await;
                if let Err(refusal) = &rendered {
                    failures.remember(&sha256, refusal);
                }
                rendered
            })
            .await;
        let record = result.map_err(|_| PoolError::Internal("thumbnail task lost"))??;
        Ok(Served::Thumbnail(record))
    }

    /// What a request for `content` would be answered with, from what is stored only: the
    /// original when it is small enough, a thumbnail already rendered, or `None`. Never renders
    /// (`HEAD` requests). A source remembered as failed answers as `GET` would.
    pub async fn stored(
        &self,
        content: &Content,
        req: ThumbSpec,
    ) -> Result<Option<Served>, PoolError> {
        Ok(match self.plan(content, req).await? {
            Planned::Original(served) => Some(served),
            Planned::Render { key, .. } => self
                .store
                .blocking(move |s| s.get_thumbnail(&key))
                .await?
                .map(Served::Thumbnail),
        })
    }

    /// The answer short of rendering: refusals known for the source, the original, or the
    /// thumbnail to render and its store key.
    async fn plan(&self, content: &Content, req: ThumbSpec) -> Result<Planned, PoolError> {
        if content.len > self.config.max_source_size.as_u64() {
            return Err(PoolError::TooLarge);
        }
        if let Some(refusal) = self.failures.get(&content.sha256) {
            return Err(refusal);
        }
        let (probe, source) = self.probe(content).await?;
        let spec = match select::choose(&probe, req, &self.config) {
            Choice::Original => {
                return Ok(Planned::Original(Served::Original {
                    content_type: probe.format.content_type(),
                }));
            }
            Choice::Render(spec) => spec,
        };
        let key = keys::thumb(&content.sha256, spec);
        Ok(Planned::Render { spec, key, source })
    }

    /// The source's header, remembered per hash; concurrent requests for one source read it
    /// once. The request that read it gets its bytes too, so a render that follows does not
    /// read a multi-megabyte photo twice.
    async fn probe(&self, content: &Content) -> Result<(Probe, Option<Vec<u8>>), PoolError> {
        if let Some(cached) = self.probes.get(&content.sha256) {
            return cached.map(|p| (p, None));
        }
        let (store, pool) = (self.store.clone(), self.pool.clone());
        let (sha256, len) = (content.sha256.clone(), content.len);
        // Only the leader's work runs; a waiter's sender is dropped unused.
        let (bytes_tx, mut bytes_rx) = tokio::sync::oneshot::channel();
        let (outcome, _) = self
            .probe_flights
            .run(content.sha256.clone(), move || async move {
                let job = pool.run(move || -> Result<Probe, PoolError> {
                    let source = read_source(&store, &sha256, len)?;
                    let probe = mxmedia_image::probe(&source).map_err(|e| error::from_engine(&e));
                    let _ = bytes_tx.send(source);
                    probe
                });
                job.await.unwrap_or_else(|refused| Err(refused.into()))
            })
            .await;
        let outcome = outcome.map_err(|_| PoolError::Internal("thumbnail probe lost"))?;
        // What the file is, is remembered; a full queue, a deleted source or a failure of ours
        // is not, and a timeout goes to the failure memory, which forgets.
        match &outcome {
            Err(refusal @ PoolError::TimedOut(_)) => {
                self.failures.remember(&content.sha256, refusal);
            }
            Err(
                PoolError::Busy | PoolError::Internal(_) | PoolError::Gone | PoolError::Unavailable,
            ) => {}
            _ => {
                self.probes.insert(content.sha256.clone(), outcome.clone());
            }
        }
        let probe = outcome?;
        Ok((probe, bytes_rx.try_recv().ok()))
    }
}

/// What answers a request, short of rendering.
enum Planned {
    Original(Served),
    Render {
        spec: ThumbSpec,
        key: String,
        /// The source's bytes when the probe has just read them.
        source: Option<Vec<u8>>,
    },
}

/// The time budget of a job from its configured seconds; nonsense gets the default.
fn job_budget(secs: f64) -> Duration {
    let secs = if secs.is_finite() {
        secs.clamp(0.01, 86_400.0)
    } else {
        20.0
    };
    Duration::from_secs_f64(secs)
}

/// How long a queued job may wait before the client is better served by a retry.
pub const RETRY_AFTER: Duration = Duration::from_secs(1);
