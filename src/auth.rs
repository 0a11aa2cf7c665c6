//! Who is calling: access tokens to users.
//!
//! Static tokens from config are checked first. Otherwise, with a homeserver configured, the
//! token is checked with the homeserver's `whoami` and the answer cached: good answers for
//! `token_cache_secs`, refusals for `invalid_token_cache_secs`. A homeserver that cannot be
//! reached is a 502, never an accepted token.

use std::{
    collections::HashMap,
    sync::Mutex,
    time::{Duration, Instant},
};

use serde::Deserialize;

use crate::{
    config::AuthConfig,
    error::{Error, Result},
};

/// Most tokens remembered at once; past this, the cache is cleared (a rare, cheap reset).
const MAX_CACHED_TOKENS: usize = 100_000;
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
    good_ttl: Duration,
    bad_ttl: Duration,
    cache: Mutex<HashMap<CacheKey, (Instant, Answer)>>,
}

type CacheKey = (String, Option<String>);
/// The homeserver's answer: the user, or a refusal with its soft-logout flag.
type Answer = Result<User, bool>;

#[derive(Deserialize)]
struct WhoAmI {
    user_id: String,
    #[serde(default)]
    is_guest: bool,
}

impl Authenticator {
    pub fn new(config: &AuthConfig, dev_token: Option<(String, String)>) -> Self {
        let mut static_tokens: HashMap<_, _> = config.static_tokens.clone().into_iter().collect();
        if let Some((token, user)) = dev_token {
            static_tokens.insert(token, user);
        }
        Self {
            static_tokens,
            homeserver_url: config
                .homeserver_url
                .as_ref()
                .map(|u| u.trim_end_matches('/').to_owned()),
            good_ttl: Duration::from_secs(config.token_cache_secs),
            bad_ttl: Duration::from_secs(config.invalid_token_cache_secs),
            cache: Mutex::new(HashMap::new()),
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
        if let Some(cached) = self.cached(&key) {
            return cached.map_err(|soft_logout| Error::UnknownToken { soft_logout });
        }
        let answer = whoami(client, homeserver, token, masquerade).await;
        let to_cache = match &answer {
            Ok(user) => Some((self.good_ttl, Ok(user.clone()))),
            Err(Error::UnknownToken { soft_logout }) => Some((self.bad_ttl, Err(*soft_logout))),
            Err(_) => None,
        };
        if let Some((ttl, value)) = to_cache
            && let Ok(mut cache) = self.cache.lock()
        {
            if cache.len() >= MAX_CACHED_TOKENS {
                cache.clear();
            }
            cache.insert(key, (Instant::now() + ttl, value));
        }
        answer
    }

    /// A cached answer: the user, or the refusal with its soft-logout flag.
    fn cached(&self, key: &CacheKey) -> Option<Answer> {
        let mut cache = self.cache.lock().ok()?;
        match cache.get(key) {
            Some((expires, value)) if *expires > Instant::now() => Some(value.clone()),
            Some(_) => {
                cache.remove(key);
                None
            }
            None => None,
        }
    }
}

async fn whoami(
    client: &awc::Client,
    homeserver: &str,
    token: &str,
    masquerade: Option<&str>,
) -> Result<User> {
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
        Error::BadGateway("Could not reach the homeserver to check the access token".into())
    };
    let mut response = client
        .get(url)
        .bearer_auth(token)
        .timeout(WHOAMI_TIMEOUT)
        .send()
        .await
        .map_err(|e| unreachable(&e))?;
    let status = response.status();
    let body = response
        .body()
        .limit(64 * 1024)
        .await
        .map_err(|e| unreachable(&e))?;
    match status.as_u16() {
        200 => {
            let who: WhoAmI = serde_json::from_slice(&body).map_err(|e| unreachable(&e))?;
            Ok(User {
                user_id: who.user_id,
                is_guest: who.is_guest,
            })
        }
        401 => {
            let soft_logout = serde_json::from_slice::<serde_json::Value>(&body)
                .ok()
                .and_then(|v| v.get("soft_logout").and_then(serde_json::Value::as_bool))
                .unwrap_or(false);
            Err(Error::UnknownToken { soft_logout })
        }
        403 => Err(Error::Forbidden(
            "The homeserver refused this access token for that user".into(),
        )),
        429 => Err(Error::RateLimited {
            retry_after: Duration::from_secs(1),
        }),
        other => Err(unreachable(&format!("status {other}"))),
    }
}
