//! The `[auth]` section: how access tokens are checked (homeserver, static tokens), how long
//! answers are cached, and who is an admin.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::ConfigError;

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AuthConfig {
    /// When set, access tokens are checked with the homeserver's
    /// `GET /_matrix/client/v3/account/whoami`, e.g. `http://127.0.0.1:8008`.
    pub homeserver_url: Option<String>,
    /// Fixed tokens, token -> user id, e.g. `{tok1="@alice:example.org"}`: for bots, tests and
    /// standalone use. Checked before the homeserver.
    pub static_tokens: BTreeMap<String, String>,
    /// Seconds a token the homeserver accepted is trusted without asking again. Default 60.
    pub token_cache_secs: u64,
    /// Seconds a token the homeserver refused is remembered as bad. Kept short so that a token
    /// used right after login is not refused for long. Default 5.
    pub invalid_token_cache_secs: u64,
    /// Accept the deprecated `?access_token=` query parameter (Matrix up to v1.19). Default true.
    pub allow_query_token: bool,
    /// Users who may remove media with the admin API, e.g. `["@alice:example.org"]`. The
    /// development token's user is one when no other auth is configured. Default none.
    pub admins: Vec<String>,
}

impl Default for AuthConfig {
    fn default() -> Self {
        Self {
            homeserver_url: None,
            static_tokens: BTreeMap::new(),
            token_cache_secs: 60,
            invalid_token_cache_secs: 5,
            allow_query_token: true,
            admins: Vec::new(),
        }
    }
}

impl AuthConfig {
    pub(super) fn validate(&self) -> Result<(), ConfigError> {
        if let Some(url) = &self.homeserver_url
            && !(url.starts_with("http://") || url.starts_with("https://"))
        {
            return Err(ConfigError::invalid(
                "MXMEDIA_AUTH__HOMESERVER_URL",
                "must start with http:// or https://",
            ));
        }
        for user in self.static_tokens.values() {
            if !user.starts_with('@') || !user.contains(':') {
                return Err(ConfigError::invalid(
                    "MXMEDIA_AUTH__STATIC_TOKENS",
                    "values must be user ids like @alice:example.org",
                ));
            }
        }
        Ok(())
    }
}
