//! The one typed configuration struct and how it is loaded.
//!
//! Layers, later wins: built-in defaults < TOML file < `MXMEDIA_*` environment variables, with
//! `__` separating nested keys (`MXMEDIA_AUTH__HOMESERVER_URL` is `auth.homeserver_url`). The doc
//! comments on the fields are the operator manual: the README's table is written from them.
//! Variables under the prefix that name no setting are sorted out first (`env`).

use std::{collections::BTreeMap, net::SocketAddr, path::PathBuf};

use bytesize::ByteSize;
use figment::{
    Figment,
    providers::{Env, Format, Serialized, Toml},
};
use serde::{Deserialize, Serialize};

pub use self::{
    env::StrayEnv,
    preview::{PreviewConfig, UrlPattern},
};

/// Environment variables with the `MXMEDIA_` prefix that are not config keys.
const NON_CONFIG_ENV: &[&str] = &["config", "log", "log_format"];

/// Largest sled value whose tree node sled's page cache still counts. A node holds up to 17
/// entries and is written "as a blob" once it exceeds a quarter of sled's 512 KiB segment; sled
/// then counts it as the few bytes of its pointer, so the cache never evicts it and memory grows
/// with the database (sled 0.34, `pagecache/logger.rs`). 17 × (7 KiB + key) stays under 128 KiB.
pub const SLED_CACHEABLE_VALUE_MAX: u64 = 7 * 1024;

/// Where a TOML file is looked for when neither `--config` nor `MXMEDIA_CONFIG` names one.
pub const DEFAULT_CONFIG_PATH: &str = "/etc/mxmedia/config.toml";

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// The homeserver name that `mxc://` URIs carry. Default `localhost`.
    pub server_name: String,
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

/// Limits on what a client may hold of the listener: connections, and time to send a request.
/// They keep slow or idle clients (slowloris) from using up sockets, file descriptors and
/// upload temp files.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HttpConfig {
    /// Seconds a client has, from connecting, to send the whole head of its first request
    /// (request line and headers); then it gets 408 and the connection closes. Default 10.
    pub request_head_timeout_secs: u64,
    /// Seconds an idle keep-alive connection stays open between requests; 0 turns keep-alive
    /// off. Default 5.
    pub keep_alive_secs: u64,
    /// Seconds an upload body may go without a single byte arriving; then the upload gets 408,
    /// its temp file is removed and the connection closes. Default 30: generous for a stalled
    /// mobile link, short enough that trickling clients cannot pile up.
    pub body_idle_timeout_secs: u64,
    /// Connections served at once, over all workers; beyond it new connections wait in the
    /// kernel's backlog. Also capped by the open-files limit (`LimitNOFILE`), keeping room for
    /// the database, blob files and uploads. Default 4096.
    pub max_connections: usize,
    /// TLS handshakes in progress at once per worker, so a handshake flood cannot take every
    /// core. Default 64.
    pub max_tls_handshakes: usize,
    /// Slowest average an upload body may arrive at, in bytes per second, once it has been
    /// arriving for `body_idle_timeout_secs`; slower, it gets 408 like a silent one. Stops a
    /// client that sends a byte now and then from holding an upload for hours. 0 turns it off.
    /// Default `1KiB`, far below any working mobile link.
    pub body_min_rate: ByteSize,
}

/// HTTPS on the main listener. Set both paths or neither; unset, the listener speaks plain HTTP
/// (the usual setup behind a reverse proxy that terminates TLS).
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TlsConfig {
    /// PEM certificate chain, leaf first. Re-read on SIGHUP, so a renewed certificate is served
    /// to new connections without a restart.
    pub cert: Option<PathBuf>,
    /// PEM private key (PKCS#8, PKCS#1 or SEC1) matching the certificate. Re-read with it.
    pub key: Option<PathBuf>,
}

