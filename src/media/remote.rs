//! The federation fetch cache: remote media is fetched once, kept in the store under its own
//! `server/mediaId` key (its bytes content-addressed like any blob), and served from there
//! afterwards, across restarts.
//!
//! The first request for an uncached file starts one fetch as a task of its own; every request
//! for the same file meanwhile awaits that task and gets its result, success or failure.
//! Failures are remembered briefly so a dead server is not asked again by every client. The
//! HTTP exchange itself is `federation::media`'s; this module decides when to fetch and what
//! to keep.

mod failures;
mod head;

use std::{
    sync::Arc,
    time::{Duration, Instant},
};

use self::failures::{FailureCache, reason};
use super::{MediaService, rate::RateLimit};
use crate::{
    clock::now_ms,
    config::Config,
    error::{Error, Result},
    federation::media::{ApiMemory, FetchFailure, Fetched, MediaClient, Wanted},
    model::{
        id::MediaKey,
        meta::{Content, MediaMeta, MediaState},
        thumb::ThumbSpec,
    },
    singleflight::SingleFlight,
    store::{
        Expect, Store, StoreError, ThumbRecord, Upload, keys, space::DiskBudget, spool::Spool,
    },
    thumbnail::{Served, select},
};

/// Why a remote thumbnail was not had: the fetch failed, or this requester may not start one.
pub enum ThumbnailMiss {
    Failed(FetchFailure),
    Refused(Error),
}

/// The default `timeout_ms` passed on to the origin (the spec's default).
const DEFAULT_TIMEOUT: Duration = Duration::from_secs(20);

pub struct Remote {
    originals: SingleFlight<String, Result<Content, FetchFailure>>,
    thumbnails: SingleFlight<String, Result<ThumbRecord, FetchFailure>>,
    failures: Arc<FailureCache>,
    apis: Arc<ApiMemory>,
    max_size: u64,
    max_timeout: Duration,
    /// Shared with local uploads: fetched bytes reserve against the same free-space floor.
    budget: DiskBudget,
    /// Fetches each user may start per minute.
    fetch_rate: RateLimit,
}

impl Remote {
    pub fn new(config: &Config, budget: DiskBudget) -> Self {
        Self {
            originals: SingleFlight::default(),
            thumbnails: SingleFlight::default(),
            failures: Arc::new(FailureCache::new(Duration::from_secs(
                config.media.remote_failure_cache_secs,
            ))),
            apis: Arc::new(ApiMemory::default()),
            max_size: config.media.max_remote_size.as_u64(),
            max_timeout: Duration::from_millis(config.media.max_timeout_ms),
            budget,
            fetch_rate: RateLimit::new(config.media.user_remote_fetch_rate_per_minute),
        }
    }

    /// Charges one fetch to `requester` (unauthenticated legacy requests are not limited here).
    fn charge(&self, requester: Option<&str>) -> Result<()> {
        match requester {
            Some(user) => self.fetch_rate.take(user, 1),
            None => Ok(()),
        }
    }

    /// The original of remote media, fetched unless another request is fetching it already.
    pub async fn original(
        &self,
        store: &Store,
        key: &MediaKey,
        client: &MediaClient,
        timeout: Option<Duration>,
        requester: Option<&str>,
    ) -> Result<Content> {
        let flight = key.to_string();
        self.failures.check(&flight)?;
        self.charge(requester)?;
        let job = self.job(store, key, client, &flight, timeout);
        let (result, leader) = self
            .originals
            .run_local(flight, move || job.run(fetch_original))
            .await;
        count_waiter(leader);
        result
            .map_err(|_| Error::internal("remote fetch task lost"))?
            .map_err(Error::from)
    }

    /// A thumbnail of remote media asked from its origin and kept as that media's thumbnail.
    pub async fn thumbnail(
        &self,
        store: &Store,
        key: &MediaKey,
        spec: ThumbSpec,
        client: &MediaClient,
        timeout: Option<Duration>,
        requester: Option<&str>,
    ) -> Result<ThumbRecord, ThumbnailMiss> {
        let thumb_key = keys::remote_thumb(key, spec);
        let lookup = thumb_key.clone();
        if let Some(record) = store
            .blocking(move |s| s.get_thumbnail(&lookup))
            .await
            .map_err(|e| ThumbnailMiss::Failed(FetchFailure::Local(e.to_string())))?
        {
            metrics::counter!("mxmedia_remote_cache_hits_total").increment(1);
            return Ok(record);
        }
        if let Some(failure) = self.failures.get(&thumb_key) {
            return Err(ThumbnailMiss::Failed(failure));
        }
        self.charge(requester).map_err(ThumbnailMiss::Refused)?;
        let job = self.job(store, key, client, &thumb_key, timeout);
        let (result, leader) = self
            .thumbnails
            .run_local(thumb_key, move || {
                job.run(move |job| fetch_thumbnail(job, spec))
            })
            .await;
        count_waiter(leader);
        result
            .map_err(|_| {
                ThumbnailMiss::Failed(FetchFailure::Local("remote thumbnail task lost".into()))
            })?
            .map_err(ThumbnailMiss::Failed)
    }

