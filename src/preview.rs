//! URL previews: the one place that decides what `preview_url` answers. It never sees HTTP
//! requests; the handler hands it the user, the URL and `ts`.
//!
//! A preview is cached in sled per (URL, hour of `ts`) for `cache_ttl_secs`. Concurrent
//! requests for one URL share one fetch through `SingleFlight::run_local` (the fetch uses the
//! worker's awc client, which is `!Send`). Everything fetched goes through `guard` (URL checks)
//! and the guarded connector (address checks after DNS, connection to the checked address).
//! Parsing runs on the blocking pool on at most `max_page_size` bytes. Failures are not cached;
//! the per-user rate limit bounds how often they can be retried. It is charged only for
//! requests that start a fetch: a room full of one shared link costs its readers nothing.

pub mod fetch;
pub mod guard;
pub mod html;
pub mod limit;
pub mod oembed;

use std::{
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering},
    },
    time::{Duration, Instant},
};

use bytes::Bytes;
use serde_json::{Map, Value};
use url::Url;

use self::{
    fetch::{Fetcher, ImageLimits, StoredImage},
    guard::{Guard, Refused},
    limit::RateLimiter,
};
use crate::{
    clock::now_ms,
    config::Config,
    error::{Error, Result},
    media::MediaService,
    net::ClientOptions,
    singleflight::SingleFlight,
    store::keys,
};

const HOUR_MS: u64 = 60 * 60 * 1000;
/// Sweep expired cache entries at most this often.
const SWEEP_EVERY_MS: u64 = 10 * 60 * 1000;
const ACCEPT_PAGE: &str = "text/html,application/xhtml+xml;q=0.9,image/*;q=0.8,*/*;q=0.1";
const ACCEPT_IMAGE: &str = "image/*";
const ACCEPT_JSON: &str = "application/json";

/// Why a preview could not be made. Cloneable, since every waiter of a flight gets it.
#[derive(Debug, Clone, thiserror::Error)]
pub enum Failure {
    #[error("refused by the guard")]
    Forbidden,
    #[error("upstream: {0}")]
    Upstream(String),
    #[error("timed out")]
    Timeout,
    #[error("internal: {0}")]
    Internal(String),
}

impl From<Refused> for Failure {
    fn from(refused: Refused) -> Self {
        match refused {
            Refused::Denied => Self::Forbidden,
            Refused::Dns => Self::Upstream("DNS".into()),
        }
    }
}

impl From<Failure> for Error {
    fn from(failure: Failure) -> Self {
        // The texts are fixed: nothing about the host, its addresses or its answer leaks.
        match failure {
            Failure::Forbidden => Error::Forbidden("This URL may not be previewed".into()),
            Failure::Upstream(detail) => {
                tracing::debug!(%detail, "preview fetch failed");
                Error::BadGateway("Could not fetch the URL to preview".into())
            }
            Failure::Timeout => Error::BadGateway("Timed out fetching the URL to preview".into()),
            Failure::Internal(detail) => Error::internal(detail),
        }
    }
}

type Flights = SingleFlight<Vec<u8>, Result<Bytes, Failure>>;

/// The preview service; `None` inside when previews are off.
pub struct Previews {
    inner: Option<Arc<Inner>>,
}

struct Inner {
    media: Arc<MediaService>,
    guard: Arc<Guard>,
    client: ClientOptions,
    flights: Flights,
    limiter: RateLimiter,
    max_page: usize,
    image: ImageLimits,
    max_redirects: u32,
    timeout: Duration,
    ttl_ms: u64,
    /// How long preview images are kept (never less than `ttl_ms`), and their total cap.
    image_ttl_ms: u64,
    image_cache_max: u64,
    last_sweep: AtomicU64,
}

impl Previews {
    pub fn new(config: &Config, media: Arc<MediaService>) -> anyhow::Result<Self> {
        let preview = &config.preview;
        if !preview.enabled {
            return Ok(Self { inner: None });
        }
        let max_image = preview
            .max_image_size
            .as_u64()
            .min(config.thumbnails.max_source_size.as_u64())
            .min(config.media.max_upload_size.as_u64())
            .min(preview.image_cache_max_size.as_u64());
        Ok(Self {
            inner: Some(Arc::new(Inner {
                media,
                guard: Arc::new(Guard::new(preview)?),
                client: ClientOptions {
                    tls: Arc::new(crate::net::tls::client_config(true, None)?),
                    connect_timeout: Duration::from_secs(preview.connect_timeout_secs),
                    request_timeout: Duration::from_secs(preview.timeout_secs),
                },
                flights: Flights::default(),
                limiter: RateLimiter::new(preview.rate_limit_per_minute, preview.rate_limit_burst),
                max_page: usize::try_from(preview.max_page_size.as_u64()).unwrap_or(usize::MAX),
                image: ImageLimits {
                    max_bytes: max_image,
                    max_pixels: config.thumbnails.max_source_pixels,
                },
                max_redirects: preview.max_redirects,
                timeout: Duration::from_secs(preview.timeout_secs),
                ttl_ms: preview.cache_ttl_secs.saturating_mul(1000),
                image_ttl_ms: preview.image_ttl_ms(),
                image_cache_max: preview.image_cache_max_size.as_u64(),
                last_sweep: AtomicU64::new(0),
            })),
        })
    }

