//! The one typed configuration struct and how it is loaded.
//!
//! Layers, later wins: built-in defaults < TOML file < `MXMEDIA_*` environment variables, with
//! `__` separating nested keys (`MXMEDIA_AUTH__HOMESERVER_URL` is `auth.homeserver_url`). The doc
//! comments on the fields are the operator manual: the README's table is written from them.
//! Variables under the prefix that name no setting are sorted out first (`env`).

use std::{net::SocketAddr, path::PathBuf};

use figment::{
    Figment,
    providers::{Env, Format, Serialized, Toml},
};
use mxmedia_proto::ids::ServerName;
use serde::{Deserialize, Deserializer, Serialize};

pub use self::{
    auth::AuthConfig,
    env::StrayEnv,
    federation::{DEFAULT_IP_RANGE_DENYLIST, FederationConfig, TrustedKeyServer},
    http::HttpConfig,
    media::MediaConfig,
    metrics::MetricsConfig,
    preview::{PreviewConfig, UrlPattern},
    store::{FreeSpace, S3Config, SLED_CACHEABLE_VALUE_MAX, StoreConfig},
    thumbnails::{ThumbnailConfig, ThumbnailSize},
    tls::TlsConfig,
};

/// Environment variables with the `MXMEDIA_` prefix that are not config keys. The `test_*`
/// ones are the test suite's (`tests/test.sh`: the Garage and SeaweedFS binaries, the blob
/// backend and the S3 engine under test), so a shell that ran it can still start and check the
/// server.
const NON_CONFIG_ENV: &[&str] = &[
    "config",
    "log",
    "log_format",
    "test_garage",
    "test_backend",
    "test_seaweedfs",
    "test_s3_engine",
];

