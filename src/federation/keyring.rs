//! Remote servers' signing keys, for checking their X-Matrix requests.
//!
//! Keys come from the server itself (`/_matrix/key/v2/server`, after discovery), else from the
//! configured notaries. Every response is validated (self-signature, server name, expiry) before
//! use, kept in memory and in sled until `min(valid_until_ts, now + 7 days)`, and validated again
//! when read back after a restart. Concurrent requests from one origin cause one fetch; a failed
//! fetch is remembered briefly so a flood of bad requests cannot make us hammer anybody.

use std::{
    collections::{BTreeMap, HashMap},
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use mxmedia_proto::{
    KeyId, ServerKeys, ServerName, VerifyKey, server_keys::validate_notary_server_keys,
    validate_server_keys,
};
use serde::{Deserialize, Serialize};

use super::{Federation, FetchError};
use crate::{config::TrustedKeyServer, media::now_ms, singleflight::SingleFlight, store::Store};

/// A key ID the cached response does not list triggers a new fetch only this long after the
/// last one: enough for key rotation, too slow for a request flood to matter.
const UNKNOWN_KEY_REFETCH: Duration = Duration::from_secs(60);
/// How long a failed fetch is remembered before the origin is asked again.
const FAILURE_TTL: Duration = Duration::from_secs(30);

#[derive(Debug, Clone, thiserror::Error)]
pub enum KeyError {
    #[error("could not fetch the keys of {0}")]
    Unreachable(String),
    #[error("{0} does not publish the key {1}")]
    UnknownKey(String, String),
    #[error("the key {1} of {0} has expired")]
    Expired(String, String),
}

/// A validated response, with when it was fetched.
#[derive(Debug)]
struct Known {
    keys: ServerKeys,
    fetched_at_ms: u64,
    usable_until_ms: u64,
}

/// What sled keeps: the response exactly as signed, so it can be validated again on load.
#[derive(Serialize, Deserialize)]
struct Record {
    response: serde_json::Value,
    fetched_at_ms: u64,
    /// The notary it came through, if not from the server itself.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    notary: Option<String>,
}

struct Notary {
    name: ServerName,
    /// Pinned keys; empty means "ask the notary itself for its keys".
    keys: BTreeMap<KeyId, VerifyKey>,
}

#[derive(Clone)]
pub struct KeyRing {
    inner: Arc<Inner>,
}

struct Inner {
    store: Store,
    notaries: Vec<Notary>,
    known: Mutex<HashMap<ServerName, Arc<Known>>>,
    failures: Mutex<HashMap<ServerName, Instant>>,
    flights: SingleFlight<ServerName, Result<Arc<Known>, KeyError>>,
    fetches: std::sync::atomic::AtomicU64,
}

impl KeyRing {
    pub fn new(store: Store, trusted: &[TrustedKeyServer]) -> Self {
        let notaries = trusted
            .iter()
            .filter_map(|t| {
                Some(Notary {
                    name: t.server_name.parse().ok()?,
                    keys: t
                        .verify_keys
                        .iter()
                        .filter_map(|(id, key)| {
                            Some((id.parse().ok()?, VerifyKey::from_base64(key).ok()?))
                        })
                        .collect(),
                })
            })
            .collect();
        Self {
            inner: Arc::new(Inner {
                store,
                notaries,
                known: Mutex::new(HashMap::new()),
                failures: Mutex::new(HashMap::new()),
                flights: SingleFlight::default(),
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

    /// The key `origin` signs requests with under `key_id`, valid now.
    pub async fn verify_key(
        &self,
        federation: &Federation,
        client: &awc::Client,
        origin: &ServerName,
        key_id: &KeyId,
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
        let fresh = self.fetch(federation, client, origin).await?;
        lookup(&fresh, origin, key_id, now)
    }

    fn cached(&self, origin: &ServerName) -> Option<Arc<Known>> {
        self.inner.known.lock().ok()?.get(origin).cloned()
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
        let record: Record = serde_json::from_slice(&raw).ok()?;
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

    fn remember(&self, origin: &ServerName, known: &Arc<Known>) {
        if let Ok(mut map) = self.inner.known.lock() {
            map.insert(origin.clone(), Arc::clone(known));
        }
    }

    /// One fetch per origin at a time; callers that arrive meanwhile share its result.
    async fn fetch(
        &self,
        federation: &Federation,
        client: &awc::Client,
        origin: &ServerName,
    ) -> Result<Arc<Known>, KeyError> {
        let failed_recently = self
            .inner
            .failures
            .lock()
            .ok()
            .and_then(|f| f.get(origin).copied())
            .is_some_and(|at| at.elapsed() < FAILURE_TTL);
        if failed_recently {
            return Err(KeyError::Unreachable(origin.to_string()));
        }
        let ring = self.clone();
        let (federation, client, target) = (federation.clone(), client.clone(), origin.clone());
        let (result, _) = self
            .inner
            .flights
            .run_local(origin.clone(), move || async move {
                ring.fetch_uncached(&federation, &client, &target).await
            })
            .await;
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
        let fetched = match self.fetch_direct(federation, client, origin, now).await {
            Ok(found) => Ok(found),
            Err(direct_error) => {
                let mut result = Err(direct_error);
                for notary in &self.inner.notaries {
                    match self
                        .fetch_via_notary(federation, client, notary, origin, now)
                        .await
                    {
                        Ok(found) => {
                            result = Ok(found);
                            break;
                        }
                        Err(e) => tracing::debug!(
                            origin = %origin, notary = %notary.name, error = %e,
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
                if let Ok(mut failures) = self.inner.failures.lock() {
                    failures.retain(|_, at| at.elapsed() < FAILURE_TTL);
                    failures.insert(origin.clone(), Instant::now());
                }
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
            if let Err(e) = self
                .inner
                .store
                .blocking(move |s| s.put_server_keys(&name, &bytes))
                .await
            {
                tracing::warn!(origin = %origin, error = %e, "could not keep server keys");
            }
        }
        Ok(known)
    }

    async fn fetch_direct(
        &self,
        federation: &Federation,
        client: &awc::Client,
        origin: &ServerName,
        now: u64,
    ) -> Result<(ServerKeys, Record), FetchError> {
        let response = federation
            .get_json(client, origin, "/_matrix/key/v2/server")
            .await?;
        let keys = validate_server_keys(origin, &response, now)
            .map_err(|e| FetchError::BadResponse(e.to_string()))?;
        Ok((
            keys,
            Record {
                response,
                fetched_at_ms: now,
                notary: None,
            },
        ))
    }

    async fn fetch_via_notary(
        &self,
        federation: &Federation,
        client: &awc::Client,
        notary: &Notary,
        origin: &ServerName,
        now: u64,
    ) -> Result<(ServerKeys, Record), FetchError> {
        let notary_keys = if notary.keys.is_empty() {
            // Trust on first use: the notary's own keys, fetched from it and validated.
            let (keys, _) = self
                .fetch_direct(federation, client, &notary.name, now)
                .await?;
            keys.verify_keys
        } else {
            notary.keys.clone()
        };
        let path = format!("/_matrix/key/v2/query/{}", origin.as_str());
        let answer = federation.get_json(client, &notary.name, &path).await?;
        let entries = answer
            .get("server_keys")
            .and_then(serde_json::Value::as_array)
            .ok_or_else(|| FetchError::BadResponse("no server_keys array".into()))?;
        let mut last = FetchError::BadResponse("the notary returned no keys".into());
        for entry in entries {
            match validate_notary_server_keys(origin, entry, now, &notary.name, &notary_keys) {
                Ok(keys) => {
                    return Ok((
                        keys,
                        Record {
                            response: entry.clone(),
                            fetched_at_ms: now,
                            notary: Some(notary.name.to_string()),
                        },
                    ));
                }
                Err(e) => last = FetchError::BadResponse(e.to_string()),
            }
        }
        Err(last)
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