    /// The work of one flight, owning everything it needs to outlive the request that started it.
    fn job(
        &self,
        store: &Store,
        key: &MediaKey,
        client: &MediaClient,
        flight: &str,
        timeout: Option<Duration>,
    ) -> Job {
        Job {
            store: store.clone(),
            client: client.clone(),
            apis: Arc::clone(&self.apis),
            failures: Arc::clone(&self.failures),
            key: key.clone(),
            flight: flight.to_owned(),
            timeout_ms: self.timeout_ms(timeout),
            max_size: self.max_size,
            budget: self.budget.clone(),
        }
    }

    fn timeout_ms(&self, timeout: Option<Duration>) -> u64 {
        let timeout = timeout.unwrap_or(DEFAULT_TIMEOUT).min(self.max_timeout);
        u64::try_from(timeout.as_millis()).unwrap_or(u64::MAX)
    }
}

fn count_waiter(leader: bool) {
    if !leader {
        metrics::counter!("mxmedia_remote_fetch_waiters_total").increment(1);
    }
}

/// One fetch, owned by the task that runs it.
struct Job {
    store: Store,
    client: MediaClient,
    apis: Arc<ApiMemory>,
    failures: Arc<FailureCache>,
    key: MediaKey,
    flight: String,
    timeout_ms: u64,
    max_size: u64,
    budget: DiskBudget,
}

impl Job {
    /// Runs `fetch`, counting it and remembering its failure.
    async fn run<T, F, Fut>(self, fetch: F) -> Result<T, FetchFailure>
    where
        F: FnOnce(Job) -> Fut,
        Fut: Future<Output = Result<T, FetchFailure>>,
    {
        let (failures, flight, key) = (
            Arc::clone(&self.failures),
            self.flight.clone(),
            self.key.clone(),
        );
        let started = Instant::now();
        let result = fetch(self).await;
        metrics::histogram!("mxmedia_remote_fetch_duration_seconds")
            .record(started.elapsed().as_secs_f64());
        if let Err(failure) = &result {
            tracing::warn!(media = %key, ?failure, "remote fetch failed");
            metrics::counter!("mxmedia_remote_fetch_failures_total", "reason" => reason(failure))
                .increment(1);
            failures.put(flight, failure.clone());
        }
        result
    }

    async fn spool(&self) -> Result<Spool, FetchFailure> {
        // Already below the floor: do not ask the origin at all. The bytes that arrive are
        // reserved as they come (`Spool::write`).
        self.budget.check(0).await.map_err(|e| match e {
            StoreError::NoSpace => FetchFailure::NoSpace,
            other => local(other),
        })?;
        let staging = self.store.blocking(Store::stage).await.map_err(local)?;
        Ok(Spool::new(
            staging,
            self.max_size,
            self.budget.reservation(),
        ))
    }

    async fn fetch(&self, spool: &mut Spool, wanted: Wanted) -> Result<Fetched, FetchFailure> {
        metrics::counter!("mxmedia_remote_fetches_total").increment(1);
        let fetched = self
            .client
            .fetch(
                &self.apis,
                &self.key.server_name,
                &self.key.media_id,
                wanted,
                self.timeout_ms,
                spool,
            )
            .await?;
        metrics::counter!("mxmedia_remote_fetch_bytes_total").increment(spool.len());
        Ok(fetched)
    }
}

async fn fetch_original(job: Job) -> Result<Content, FetchFailure> {
    // Claim, then re-check: a fetch that ended just before this one began has stored the file.
    if let Some(content) = stored(&job.store, &job.key).await.map_err(local)? {
        return Ok(content);
    }
    let mut spool = job.spool().await?;
    let fetched = job.fetch(&mut spool, Wanted::Download).await?;
    let staged = spool.finish().await.map_err(local)?;
    let key = job.key.clone();
    job.store
        .blocking(move |s| {
            let upload = Upload {
                content_type: fetched.content_type,
                filename: fetched.filename,
                uploader: key.server_name.as_str(),
                created_at: now_ms(),
                expect: Expect::Absent,
            };
            // Blocked: an admin blocked the id while we fetched; the store kept nothing.
            match s.commit_upload(&key, staged, upload) {
                Ok(()) | Err(StoreError::Exists) => {}
                Err(e) => return Err(e),
            }
            // Quarantined bytes are quarantined as they are stored: never served.
            match s.get_servable_meta(&key)? {
                Some(MediaMeta {
                    state: MediaState::Complete(content),
                    ..
                }) => Ok(content),
                // Deleted right after it was stored, or quarantined.
                _ => Err(StoreError::NotFound),
            }
        })
        .await
        .map_err(committed)
}

