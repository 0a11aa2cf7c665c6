//! Remote servers' signing keys, for checking their X-Matrix requests.
//!
//! Keys come from the server itself (`/_matrix/key/v2/server`, after discovery), else from the
//! configured notaries. Every response is validated (self-signature, server name, expiry) before
//! use, kept in memory and in sled until `min(valid_until_ts, now + 7 days)`, and validated again
//! when read back after a restart. The periodic sweep removes sled records past that time (no
//! grace after it: a record whose keys expired fails validation on load and only costs space;
//! the 7-day ceiling is the spec's) and bounds their number and bytes (`store::server_keys`).
//! Concurrent requests from one origin cause one fetch; a failed fetch is remembered briefly
//! so a flood of bad requests cannot make us hammer anybody.
//!
//! Fetching keys is work an unauthenticated request causes, so it has a budget: one fetch per
//! request (`FetchAllowance`), at most `FETCH_CONCURRENCY` origins fetched at once, and origins
//! we know nothing about started at `NEW_ORIGIN_RATE` per second (burst `NEW_ORIGIN_BURST`);
//! past the global budget the request is refused with 429 so a genuine server retries. The
//! memory it fills is bounded too: keys by weight, failures by count, both with expiry.

use std::{
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use mxmedia_proto::{KeyId, ServerKeys, ServerName, VerifyKey, validate_server_keys};

use self::budget::Bucket;
use super::Federation;
use crate::{
    clock::now_ms,
    config::TrustedKeyServer,
    singleflight::SingleFlight,
    store::{
        Store, StoreError,
        server_keys::{KeyBounds, SweptKeys},
    },
    ttl_cache::{Count, TtlCache},
};

/// A key ID the cached response does not list triggers a new fetch only this long after the
/// last one: enough for key rotation, too slow for a request flood to matter.
const UNKNOWN_KEY_REFETCH: Duration = Duration::from_secs(60);
/// How long a failed fetch is remembered before the origin is asked again.
const FAILURE_TTL: Duration = Duration::from_secs(30);
/// Origins whose keys are being fetched at once. A fetch is discovery plus one or two HTTPS
/// requests, each bounded by the request timeout; 16 keeps a flood of made-up origins from
/// holding more than a few dozen sockets while leaving room for real servers arriving together.
pub const FETCH_CONCURRENCY: usize = 16;
/// Sustained rate of fetches for origins with no keys in memory or sled. A server learns of a
/// few new origins a minute in normal life; a burst covers a restart with an empty cache.
pub const NEW_ORIGIN_RATE: f64 = 5.0;
pub const NEW_ORIGIN_BURST: f64 = 20.0;
/// Key fetches one request may cause: a request comes from one origin, so one is all a genuine
/// server needs, whatever number of X-Matrix headers it sends.
pub const FETCHES_PER_REQUEST: u8 = 1;
/// Memory for validated keys, weighed by `KeyWeight` (about bytes): thousands of origins.
const KEYS_BUDGET: u64 = 16 * 1024 * 1024;
/// Failed origins remembered; more are made up faster than they expire only under attack,
/// and then forgetting the oldest costs at most one more (budgeted) fetch each.
const FAILURES_CAPACITY: usize = 10_000;
/// Retry hint sent with a refusal when the fetch budget is spent.
pub const BUSY_RETRY_AFTER: Duration = Duration::from_secs(2);

#[derive(Debug, Clone, thiserror::Error)]
pub enum KeyError {
    #[error("could not fetch the keys of {0}")]
    Unreachable(String),
    #[error("{0} does not publish the key {1}")]
    UnknownKey(String, String),
    #[error("the key {1} of {0} has expired")]
    Expired(String, String),
    /// The global fetch budget is spent: try again later.
    #[error("too many key fetches in progress")]
    Busy,
    /// This request already caused its fetch.
    #[error("no more key fetches for this request")]
    OverRequestBudget,
}

/// The key fetches one incoming request may still cause.
pub struct FetchAllowance(u8);

impl Default for FetchAllowance {
    fn default() -> Self {
        Self(FETCHES_PER_REQUEST)
    }
}

/// Approximate bytes a cached key response holds, so a response listing many keys counts
/// for what it costs.
#[derive(Clone, Copy)]
struct KeyWeight;

impl quick_cache::Weighter<ServerName, (Instant, Arc<Known>)> for KeyWeight {
    fn weight(&self, name: &ServerName, (_, known): &(Instant, Arc<Known>)) -> u64 {
        let keys = &known.keys;
        let bytes = |text: &str| u64::try_from(text.len()).unwrap_or(u64::MAX);
        let ids = keys
            .verify_keys
            .keys()
            .chain(keys.old_verify_keys.keys())
            .map(|id| bytes(id.as_str()).saturating_add(64))
            .fold(0, u64::saturating_add);
        bytes(name.as_str()).saturating_add(128).saturating_add(ids)
    }
}

/// A validated response, with when it was fetched.
#[derive(Debug)]
struct Known {
    keys: ServerKeys,
    fetched_at_ms: u64,
    usable_until_ms: u64,
}

#[derive(Clone)]
pub struct KeyRing {
    inner: Arc<Inner>,
}

struct Inner {
    store: Store,
    /// Notaries from the config, parsed there: pinned keys, or none to ask the notary itself.
    notaries: Vec<TrustedKeyServer>,
    known: TtlCache<ServerName, Arc<Known>, KeyWeight>,
    failures: TtlCache<ServerName, (), Count>,
    flights: SingleFlight<ServerName, Result<Arc<Known>, KeyError>>,
    new_origins: Mutex<Bucket>,
    fetches: std::sync::atomic::AtomicU64,
}

impl KeyRing {
    pub fn new(store: Store, trusted: &[TrustedKeyServer]) -> Self {
        Self {
            inner: Arc::new(Inner {
                store,
                notaries: trusted.to_vec(),
                known: TtlCache::weighted(10_000, KEYS_BUDGET, KeyWeight),
                failures: TtlCache::new(FAILURES_CAPACITY),
                flights: SingleFlight::bounded(FETCH_CONCURRENCY),
                new_origins: Mutex::new(Bucket::new(Instant::now())),
                fetches: std::sync::atomic::AtomicU64::new(0),
            }),
        }
    }

    /// Key fetches made over the network since start (for tests and metrics).
    pub fn fetches(&self) -> u64 {
        self.inner
            .fetches
            .load(std::sync::atomic::Ordering::Relaxed)
    }

    /// The key `origin` signs requests with under `key_id`, valid now. A fetch it needs is
    /// taken from `allowance` and from the global budget.
    pub async fn verify_key(
        &self,
        federation: &Federation,
        client: &awc::Client,
        origin: &ServerName,
        key_id: &KeyId,
        allowance: &mut FetchAllowance,
    ) -> Result<VerifyKey, KeyError> {
        let now = now_ms();
        let known = match self.cached(origin) {
            Some(known) => Some(known),
            None => self.load(origin, now).await,
        };
        if let Some(known) = &known
            && now < known.usable_until_ms
        {
            match lookup(known, origin, key_id, now) {
                Err(KeyError::UnknownKey(..))
                    if now.saturating_sub(known.fetched_at_ms)
                        > u64::try_from(UNKNOWN_KEY_REFETCH.as_millis()).unwrap_or(u64::MAX) => {}
                other => return other,
            }
        }
        let seen = known.as_ref().map(|k| k.fetched_at_ms);
        let fresh = self
            .fetch(federation, client, origin, seen, allowance)
            .await?;
        lookup(&fresh, origin, key_id, now)
    }

    fn cached(&self, origin: &ServerName) -> Option<Arc<Known>> {
        self.inner.known.get(origin)
    }

    /// Reads and re-validates what sled kept for `origin`.
    async fn load(&self, origin: &ServerName, now: u64) -> Option<Arc<Known>> {
        let name = origin.as_str().to_owned();
        let raw = self
            .inner
            .store
            .blocking(move |s| s.get_server_keys(&name))
            .await
            .ok()??;
        let record: fetch::Record = serde_json::from_slice(&raw).ok()?;
        // A notary's signature was checked when fetched; the origin's own is checked again here.
        let keys = validate_server_keys(origin, &record.response, now).ok()?;
        let known = Arc::new(Known {
            usable_until_ms: keys.usable_until(record.fetched_at_ms),
            fetched_at_ms: record.fetched_at_ms,
            keys,
        });
        self.remember(origin, &known);
        Some(known)
    }

    /// Kept in memory until the keys stop being usable (sled keeps them across restarts).
    fn remember(&self, origin: &ServerName, known: &Arc<Known>) {
        let left = known.usable_until_ms.saturating_sub(now_ms());
        self.inner.known.insert(
            origin.clone(),
            Arc::clone(known),
            Instant::now() + Duration::from_millis(left),
        );
    }

    /// One fetch per origin at a time; callers that arrive meanwhile share its result. Starting
    /// one takes the request's allowance, a slot of `FETCH_CONCURRENCY` and, for an origin we
    /// know nothing of, a token of the new-origin rate. `seen` is when the keys the caller
    /// looked at were fetched (`None`: it found none).
    async fn fetch(
        &self,
        federation: &Federation,
        client: &awc::Client,
        origin: &ServerName,
        seen: Option<u64>,
        allowance: &mut FetchAllowance,
    ) -> Result<Arc<Known>, KeyError> {
        let unknown_origin = seen.is_none();
        if self.inner.failures.get(origin).is_some() {
            return Err(KeyError::Unreachable(origin.to_string()));
        }
        if allowance.0 == 0 {
            return Err(KeyError::OverRequestBudget);
        }
        allowance.0 -= 1;
        let ring = self.clone();
        let (federation, client, target) = (federation.clone(), client.clone(), origin.clone());
        let admit = || {
            !unknown_origin
                || self
                    .inner
                    .new_origins
                    .lock()
                    .is_ok_and(|mut bucket| bucket.take(Instant::now()))
        };
        let Ok((result, _)) = self
            .inner
            .flights
            .try_run_local(origin.clone(), admit, move || async move {
                // A flight that ended between the caller's look and this one's start has
                // already brought newer keys: use them rather than fetch again.
                if let Some(known) = ring.cached(&target)
                    && Some(known.fetched_at_ms) != seen
                    && now_ms() < known.usable_until_ms
                {
                    return Ok(known);
                }
                ring.fetch_uncached(&federation, &client, &target).await
            })
            .await
        else {
            ::metrics::counter!("mxmedia_key_fetches_refused_total").increment(1);
            return Err(KeyError::Busy);
        };
        result.unwrap_or_else(|_| Err(KeyError::Unreachable(origin.to_string())))
    }

    async fn fetch_uncached(
        &self,
        federation: &Federation,
        client: &awc::Client,
        origin: &ServerName,
    ) -> Result<Arc<Known>, KeyError> {
        self.inner
            .fetches
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        ::metrics::counter!("mxmedia_key_fetches_total").increment(1);
        let now = now_ms();
        let fetched = match fetch::direct(federation, client, origin, now).await {
            Ok(found) => Ok(found),
            Err(direct_error) => {
                let mut result = Err(direct_error);
                for notary in &self.inner.notaries {
                    match fetch::via_notary(federation, client, notary, origin, now).await {
                        Ok(found) => {
                            result = Ok(found);
                            break;
                        }
                        Err(e) => tracing::debug!(
                            origin = %origin, notary = %notary.server_name, error = %e,
                            "notary could not vouch for the server's keys"
                        ),
                    }
                }
                result
            }
        };
        let (keys, record) = match fetched {
            Ok(found) => found,
            Err(e) => {
                tracing::warn!(origin = %origin, error = %e, "fetching server keys failed");
                ::metrics::counter!("mxmedia_key_fetch_failures_total").increment(1);
                self.inner
                    .failures
                    .insert(origin.clone(), (), Instant::now() + FAILURE_TTL);
                return Err(KeyError::Unreachable(origin.to_string()));
            }
        };
        let known = Arc::new(Known {
            usable_until_ms: keys.usable_until(now),
            fetched_at_ms: now,
            keys,
        });
        self.remember(origin, &known);
        if let Ok(bytes) = serde_json::to_vec(&record) {
            let name = origin.as_str().to_owned();
            let until = known.usable_until_ms;
            match self
                .inner
                .store
                .blocking(move |s| s.put_server_keys(&name, &bytes, now, until))
                .await
            {
                Ok(true) => {}
                Ok(false) => tracing::debug!(
                    origin = %origin,
                    "server key response too large to keep across restarts"
                ),
                Err(e) => {
                    tracing::warn!(origin = %origin, error = %e, "could not keep server keys")
                }
            }
        }
        Ok(known)
    }

    /// Drops kept key records that can no longer verify anything at `now_ms`, then the oldest
    /// beyond `bounds`. Run by the periodic sweep; an origin whose record went is fetched again
    /// at its next request.
    pub async fn sweep(&self, now_ms: u64, bounds: KeyBounds) -> Result<SweptKeys, StoreError> {
        self.inner
            .store
            .blocking(move |s| s.sweep_server_keys(now_ms, bounds, fetch::Record::stamps))
            .await
    }
}

fn lookup(
    known: &Known,
    origin: &ServerName,
    key_id: &KeyId,
    now: u64,
) -> Result<VerifyKey, KeyError> {
    match known.keys.verify_key_at(key_id, now) {
        Ok(key) if now < known.usable_until_ms => Ok(*key),
        Ok(_) | Err(mxmedia_proto::Error::KeyExpired) => Err(KeyError::Expired(
            origin.to_string(),
            key_id.as_str().to_owned(),
        )),
        Err(_) => Err(KeyError::UnknownKey(
            origin.to_string(),
            key_id.as_str().to_owned(),
        )),
    }
}

mod budget;
mod fetch;
