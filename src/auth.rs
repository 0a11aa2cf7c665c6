//! Who is calling: access tokens to users.
//!
//! Static tokens from config are checked first. Otherwise, with a homeserver configured, the
//! token is checked with the homeserver's `whoami` and the answer cached: good answers for
//! `token_cache_secs`, refusals for `invalid_token_cache_secs`. A homeserver that cannot be
//! reached is a 502, never an accepted token.
//!
//! Tokens are chosen by whoever sends the request, so both caches are bounded by the bytes they
//! hold (least used evicted first, never cleared wholesale), and concurrent requests with one
//! uncached token share a single `whoami` call, of which at most `MAX_WHOAMI_IN_FLIGHT` run at
//! once (more is a 429: the homeserver is being flooded through us).

mod admins;

use std::{
    collections::{HashMap, HashSet},
    sync::Arc,
    time::{Duration, Instant},
};

use serde::Deserialize;

use crate::{
    config::AuthConfig,
    error::{Error, Result},
    singleflight::SingleFlight,
    ttl_cache::TtlCache,
};

/// Memory for tokens the homeserver accepted: about 50 000 typical tokens; only tokens of
/// real users get here, and a miss costs one `whoami`.
const GOOD_TOKENS_BUDGET: u64 = 8 * 1024 * 1024;
/// Memory for refused tokens, which anyone can invent: enough to absorb a client retrying a
/// dead token, small enough that a flood of random ones costs a megabyte.
const BAD_TOKENS_BUDGET: u64 = 1024 * 1024;
/// Distinct tokens checked with the homeserver at once.
const MAX_WHOAMI_IN_FLIGHT: usize = 256;
const WHOAMI_TIMEOUT: Duration = Duration::from_secs(10);

/// An authenticated caller.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct User {
    pub user_id: String,
    pub is_guest: bool,
}

pub struct Authenticator {
    static_tokens: HashMap<String, String>,
    homeserver_url: Option<String>,
    caches: Arc<Caches>,
    /// `auth.admins`, the development user among them.
    admins: HashSet<String>,
    /// The homeserver's word on who is an admin, per user.
    admin_answers: TtlCache<String, bool>,
    whoami_flights: SingleFlight<CacheKey, Verdict>,
}

struct Caches {
    good_ttl: Duration,
    bad_ttl: Duration,
    good: TtlCache<CacheKey, User, TokenWeight>,
    /// Refusals with their soft-logout flag.
    bad: TtlCache<CacheKey, bool, TokenWeight>,
}

type CacheKey = (String, Option<String>);

/// Bytes an entry holds, roughly: the token, the masqueraded user, the answer.
#[derive(Clone, Copy)]
struct TokenWeight;

impl<V: Weigh> quick_cache::Weighter<CacheKey, (Instant, V)> for TokenWeight {
    fn weight(&self, (token, user): &CacheKey, (_, value): &(Instant, V)) -> u64 {
        let len = token.len() + user.as_ref().map_or(0, String::len) + value.bytes();
        u64::try_from(len).unwrap_or(u64::MAX).saturating_add(64)
    }
}

trait Weigh {
    fn bytes(&self) -> usize;
}

impl Weigh for User {
    fn bytes(&self) -> usize {
        self.user_id.len()
    }
}

impl Weigh for bool {
    fn bytes(&self) -> usize {
        0
    }
}

/// The homeserver's answer, shared by every request waiting on one `whoami`.
#[derive(Debug, Clone)]
enum Verdict {
    User(User),
    Unknown { soft_logout: bool },
    Forbidden,
    RateLimited,
    Unreachable,
}

impl Verdict {
    fn into_result(self) -> Result<User> {
        match self {
            Self::User(user) => Ok(user),
            Self::Unknown { soft_logout } => Err(Error::UnknownToken { soft_logout }),
            Self::Forbidden => Err(Error::Forbidden(
                "The homeserver refused this access token for that user".into(),
            )),
            Self::RateLimited => Err(Error::RateLimited {
                retry_after: Duration::from_secs(1),
            }),
            Self::Unreachable => Err(unreachable_error()),
        }
    }
}

fn unreachable_error() -> Error {
    Error::BadGateway("Could not reach the homeserver to check the access token".into())
}

#[derive(Deserialize)]
struct WhoAmI {
    user_id: String,
    #[serde(default)]
    is_guest: bool,
}

