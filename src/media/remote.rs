//! The federation fetch cache: remote media is fetched once, kept in the store under its own
//! `server/mediaId` key (its bytes content-addressed like any blob), and served from there
//! afterwards, across restarts.
//!
//! The first request for an uncached file starts one fetch as a task of its own; it and every
//! request for the same file meanwhile follow that fetch's bytes as they arrive (`live`), or
//! await its result when they need the whole file (a thumbnail made here). A thumbnail asked
//! while the original is fetched waits for that fetch instead of starting another. Failures
//! are remembered briefly so a dead server is not asked again by every client. The HTTP
//! exchange itself is `federation::media`'s; this module decides when to fetch and what to
//! keep (https://spec.matrix.org/v1.16/client-server-api/#content-repository).

mod failures;
mod head;
mod job;
pub mod live;

use std::{sync::Arc, time::Duration};

use self::{
    failures::FailureCache,
    job::{Job, fetch_original, fetch_thumbnail},
    live::{Flights, Live, LiveMedia, Started, Takedown},
};
use super::{MediaService, cache::Ticket, rate::RateLimit};
use crate::{
    config::Config,
    error::{Error, Result},
    federation::media::{ApiMemory, FetchFailure, MediaClient},
    model::{
        id::MediaKey,
        meta::{Content, MediaMeta, MediaState},
        thumb::ThumbSpec,
    },
    singleflight::SingleFlight,
    store::{Store, ThumbRecord, keys, space::DiskBudget},
    thumbnail::{Served, select},
};

/// Why a remote thumbnail was not had: the fetch failed, or this requester may not start one.
pub enum ThumbnailMiss {
    Failed(FetchFailure),
    Refused(Error),
}

/// The `timeout_ms` passed on to the origin when the client gave none: the spec's default
/// (https://spec.matrix.org/v1.16/server-server-api/#get_matrixfederationv1mediadownloadmediaid).
const DEFAULT_TIMEOUT: Duration = Duration::from_secs(20);

pub struct Remote {
    originals: Flights,
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
            originals: Flights::default(),
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

    /// The whole original of remote media, fetched unless another request is fetching it.
    pub async fn original(
        &self,
        store: &Store,
        key: &MediaKey,
        client: &MediaClient,
        timeout: Option<Duration>,
        requester: Option<&str>,
    ) -> Result<Content> {
        let live = self.follow(store, key, client, timeout, requester)?;
        live.outcome().await.map_err(Error::from)
    }

    /// The fetch of remote media's original: the one in flight, or a new one.
    fn follow(
        &self,
        store: &Store,
        key: &MediaKey,
        client: &MediaClient,
        timeout: Option<Duration>,
        requester: Option<&str>,
    ) -> Result<Arc<Live>> {
        let flight = key.to_string();
        self.failures.check(&flight)?;
        self.charge(requester)?;
        let job = self.job(store, key, client, &flight, timeout);
        let (live, leader) = self.originals.join(&flight, move |live| {
            job.run(move |job| fetch_original(job, live))
        });
        count_waiter(leader);
        Ok(live)
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

    /// Stops the fetch of `key`'s original in flight, if any: an admin removed it.
    pub(super) fn cancel(&self, key: &MediaKey) {
        if let Some(live) = self.originals.get(&key.to_string()) {
            live.cancel();
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

/// What a download of remote media is answered with.
pub enum Download {
    /// Complete and stored.
    Stored(Content),
    /// Being fetched: its bytes follow as they arrive.
    Live(LiveMedia),
}

/// Where a request for remote media's original stands once the cache and the store were asked.
enum Opening {
    /// Complete and stored (and now cached).
    Stored(Content),
    /// Neither stored nor withheld: it must be fetched, then cached under this ticket.
    Fetch(Ticket),
}

impl MediaService {
    /// The steps every request for a remote original opens with: mark it used, take the cache
    /// ticket before reading the store, answer from the cache or the store when it is there,
    /// and refuse media an admin withheld before anything is asked of its origin.
    async fn open_remote(&self, key: &MediaKey) -> Result<Opening> {
        self.touch(key);
        let ticket = self.cache.ticket();
        let cached = match self.cache.content(key) {
            Some(content) => Some(content),
            None => stored(&self.store, key).await?,
        };
        if let Some(content) = cached {
            metrics::counter!("mxmedia_remote_cache_hits_total").increment(1);
            self.cache.put_content(ticket, key.clone(), content.clone());
            return Ok(Opening::Stored(content));
        }
        if self.is_withheld(key).await? {
            return Err(Error::NotFound);
        }
        Ok(Opening::Fetch(ticket))
    }

    /// A download of remote media: from the store when fetched before, else followed while it
    /// is fetched from its origin once, however many requests ask at the same time.
    pub async fn remote_download(
        &self,
        key: &MediaKey,
        client: &MediaClient,
        timeout: Option<Duration>,
        requester: Option<&str>,
    ) -> Result<Download> {
        let ticket = match self.open_remote(key).await? {
            Opening::Stored(content) => return Ok(Download::Stored(content)),
            Opening::Fetch(ticket) => ticket,
        };
        let live = self
            .remote
            .follow(&self.store, key, client, timeout, requester)?;
        // Bytes on the hash quarantine list must never reach a client, and a hash is known only
        // once the file is complete: with a list in use, readers wait for the commit.
        if self.store.blocking(|s| s.has_quarantined_hashes()).await? {
            let content = live.outcome().await?;
            self.cache.put_content(ticket, key.clone(), content.clone());
            return Ok(Download::Stored(content));
        }
        match live.started().await {
            Started::Done(outcome) => {
                let content = outcome?;
                self.cache.put_content(ticket, key.clone(), content.clone());
                Ok(Download::Stored(content))
            }
            Started::Body(body) => {
                let mut takedown = Takedown::new(
                    self.store.clone(),
                    Arc::clone(&self.cache),
                    key.clone(),
                    ticket,
                );
                // Removed while the origin was asked: not a single byte goes out.
                takedown.check().await?;
                Ok(Download::Live(LiveMedia::new(live, body, takedown)))
            }
        }
    }

    /// The whole content of remote media: from the store when fetched before, else fetched from
    /// its origin once, however many requests ask at the same time.
    pub async fn remote_content(
        &self,
        key: &MediaKey,
        client: &MediaClient,
        timeout: Option<Duration>,
        requester: Option<&str>,
    ) -> Result<Content> {
        let ticket = match self.open_remote(key).await? {
            Opening::Stored(content) => return Ok(content),
            Opening::Fetch(ticket) => ticket,
        };
        let content = self
            .remote
            .original(&self.store, key, client, timeout, requester)
            .await?;
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
        // The original is on its way: make the thumbnail here from it rather than ask again.
        if self.remote.originals.get(&key.to_string()).is_some() {
            let content = self.remote_content(key, client, timeout, requester).await?;
            let served = self
                .thumbnails
                .thumbnail(&content, spec)
                .await
                .map_err(remote_too_large)?;
            return Ok((content, served));
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