    pub fn enabled(&self) -> bool {
        self.inner.is_some()
    }

    /// A client for the calling worker thread, guarded by this service's address policy.
    /// Disabled, it is a client that can reach nothing.
    pub fn client(&self) -> Option<awc::Client> {
        let inner = self.inner.as_ref()?;
        Some(crate::net::guarded_client(
            guard::Lookup(Arc::clone(&inner.guard)),
            &inner.client,
        ))
    }

    /// The preview of `raw_url` as JSON, from the cache or fetched with `client`.
    pub async fn preview(
        &self,
        client: Option<&awc::Client>,
        user: &str,
        raw_url: &str,
        ts: Option<i64>,
    ) -> Result<Bytes> {
        let (Some(inner), Some(client)) = (&self.inner, client) else {
            return Err(Error::Unrecognized);
        };
        let mut url = Url::parse(raw_url)
            .map_err(|_| Error::InvalidParam("url must be an absolute URL".into()))?;
        url.set_fragment(None);
        inner.guard.check_url(&url).map_err(Failure::from)?;
        let now = now_ms();
        let key = cache_key(&url, ts, now);
        if let Some(hit) = inner.cached(&key).await? {
            return Ok(hit);
        }
        let work = {
            let (inner, client, key) = (Arc::clone(inner), client.clone(), key.clone());
            move || async move { inner.produce(&client, url, key).await }
        };
        // The rate limit bounds the fetches a user starts: answers from the cache or from a
        // fetch already under way cost nothing.
        let admit = || inner.limiter.check(user, Instant::now());
        let (outcome, _) = inner
            .flights
            .run_local_admitted(key, admit, work)
            .await
            .map_err(|retry_after| Error::RateLimited { retry_after })?;
        let outcome = outcome.map_err(|_| Error::internal("preview task lost"))?;
        Ok(outcome?)
    }
}

/// The cache key: URL and the hour of `ts` (now if absent, never later than now).
fn cache_key(url: &Url, ts: Option<i64>, now: u64) -> Vec<u8> {
    let ts = ts
        .and_then(|t| u64::try_from(t).ok())
        .unwrap_or(now)
        .min(now);
    keys::preview(url.as_str(), ts / HOUR_MS)
}

impl Inner {
    async fn cached(&self, key: &[u8]) -> Result<Option<Bytes>> {
        let (key, now) = (key.to_vec(), now_ms());
        let hit = self
            .media
            .store()
            .blocking(move |s| s.get_preview(&key, now))
            .await?;
        Ok(hit.map(Bytes::from))
    }

    /// The flight's work: look again (another flight may just have landed), fetch, cache. The
    /// images it stores are nobody's, whoever asked first: the rate limit already charged them.
    async fn produce(
        &self,
        client: &awc::Client,
        url: Url,
        key: Vec<u8>,
    ) -> Result<Bytes, Failure> {
        if let Ok(Some(hit)) = self.cached(&key).await {
            return Ok(hit);
        }
        metrics::counter!("mxmedia_preview_fetches_total").increment(1);
        let og = tokio::time::timeout(self.timeout, self.generate(client, url, &key))
            .await
            .map_err(|_| Failure::Timeout)??;
        let json = Bytes::from(
            serde_json::to_vec(&Value::Object(og)).map_err(|e| Failure::Internal(e.to_string()))?,
        );
        let (value, now, ttl) = (json.clone(), now_ms(), self.ttl_ms);
        let last = self.last_sweep.load(Ordering::Relaxed);
        let sweep = now.saturating_sub(last) >= SWEEP_EVERY_MS
            && self
                .last_sweep
                .compare_exchange(last, now, Ordering::Relaxed, Ordering::Relaxed)
                .is_ok();
        let stored = self
            .media
            .store()
            .blocking(move |s| -> Result<()> {
                s.put_preview(&key, &value, now.saturating_add(ttl))?;
                if sweep {
                    s.expire_previews(now)?;
                }
                Ok(())
            })
            .await;
        if let Err(e) = stored {
            tracing::warn!(error = %e, "caching a preview failed");
        }
        Ok(json)
    }