impl TlsConfig {
    /// The certificate and key paths when HTTPS is on.
    pub fn paths(&self) -> Option<(&std::path::Path, &std::path::Path)> {
        match (&self.cert, &self.key) {
            (Some(cert), Some(key)) => Some((cert, key)),
            _ => None,
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ThumbnailConfig {
    /// Threads that decode and resize. 0 = one per core.
    pub workers: usize,
    /// Jobs that may wait for a thread; past this, requests get 429 with `retry_after_ms`.
    pub queue: usize,
    /// The sizes served. A request gets the smallest one at least as large as asked for
    /// (default: the spec's recommended set).
    pub sizes: Vec<ThumbnailSize>,
    /// Render any requested size instead of the nearest configured one. Off by default: it lets
    /// clients make the server render and store arbitrarily many sizes.
    pub dynamic: bool,
    /// Make animated thumbnails when clients ask (`animated=true`).
    pub animated: bool,
    /// Largest source, in pixels per frame, that is decoded. Default 32 Mpx.
    pub max_source_pixels: u64,
    /// Most frames an animated source may have. Default 500.
    pub max_frames: u32,
    /// Most pixels over all frames of an animated source. Default 100 Mpx.
    pub max_animated_pixels: u64,
    /// Largest source file thumbnailed. Default 50 MiB.
    pub max_source_size: ByteSize,
    /// Longest one thumbnail job may run, in seconds (fractions allowed, at least 0.01).
    /// Default 20: a cold thumbnail of a 32 Mpx photo takes well under a second. Past it the
    /// request gets 413 `M_TOO_LARGE`, the thread is replaced, and the source is remembered as
    /// failed.
    pub job_timeout_secs: f64,
    /// How long a source that could not be thumbnailed (over the time budget, too costly,
    /// corrupt) is answered from memory instead of being decoded again, in seconds. Default 600.
    pub failure_cache_secs: u64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ThumbnailSize {
    pub width: u32,
    pub height: u32,
    pub method: ThumbnailMethod,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ThumbnailMethod {
    Crop,
    Scale,
}

impl From<ThumbnailMethod> for mxmedia_image::Method {
    fn from(method: ThumbnailMethod) -> Self {
        match method {
            ThumbnailMethod::Crop => Self::Crop,
            ThumbnailMethod::Scale => Self::Scale,
        }
    }
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MetricsConfig {
    /// Address for the Prometheus `/metrics` listener, e.g. `127.0.0.1:9090`. Unset: off.
    pub listen: Option<SocketAddr>,
}

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

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MediaConfig {
    /// Largest upload, in bytes or as `"100MiB"`. Also advertised as `m.upload.size`. Default 50 MiB.
    pub max_upload_size: ByteSize,
    /// Serve local media on the deprecated unauthenticated `/_matrix/media/v3/download` and
    /// `/thumbnail` endpoints. Off by default: since Matrix v1.12 servers freeze them, and media
    /// is then only served to authenticated users.
    pub legacy_unauthenticated_downloads: bool,
    /// Seconds an id from `/create` stays valid without an upload. Default 24 h.
    pub unused_expiry_secs: u64,
    /// Async uploads a user may have pending at once. Default 5.
    pub max_pending_uploads: usize,
    /// Upper bound on a client's `timeout_ms` when waiting for an async upload. Default 60 s.
    pub max_timeout_ms: u64,
    /// Largest remote file fetched over federation and kept, in bytes or as `"100MiB"`.
    /// Larger ones are refused with 502 `M_TOO_LARGE` and nothing is stored. Default 100 MiB.
    pub max_remote_size: ByteSize,
    /// Seconds a failed remote fetch is remembered and answered from memory, so a dead or
    /// refusing server is not asked again by every client. Default 30.
    pub remote_failure_cache_secs: u64,
    /// When a remote server cannot give a thumbnail, fetch the original and make one here.
    /// Default true.
    pub remote_thumbnail_fallback: bool,
    /// Remote media (originals and thumbnails from other servers) nobody has asked for in this
    /// many days is removed, and fetched again if someone does. 0 (default) keeps it forever.
    pub remote_retention_days: u64,
    /// Most bytes of remote media to keep, in bytes or as `"20GiB"`; beyond it the least
    /// recently asked-for is removed first (checked hourly). 0 (default) sets no limit.
    pub remote_cache_max_size: ByteSize,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StoreConfig {
    /// sled's page cache, in bytes or as `"64MiB"`. Default 32 MiB, suited to a 1 GB VPS.
    pub cache_capacity: ByteSize,
    /// Uploads and remote fetches are refused (507) when free space on the data dir's file
    /// system, less the bytes of uploads and fetches still arriving, would drop below this:
    /// bytes, `"1GiB"`, or a share of the disk such as `"5%"`. Default `1GiB`.
    pub min_free_space: FreeSpace,
    /// Blobs up to this size live inside sled; larger ones are content-addressed files under
    /// `data_dir/blobs`. Default 4 KiB. Keep it at most [`SLED_CACHEABLE_VALUE_MAX`] (7 KiB):
    /// sled's page cache cannot count, so never evicts, tree nodes holding larger values, and
    /// memory then grows with the database (see the README's storage section).
    pub inline_blob_max: ByteSize,
    /// Memory for caching small blobs (those kept in sled) in front of the store, so hot media
    /// is served without touching the database. 0 turns it off. Default 32 MiB.
    pub memory_cache: ByteSize,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FederationConfig {
    /// Outgoing federation requests (server keys, remote media, `.well-known`) never go to these
    /// address ranges, checked after DNS resolution. Default: loopback, private, link-local,
    /// CGNAT, multicast, documentation and reserved ranges, and their IPv6 equivalents.
    pub ip_range_denylist: Vec<ipnet::IpNet>,
    /// Check remote servers' TLS certificates. Turn off only for closed test federations.
    pub verify_tls: bool,
    /// Extra trusted CA certificates (PEM), for private federations and tests.
    pub ca_file: Option<PathBuf>,
    /// DNS servers to ask (`ip:port`); empty = the system's resolver configuration.
    pub nameservers: Vec<SocketAddr>,
    /// Seconds to wait for a remote server to accept a connection. Default 10.
    pub connect_timeout_secs: u64,
    /// Seconds a whole outgoing request may take, headers and body. Default 60.
    pub request_timeout_secs: u64,
    /// The homeserver's signing key file (Synapse format: `ed25519 <version> <base64 seed>` per
    /// line). Unset: mxmedia uses `data_dir/signing.key`, generating it on first start; remote
    /// servers accept it only once the homeserver publishes it (see the README).
    pub signing_key_path: Option<PathBuf>,
    /// Which key of the file to sign with, e.g. `ed25519:a_AbCd`. Default: the first.
    pub signing_key_id: Option<String>,
    /// Serve `GET /_matrix/key/v2/server` with our key, for deployments where mxmedia answers
    /// federation itself. Off by default: normally the homeserver publishes the keys.
    pub serve_server_keys: bool,
    /// Notary servers asked for a remote server's keys when the server itself cannot be
    /// reached: server names (trusted on first contact), or `{ server_name, verify_keys }`
    /// tables pinning their keys (`verify_keys = { "ed25519:auto" = "<base64>" }`).
    pub trusted_key_servers: Vec<TrustedKeyServer>,
}

/// A notary whose signature on another server's keys is trusted.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(from = "TrustedKeyServerRaw", into = "TrustedKeyServerTable")]
pub struct TrustedKeyServer {
    pub server_name: String,
    /// Key ID -> unpadded base64 public key. Empty: fetch the notary's keys from it directly.
    pub verify_keys: BTreeMap<String, String>,
}

#[derive(Deserialize)]
#[serde(untagged)]
enum TrustedKeyServerRaw {
    Name(String),
    Table(TrustedKeyServerTable),
}

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct TrustedKeyServerTable {
    server_name: String,
    #[serde(default)]
    verify_keys: BTreeMap<String, String>,
}

impl From<TrustedKeyServerRaw> for TrustedKeyServer {
    fn from(raw: TrustedKeyServerRaw) -> Self {
        match raw {
            TrustedKeyServerRaw::Name(server_name) => Self {
                server_name,
                verify_keys: BTreeMap::new(),
            },
            TrustedKeyServerRaw::Table(t) => Self {
                server_name: t.server_name,
                verify_keys: t.verify_keys,
            },
        }
    }
}

impl From<TrustedKeyServer> for TrustedKeyServerTable {
    fn from(t: TrustedKeyServer) -> Self {
        Self {
            server_name: t.server_name,
            verify_keys: t.verify_keys,
        }
    }
}

/// The ranges no outgoing request may reach unless the admin says otherwise.
pub const DEFAULT_IP_RANGE_DENYLIST: &[&str] = &[
    "0.0.0.0/8",
    "10.0.0.0/8",
    "100.64.0.0/10",
    "127.0.0.0/8",
    "169.254.0.0/16",
    "172.16.0.0/12",
    "192.0.0.0/24",
    "192.0.2.0/24",
    "192.88.99.0/24",
    "192.168.0.0/16",
    "198.18.0.0/15",
    "198.51.100.0/24",
    "203.0.113.0/24",
    "224.0.0.0/4",
    "240.0.0.0/4",
    "255.255.255.255/32",
    "::/128",
    "::1/128",
    "64:ff9b::/96",
    "64:ff9b:1::/48",
    "100::/64",
    "2001::/32",
    "2001:db8::/32",
    "2002::/16",
    "fc00::/7",
    "fe80::/10",
    "fec0::/10",
    "ff00::/8",
];

/// A free-space floor: an absolute size or a percentage of the file system.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum FreeSpace {
    Bytes(u64),
    Percent(f64),
}

impl Default for Config {
    fn default() -> Self {
        Self {
            server_name: "localhost".into(),
            listen: SocketAddr::from(([127, 0, 0, 1], 8090)),
            data_dir: PathBuf::from("./mxmedia-data"),
            workers: 0,
            auth: AuthConfig {
                homeserver_url: None,
                static_tokens: BTreeMap::new(),
                token_cache_secs: 60,
                invalid_token_cache_secs: 5,
                allow_query_token: true,
                admins: Vec::new(),
            },
            media: MediaConfig {
                max_upload_size: ByteSize::mib(50),
                legacy_unauthenticated_downloads: false,
                unused_expiry_secs: 24 * 60 * 60,
                max_pending_uploads: 5,
                max_timeout_ms: 60_000,
                max_remote_size: ByteSize::mib(100),
                remote_failure_cache_secs: 30,
                remote_retention_days: 0,
                remote_cache_max_size: ByteSize::b(0),
                remote_thumbnail_fallback: true,
            },
            store: StoreConfig {
                cache_capacity: ByteSize::mib(32),
                min_free_space: FreeSpace::Bytes(ByteSize::gib(1).as_u64()),
                inline_blob_max: ByteSize::kib(4),
                memory_cache: ByteSize::mib(32),
            },
            federation: FederationConfig {
                ip_range_denylist: DEFAULT_IP_RANGE_DENYLIST
                    .iter()
                    .filter_map(|n| n.parse().ok())
                    .collect(),
                verify_tls: true,
                ca_file: None,
                nameservers: Vec::new(),
                connect_timeout_secs: 10,
                request_timeout_secs: 60,
                signing_key_path: None,
                signing_key_id: None,
                serve_server_keys: false,
                trusted_key_servers: Vec::new(),
            },
            metrics: MetricsConfig::default(),
            thumbnails: ThumbnailConfig {
                workers: 0,
                queue: 64,
                sizes: [
                    (32, 32, ThumbnailMethod::Crop),
                    (96, 96, ThumbnailMethod::Crop),
                    (320, 240, ThumbnailMethod::Scale),
                    (640, 480, ThumbnailMethod::Scale),
                    (800, 600, ThumbnailMethod::Scale),
                ]
                .into_iter()
                .map(|(width, height, method)| ThumbnailSize {
                    width,
                    height,
                    method,
                })
                .collect(),
                dynamic: false,
                animated: true,
                max_source_pixels: 32_000_000,
                max_frames: 500,
                max_animated_pixels: 100_000_000,
                max_source_size: ByteSize::mib(50),
                job_timeout_secs: 20.0,
                failure_cache_secs: 600,
            },
            preview: PreviewConfig::default(),
            tls: TlsConfig::default(),
            http: HttpConfig {
                request_head_timeout_secs: 10,
                keep_alive_secs: 5,
                body_idle_timeout_secs: 30,
                max_connections: 4096,
                max_tls_handshakes: 64,
                body_min_rate: ByteSize::kib(1),
            },
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

    fn validate(&self) -> Result<(), ConfigError> {
        let invalid = |key, reason: &str| ConfigError::Invalid {
            key,
            reason: reason.to_owned(),
        };
        if self
            .server_name
            .parse::<mxmedia_proto::ids::ServerName>()
            .is_err()
        {
            return Err(invalid(
                "MXMEDIA_SERVER_NAME",
                "not a Matrix server name (hostname[:port])",
            ));
        }
        if let Some(url) = &self.auth.homeserver_url
            && !(url.starts_with("http://") || url.starts_with("https://"))
        {
            return Err(invalid(
                "MXMEDIA_AUTH__HOMESERVER_URL",
                "must start with http:// or https://",
            ));
        }
        for user in self.auth.static_tokens.values() {
            if !user.starts_with('@') || !user.contains(':') {
                return Err(invalid(
                    "MXMEDIA_AUTH__STATIC_TOKENS",
                    "values must be user ids like @alice:example.org",
                ));
            }
        }
        if let Some(id) = &self.federation.signing_key_id
            && id.parse::<mxmedia_proto::keys::KeyId>().is_err()
        {
            return Err(invalid(
                "MXMEDIA_FEDERATION__SIGNING_KEY_ID",
                "must be an ed25519 key id like ed25519:a_AbCd",
            ));
        }
        for notary in &self.federation.trusted_key_servers {
            if notary
                .server_name
                .parse::<mxmedia_proto::ids::ServerName>()
                .is_err()
            {
                return Err(invalid(
                    "MXMEDIA_FEDERATION__TRUSTED_KEY_SERVERS",
                    "server_name must be a Matrix server name",
                ));
            }
            for (id, key) in &notary.verify_keys {
                if id.parse::<mxmedia_proto::keys::KeyId>().is_err()
                    || mxmedia_proto::keys::VerifyKey::from_base64(key).is_err()
                {
                    return Err(invalid(
                        "MXMEDIA_FEDERATION__TRUSTED_KEY_SERVERS",
                        "verify_keys must map ed25519 key ids to base64 public keys",
                    ));
                }
            }
        }
        for (key, value) in [
            (
                "MXMEDIA_HTTP__REQUEST_HEAD_TIMEOUT_SECS",
                self.http.request_head_timeout_secs,
            ),
            (
                "MXMEDIA_HTTP__BODY_IDLE_TIMEOUT_SECS",
                self.http.body_idle_timeout_secs,
            ),
            (
                "MXMEDIA_HTTP__MAX_CONNECTIONS",
                u64::try_from(self.http.max_connections).unwrap_or(u64::MAX),
            ),
            (
                "MXMEDIA_HTTP__MAX_TLS_HANDSHAKES",
                u64::try_from(self.http.max_tls_handshakes).unwrap_or(u64::MAX),
            ),
        ] {
            // 0 would turn a limit off: slow clients could then hold sockets forever.
            if value == 0 {
                return Err(invalid(key, "must be greater than 0"));
            }
        }
        if self.media.max_upload_size.as_u64() == 0 {
            return Err(invalid(
                "MXMEDIA_MEDIA__MAX_UPLOAD_SIZE",
                "must be greater than 0",
            ));
        }
        if self.media.max_remote_size.as_u64() == 0 {
            return Err(invalid(
                "MXMEDIA_MEDIA__MAX_REMOTE_SIZE",
                "must be greater than 0",
            ));
        }
        self.preview.validate()?;
        if let FreeSpace::Percent(p) = self.store.min_free_space
            && !(0.0..100.0).contains(&p)
        {
            return Err(invalid(
                "MXMEDIA_STORE__MIN_FREE_SPACE",
                "percentage must be in 0..100",
            ));
        }
        if self.tls.cert.is_some() != self.tls.key.is_some() {
            return Err(invalid(
                "MXMEDIA_TLS__CERT and MXMEDIA_TLS__KEY",
                "set both (HTTPS) or neither (plain HTTP)",
            ));
        }
        Ok(())
    }

    /// The effective config as TOML with secrets masked, for `mxmedia check-config`.
    pub fn masked_toml(&self) -> String {
        let mut shown = self.clone();
        shown.auth.static_tokens = shown
            .auth
            .static_tokens
            .into_values()
            .enumerate()
            .map(|(i, user)| (format!("<token {} masked>", i + 1), user))
            .collect();
        toml_string(&shown)
    }

    /// Whether any way to check access tokens is configured.
    pub fn has_auth_source(&self) -> bool {
        self.auth.homeserver_url.is_some() || !self.auth.static_tokens.is_empty()
    }
}

fn toml_string(config: &Config) -> String {
    // figment re-exports no TOML writer; serde_json is good enough for a human-readable dump.
    serde_json::to_string_pretty(config).unwrap_or_else(|e| format!("<unprintable: {e}>"))
}

impl Serialize for FreeSpace {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self {
            Self::Bytes(b) => s.serialize_str(&ByteSize::b(*b).display().iec().to_string()),
            Self::Percent(p) => s.serialize_str(&format!("{p}%")),
        }
    }
}

impl<'de> Deserialize<'de> for FreeSpace {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Raw {
            Int(u64),
            Str(String),
        }
        match Raw::deserialize(d)? {
            Raw::Int(b) => Ok(Self::Bytes(b)),
            Raw::Str(s) => {
                if let Some(p) = s.trim().strip_suffix('%') {
                    p.trim()
                        .parse::<f64>()
                        .map(Self::Percent)
                        .map_err(|_| serde::de::Error::custom(format!("bad percentage {s:?}")))
                } else {
                    s.parse::<ByteSize>()
                        .map(|b| Self::Bytes(b.as_u64()))
                        .map_err(|e| serde::de::Error::custom(format!("bad size {s:?}: {e}")))
                }
            }
        }
    }
}

impl FreeSpace {
    /// The floor in bytes for a file system of `total` bytes.
    pub fn bytes(self, total: u64) -> u64 {
        match self {
            Self::Bytes(b) => b,
            // Percentages of real disks fit f64 exactly enough; truncation is harmless here.
            #[allow(
                clippy::cast_possible_truncation,
                clippy::cast_sign_loss,
                clippy::cast_precision_loss
            )]
            Self::Percent(p) => (total as f64 * p / 100.0) as u64,
        }
    }
}

mod env;
mod preview;
#[cfg(test)]
mod tests;