/// Where a TOML file is looked for when neither `--config` nor `MXMEDIA_CONFIG` names one.
pub const DEFAULT_CONFIG_PATH: &str = "/etc/mxmedia/config.toml";

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// The homeserver name that `mxc://` URIs carry. Default `localhost`.
    #[serde(deserialize_with = "server_name")]
    pub server_name: ServerName,
    /// Address the HTTP listener binds. Default `127.0.0.1:8090`.
    pub listen: SocketAddr,
    /// Where the sled database, blob files and generated secrets live. Default `./mxmedia-data`.
    pub data_dir: PathBuf,
    /// HTTP worker threads. 0 = one per core.
    pub workers: usize,
    pub auth: AuthConfig,
    pub media: MediaConfig,
    pub store: StoreConfig,
    pub federation: FederationConfig,
    pub metrics: MetricsConfig,
    pub thumbnails: ThumbnailConfig,
    pub preview: PreviewConfig,
    pub tls: TlsConfig,
    pub http: HttpConfig,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            server_name: ServerName::localhost(),
            listen: SocketAddr::from(([127, 0, 0, 1], 8090)),
            data_dir: PathBuf::from("./mxmedia-data"),
            workers: 0,
            auth: AuthConfig::default(),
            media: MediaConfig::default(),
            store: StoreConfig::default(),
            federation: FederationConfig::default(),
            metrics: MetricsConfig::default(),
            thumbnails: ThumbnailConfig::default(),
            preview: PreviewConfig::default(),
            tls: TlsConfig::default(),
            http: HttpConfig::default(),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error(transparent)]
    Figment(#[from] Box<figment::Error>),
    #[error("invalid value for {key}: {reason}")]
    Invalid { key: &'static str, reason: String },
    #[error("{var} is not a setting: {hint}")]
    UnknownEnv { var: String, hint: String },
}

impl ConfigError {
    /// A value that is not acceptable; `key` is the environment variable naming it.
    pub(crate) fn invalid(key: &'static str, reason: &str) -> Self {
        Self::Invalid {
            key,
            reason: reason.to_owned(),
        }
    }
}

/// The largest object S3's CopyObject copies.
const S3_COPY_MAX: u64 = 5 * 1024 * 1024 * 1024;

impl Config {
    /// Loads defaults, then the TOML file (if any), then the environment. Every `MXMEDIA_*`
    /// variable that names no setting is an error (`check-config`).
    pub fn load(file: Option<PathBuf>) -> Result<Self, ConfigError> {
        Self::load_with(file, StrayEnv::Refuse).map(|(config, _)| config)
    }

    /// Like `load`, but `MXMEDIA_*` variables that name no setting and do not look like one
    /// are ignored with `StrayEnv::Ignore`, and returned (with the prefix) for the caller to log.
    /// Ones that look like a mistyped setting are errors either way.
    pub fn load_with(
        file: Option<PathBuf>,
        strays: StrayEnv,
    ) -> Result<(Self, Vec<String>), ConfigError> {
        let vars = std::env::vars_os().filter_map(|(name, _)| name.into_string().ok());
        let ignored = env::check(vars, strays)?;
        let file = file
            .or_else(|| std::env::var_os("MXMEDIA_CONFIG").map(PathBuf::from))
            .or_else(|| {
                let default = PathBuf::from(DEFAULT_CONFIG_PATH);
                default.exists().then_some(default)
            });
        let mut figment = Figment::from(Serialized::defaults(Config::default()));
        if let Some(path) = file {
            // An explicitly named file that is missing is an error, not an empty layer.
            if !path.exists() {
                return Err(ConfigError::Invalid {
                    key: "config file",
                    reason: format!("{} does not exist", path.display()),
                });
            }
            figment = figment.merge(Toml::file_exact(path));
        }
        let skipped = ignored.clone();
        figment = figment.merge(
            Env::prefixed(env::PREFIX)
                .split("__")
                .ignore(NON_CONFIG_ENV)
                .filter(move |key| !skipped.iter().any(|s| key == s.as_str())),
        );
        let config = Self::from_figment(figment)?;
        let ignored = ignored
            .into_iter()
            .map(|key| format!("{}{}", env::PREFIX, key.to_ascii_uppercase()))
            .collect();
        Ok((config, ignored))
    }

    pub fn from_figment(figment: Figment) -> Result<Self, ConfigError> {
        let config: Config = figment.extract().map_err(Box::new)?;
        config.validate()?;
        Ok(config)
    }

    /// Checks that span sections or concern the top-level values; each section checks its own
    /// fields. The order is the order the errors are reported in: the first failure wins.
    fn validate(&self) -> Result<(), ConfigError> {
        self.auth.validate()?;
        self.http.validate()?;
        self.media.validate()?;
        self.preview.validate()?;
        self.store.validate()?;
        self.tls.validate()?;
        // An upload to S3 larger than one part reaches its final key by a server-side copy,
        // which S3 allows up to 5 GiB (https://docs.aws.amazon.com/AmazonS3/latest/API/API_CopyObject.html).
        if self.store.s3.is_some() && self.media.max_upload_size.as_u64() > S3_COPY_MAX {
            return Err(ConfigError::invalid(
                "MXMEDIA_MEDIA__MAX_UPLOAD_SIZE",
                "must be at most 5GiB while MXMEDIA_STORE__S3__BUCKET is set: uploads reach \
                 their final key in the bucket by a server-side copy, which S3 limits to 5 GiB",
            ));
        }
        Ok(())
    }

    /// The effective config as pretty-printed JSON with the static tokens masked, for
    /// `mxmedia check-config`. JSON because figment re-exports no TOML writer and serde_json is
    /// already a dependency; the keys are the TOML file's keys.
    pub fn masked_json(&self) -> String {
        let mut shown = self.clone();
        shown.auth.static_tokens = shown
            .auth
            .static_tokens
            .into_values()
            .enumerate()
            .map(|(i, user)| (format!("<token {} masked>", i + 1), user))
            .collect();
        if let Some(s3) = &mut shown.store.s3 {
            s3.secret_access_key = s3.secret_access_key.as_ref().map(|_| "<masked>".to_owned());
        }
        serde_json::to_string_pretty(&shown).unwrap_or_else(|e| format!("<unprintable: {e}>"))
    }

    /// Whether any way to check access tokens is configured.
    pub fn has_auth_source(&self) -> bool {
        self.auth.homeserver_url.is_some() || !self.auth.static_tokens.is_empty()
    }
}

/// Parses a value once, while deserialising, through its `FromStr`; a refusal names the
/// environment variable that sets it, as every config error does.
pub(crate) fn parse_named<'de, D, T>(d: D, var: &str, expected: &str) -> Result<T, D::Error>
where
    D: Deserializer<'de>,
    T: std::str::FromStr,
{
    let text = <std::borrow::Cow<'de, str>>::deserialize(d)?;
    text.parse()
        .map_err(|_| serde::de::Error::custom(format!("invalid value for {var}: {expected}")))
}

fn server_name<'de, D: Deserializer<'de>>(d: D) -> Result<ServerName, D::Error> {
    parse_named(
        d,
        "MXMEDIA_SERVER_NAME",
        "not a Matrix server name (hostname[:port])",
    )
}

mod auth;
mod env;
mod federation;
mod http;
mod media;
mod metrics;
mod preview;
pub mod redirect;
mod store;
#[cfg(test)]
mod tests;
mod thumbnails;
mod tls;