async fn fetch_thumbnail(job: Job, spec: ThumbSpec) -> Result<ThumbRecord, FetchFailure> {
    let thumb_key = job.flight.clone();
    let lookup = thumb_key.clone();
    if let Some(record) = job
        .store
        .blocking(move |s| s.get_thumbnail(&lookup))
        .await
        .map_err(local)?
    {
        return Ok(record);
    }
    let mut spool = job.spool().await?;
    let fetched = job.fetch(&mut spool, Wanted::Thumbnail(spec)).await?;
    if !fetched.content_type.starts_with("image/") {
        return Err(FetchFailure::Remote(format!(
            "thumbnail is {}, not an image",
            fetched.content_type
        )));
    }
    let staged = spool.finish().await.map_err(local)?;
    job.store
        .blocking(move |s| s.commit_thumbnail(&thumb_key, staged, &fetched.content_type))
        .await
        .map_err(committed)
}

/// A commit that lost to a deletion or block answers as missing media does.
fn committed(err: impl Into<Error>) -> FetchFailure {
    match err.into() {
        Error::NotFound => FetchFailure::NotFound,
        other => local(other),
    }
}

/// Complete media stored under `key` and not quarantined, if any.
pub(super) async fn stored(store: &Store, key: &MediaKey) -> Result<Option<Content>> {
    let lookup = key.clone();
    Ok(
        match store
            .blocking(move |s| s.get_servable_meta(&lookup))
            .await?
        {
            Some(MediaMeta {
                state: MediaState::Complete(content),
                ..
            }) => Some(content),
            _ => None,
        },
    )
}

fn local(err: impl std::fmt::Display) -> FetchFailure {
    FetchFailure::Local(err.to_string())
}

impl MediaService {
    /// The content of remote media: from the store when fetched before, else fetched from its
    /// origin once, however many requests ask at the same time.
    pub async fn remote_content(
        &self,
        key: &MediaKey,
        client: &MediaClient,
        timeout: Option<Duration>,
        requester: Option<&str>,
    ) -> Result<Content> {
        self.touch(key);
        let ticket = self.cache.ticket();
        let cached = match self.cache.content(key) {
            Some(content) => Some(content),
            None => stored(&self.store, key).await?,
        };
        let content = match cached {
            Some(content) => {
                metrics::counter!("mxmedia_remote_cache_hits_total").increment(1);
                content
            }
            None => {
                if self.is_withheld(key).await? {
                    return Err(Error::NotFound);
                }
                self.remote
                    .original(&self.store, key, client, timeout, requester)
                    .await?
            }
        };
        self.cache.put_content(ticket, key.clone(), content.clone());
        Ok(content)
    }

    /// A thumbnail of remote media: one kept from its origin, else one made here from the
    /// original when that is stored, else one asked from the origin; and when the origin cannot
    /// give one, one made here from the fetched original (unless configured off).
    pub async fn remote_thumbnail(
        &self,
        key: &MediaKey,
        spec: ThumbSpec,
        client: &MediaClient,
        timeout: Option<Duration>,
        requester: Option<&str>,
    ) -> Result<(Content, Served)> {
        self.touch(key);
        if let Some(content) = stored(&self.store, key).await? {
            let served = self
                .thumbnails
                .thumbnail(&content, spec)
                .await
                .map_err(remote_too_large)?;
            return Ok((content, served));
        }
        if self.is_withheld(key).await? {
            return Err(Error::NotFound);
        }
        let asked = select::snap(spec, &self.thumbnail_config);
        let failure = match self
            .remote
            .thumbnail(&self.store, key, asked, client, timeout, requester)
            .await
        {
            Ok(record) => {
                let content = Content {
                    content_type: record.content_type.clone(),
                    filename: None,
                    len: record.len,
                    sha256: record.sha256.clone(),
                };
                return Ok((content, Served::Thumbnail(record)));
            }
            Err(ThumbnailMiss::Refused(err)) => return Err(err),
            Err(ThumbnailMiss::Failed(failure)) => failure,
        };
        // Waiting twice for a server that did not answer helps nobody.
        if !self.remote_thumbnail_fallback
            || matches!(
                failure,
                FetchFailure::Timeout
                    | FetchFailure::NotYetUploaded
                    | FetchFailure::Local(_)
                    | FetchFailure::NoSpace
            )
        {
            return Err(failure.into());
        }
        tracing::debug!(media = %key, ?failure, "no remote thumbnail; making one here");
        let content = self.remote_content(key, client, timeout, requester).await?;
        let served = self
            .thumbnails
            .thumbnail(&content, spec)
            .await
            .map_err(remote_too_large)?;
        Ok((content, served))
    }
}

/// Remote content too large to thumbnail is 502 `M_TOO_LARGE` (spec), not the local 413.
fn remote_too_large(err: impl Into<Error>) -> Error {
    match err.into() {
        Error::TooLarge(_) => Error::RemoteTooLarge,
        other => other,
    }
}