impl Authenticator {
    pub fn new(config: &AuthConfig, dev_token: Option<(String, String)>) -> Self {
        let mut admins: HashSet<String> = config.admins.iter().cloned().collect();
        let mut static_tokens: HashMap<_, _> = config.static_tokens.clone().into_iter().collect();
        if let Some((token, user)) = dev_token {
            admins.insert(user.clone());
            static_tokens.insert(token, user);
        }
        Self {
            static_tokens,
            homeserver_url: config
                .homeserver_url
                .as_ref()
                .map(|u| u.trim_end_matches('/').to_owned()),
            caches: Arc::new(Caches {
                good_ttl: Duration::from_secs(config.token_cache_secs),
                bad_ttl: Duration::from_secs(config.invalid_token_cache_secs),
                good: TtlCache::weighted(10_000, GOOD_TOKENS_BUDGET, TokenWeight),
                bad: TtlCache::weighted(1_000, BAD_TOKENS_BUDGET, TokenWeight),
            }),
            admins,
            admin_answers: TtlCache::new(admins::ADMIN_CACHE_ENTRIES),
            whoami_flights: SingleFlight::bounded(MAX_WHOAMI_IN_FLIGHT),
        }
    }

    /// Resolves a token to a user. `masquerade` is an appservice's `user_id` query parameter,
    /// passed on to the homeserver, which decides whether the appservice may act as that user.
    pub async fn authenticate(
        &self,
        client: &awc::Client,
        token: &str,
        masquerade: Option<&str>,
    ) -> Result<User> {
        if let Some(user_id) = self.static_tokens.get(token) {
            return Ok(User {
                user_id: user_id.clone(),
                is_guest: false,
            });
        }
        let Some(homeserver) = &self.homeserver_url else {
            return Err(Error::UnknownToken { soft_logout: false });
        };
        let key = (token.to_owned(), masquerade.map(str::to_owned));
        if let Some(user) = self.caches.good.get(&key) {
            return Ok(user);
        }
        if let Some(soft_logout) = self.caches.bad.get(&key) {
            return Err(Error::UnknownToken { soft_logout });
        }
        // The check runs as a task of its own, caching its answer, so requests that arrive
        // meanwhile (or that outlive a caller who gave up) share it.
        let caches = Arc::clone(&self.caches);
        let (client, homeserver, flight_key) = (client.clone(), homeserver.clone(), key.clone());
        let Ok((verdict, _)) = self
            .whoami_flights
            .try_run_local(
                flight_key,
                || true,
                move || async move {
                    let (token, masquerade) = &key;
                    let verdict = whoami(&client, &homeserver, token, masquerade.as_deref()).await;
                    caches.remember(key.clone(), &verdict);
                    verdict
                },
            )
            .await
        else {
            return Err(Error::RateLimited {
                retry_after: Duration::from_secs(1),
            });
        };
        verdict.unwrap_or(Verdict::Unreachable).into_result()
    }
}

impl Caches {
    fn remember(&self, key: CacheKey, verdict: &Verdict) {
        let now = Instant::now();
        match verdict {
            Verdict::User(user) => self.good.insert(key, user.clone(), now + self.good_ttl),
            Verdict::Unknown { soft_logout } => {
                self.bad.insert(key, *soft_logout, now + self.bad_ttl);
            }
            // Not the token's fault: ask again next time.
            Verdict::Forbidden | Verdict::RateLimited | Verdict::Unreachable => {}
        }
    }
}

async fn whoami(
    client: &awc::Client,
    homeserver: &str,
    token: &str,
    masquerade: Option<&str>,
) -> Verdict {
    let mut url = format!("{homeserver}/_matrix/client/v3/account/whoami");
    if let Some(user_id) = masquerade {
        url.push_str("?user_id=");
        url.push_str(
            &percent_encoding::utf8_percent_encode(user_id, percent_encoding::NON_ALPHANUMERIC)
                .to_string(),
        );
    }
    let unreachable = |e: &dyn std::fmt::Display| {
        tracing::warn!(error = %e, "homeserver whoami failed");
        Verdict::Unreachable
    };
    let mut response = match client
        .get(url)
        .bearer_auth(token)
        .timeout(WHOAMI_TIMEOUT)
        .send()
        .await
    {
        Ok(response) => response,
        Err(e) => return unreachable(&e),
    };
    let status = response.status();
    let body = match response.body().limit(64 * 1024).await {
        Ok(body) => body,
        Err(e) => return unreachable(&e),
    };
    match status.as_u16() {
        200 => match serde_json::from_slice::<WhoAmI>(&body) {
            Ok(who) => Verdict::User(User {
                user_id: who.user_id,
                is_guest: who.is_guest,
            }),
            Err(e) => unreachable(&e),
        },
        401 => {
            let soft_logout = serde_json::from_slice::<serde_json::Value>(&body)
                .ok()
                .and_then(|v| v.get("soft_logout").and_then(serde_json::Value::as_bool))
                .unwrap_or(false);
            Verdict::Unknown { soft_logout }
        }
        403 => Verdict::Forbidden,
        429 => Verdict::RateLimited,
        other => unreachable(&format!("status {other}")),
    }
}