    async fn generate(
        &self,
        client: &awc::Client,
        url: Url,
        key: &[u8],
    ) -> Result<Map<String, Value>, Failure> {
        let fetcher = Fetcher {
            client,
            guard: &self.guard,
            max_redirects: self.max_redirects,
        };
        // Known providers answer through oEmbed without their (heavy) page being fetched.
        if let Some(endpoint) = oembed::known_endpoint(&url)
            && let Ok(Some((og, image))) = self.embed(&fetcher, endpoint).await
        {
            return Ok(self.with_image(&fetcher, key, og, image).await);
        }
        let mut answer = fetcher.get(url, ACCEPT_PAGE).await?;
        if answer.is_image() {
            let stored = fetch::store_image(&self.media, answer, &self.image_target(key)).await?;
            return Ok(image_fields(Map::new(), stored));
        }
        if !answer.is_html() {
            return Ok(Map::new());
        }
        let (mut body, more) = fetch::read_prefix(&mut answer.body, self.max_page).await?;
        if more {
            tracing::debug!(limit = self.max_page, "preview page cut at max_page_size");
            body.truncate(self.max_page);
        }
        let (content_type, page_url) = (answer.content_type, answer.url);
        let page = blocking(move || {
            let text = html::decode(&body, content_type.as_deref());
            html::extract(&text, &page_url)
        })
        .await?;
        let (mut og, mut image) = (page.og, page.image);
        if let Some(endpoint) = page.oembed
            && let Ok(Some((embed_og, embed_image))) = self.embed(&fetcher, endpoint).await
        {
            // What the provider says about its content beats what the page's tags say.
            og.extend(embed_og);
            image = embed_image.or(image);
        }
        Ok(self.with_image(&fetcher, key, og, image).await)
    }

    /// Where an image for the preview cached under `key` goes, and its limits.
    fn image_target(&self, key: &[u8]) -> fetch::ImageTarget<'_> {
        fetch::ImageTarget {
            limits: &self.image,
            preview_key: key.to_vec(),
            ttl_ms: self.image_ttl_ms,
            cache_max_bytes: self.image_cache_max,
        }
    }

    /// Fetches and reads an oEmbed endpoint: its fields and image.
    async fn embed(
        &self,
        fetcher: &Fetcher<'_>,
        endpoint: Url,
    ) -> Result<Option<(Map<String, Value>, Option<Url>)>, Failure> {
        let mut answer = fetcher.get(endpoint, ACCEPT_JSON).await?;
        let (body, more) = fetch::read_prefix(&mut answer.body, oembed::MAX_OEMBED_BYTES).await?;
        if more {
            return Ok(None);
        }
        let base = answer.url;
        blocking(move || {
            oembed::parse(&body, &base).map(|mut embed| {
                if let Some(text) = embed.html.as_deref().and_then(html::fragment_text) {
                    embed.og.entry("og:description").or_insert(text.into());
                }
                (embed.og, embed.image)
            })
        })
        .await
    }

    /// Adds the stored copy of `image` to `og`; an image that cannot be had is left out, and
    /// never fails the preview.
    async fn with_image(
        &self,
        fetcher: &Fetcher<'_>,
        key: &[u8],
        og: Map<String, Value>,
        image: Option<Url>,
    ) -> Map<String, Value> {
        let Some(image) = image else {
            return og;
        };
        let stored = match fetcher.get(image, ACCEPT_IMAGE).await {
            Ok(answer) => fetch::store_image(&self.media, answer, &self.image_target(key)).await,
            Err(e) => Err(e),
        };
        match stored {
            Ok(stored) => image_fields(og, stored),
            Err(e) => {
                tracing::debug!(error = %e, "preview image left out");
                og
            }
        }
    }
}

/// The spec's image fields, for the copy we stored.
fn image_fields(mut og: Map<String, Value>, stored: Option<StoredImage>) -> Map<String, Value> {
    og.retain(|k, _| !html::is_image_key(k));
    if let Some(image) = stored {
        og.insert("og:image".into(), image.key.to_string().into());
        og.insert("og:image:type".into(), image.content_type.into());
        og.insert("matrix:image:size".into(), image.len.into());
        if let Some((width, height)) = image.dims {
            og.insert("og:image:width".into(), width.into());
            og.insert("og:image:height".into(), height.into());
        }
    }
    og
}

/// Runs CPU work on hostile input off the async workers.
async fn blocking<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> Result<T, Failure> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| Failure::Internal(e.to_string()))
}

#[cfg(test)]
mod tests;
