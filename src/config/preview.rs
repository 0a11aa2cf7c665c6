//! The `[preview]` section: URL previews. The server fetches pages that users name, so every
//! setting here bounds what a hostile URL can make it do.
//! `UrlPattern` is the parsed form of a `url_denylist` entry, parsed once while the config is
//! deserialised: the guard takes the parsed patterns.

use std::net::SocketAddr;

use bytesize::ByteSize;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

use super::{ConfigError, DEFAULT_IP_RANGE_DENYLIST};

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PreviewConfig {
    /// Answer preview requests. Off by default: previews make the server fetch any URL a user
    /// names. While off, the endpoint answers 404 `M_UNRECOGNIZED`, as Synapse does.
    pub enabled: bool,
    /// Address ranges never fetched from, checked on every address a name resolves to (one
    /// denied address refuses the whole name), on IP literals, on every redirect and on images.
    /// Default: the same list as `federation.ip_range_denylist`. May not be empty while previews
    /// are enabled.
    pub ip_range_denylist: Vec<ipnet::IpNet>,
    /// Ranges fetched from even though the denylist covers them (an intranet wiki, say).
    /// Default empty.
    pub ip_range_allowlist: Vec<ipnet::IpNet>,
    /// URLs never fetched: `example.com` (that domain and all its subdomains) or `http:` (a
    /// whole scheme). Default empty.
    pub url_denylist: Vec<UrlPattern>,
    /// DNS servers to ask (`ip:port`); empty = the system's resolver configuration.
    pub nameservers: Vec<SocketAddr>,
    /// Most bytes of a page that are downloaded and parsed; the rest is never read (OpenGraph
    /// tags live in the head). Default 2 MiB.
    pub max_page_size: ByteSize,
    /// Largest image stored for a preview; also capped by `thumbnails.max_source_size` and
    /// `media.max_upload_size`. A larger `og:image` is left out. Default 10 MiB.
    pub max_image_size: ByteSize,
    /// Redirects followed per fetch, each re-checked against both denylists. Default 5.
    pub max_redirects: u32,
    /// Seconds to wait for a connection. Default 5.
    pub connect_timeout_secs: u64,
    /// Seconds one preview may take in all: page, redirects, oEmbed and image. Default 20.
    pub timeout_secs: u64,
    /// Seconds a preview is served from the cache, which is keyed by the URL and the hour of
    /// `ts`. Default 24 h.
    pub cache_ttl_secs: u64,
    /// Previews a user may start fetching per minute. Answers from the cache or from a fetch
    /// already under way are not counted: the limit bounds outgoing fetches. 0 = unlimited.
    /// Default 30.
    pub rate_limit_per_minute: u32,
    /// Fetches a user may start at once before the per-minute rate applies. Default 10.
    pub rate_limit_burst: u32,
    /// Seconds an image stored for a preview is kept, from when it was fetched; then its id
    /// answers 404. Never less than `cache_ttl_secs` (the longer applies), so that every cached
    /// preview's image is there; longer by default, since clients keep previews too.
    /// Default 2 days (Synapse's).
    pub image_ttl_secs: u64,
    /// Most bytes all preview images may take together; past it the oldest are removed first
    /// (with the cached previews that show them). Preview images are nobody's uploads, so no
    /// quota bounds them: this does. Also caps `max_image_size`. Default 1 GiB.
    pub image_cache_max_size: ByteSize,
}

impl Default for PreviewConfig {
    fn default() -> Self {
        Self {
            enabled: false,
            ip_range_denylist: DEFAULT_IP_RANGE_DENYLIST
                .iter()
                .filter_map(|n| n.parse().ok())
                .collect(),
            ip_range_allowlist: Vec::new(),
            url_denylist: Vec::new(),
            nameservers: Vec::new(),
            max_page_size: ByteSize::mib(2),
            max_image_size: ByteSize::mib(10),
            max_redirects: 5,
            connect_timeout_secs: 5,
            timeout_secs: 20,
            cache_ttl_secs: 24 * 60 * 60,
            rate_limit_per_minute: 30,
            rate_limit_burst: 10,
            image_ttl_secs: 2 * 24 * 60 * 60,
            image_cache_max_size: ByteSize::gib(1),
        }
    }
}

impl PreviewConfig {
    /// How long preview images are kept, in ms: `image_ttl_secs`, never less than the
    /// previews that show them are cached.
    pub fn image_ttl_ms(&self) -> u64 {
        self.image_ttl_secs
            .max(self.cache_ttl_secs)
            .saturating_mul(1000)
    }

    pub(super) fn validate(&self) -> Result<(), ConfigError> {
        if self.enabled && self.ip_range_denylist.is_empty() {
            return Err(ConfigError::invalid(
                "MXMEDIA_PREVIEW__IP_RANGE_DENYLIST",
                "must not be empty while previews are enabled (list exceptions in \
                 MXMEDIA_PREVIEW__IP_RANGE_ALLOWLIST instead)",
            ));
        }
        if self.max_page_size.as_u64() == 0 {
            return Err(ConfigError::invalid(
                "MXMEDIA_PREVIEW__MAX_PAGE_SIZE",
                "must be greater than 0",
            ));
        }
        if self.max_image_size.as_u64() == 0 {
            return Err(ConfigError::invalid(
                "MXMEDIA_PREVIEW__MAX_IMAGE_SIZE",
                "must be greater than 0",
            ));
        }
        if self.max_redirects > 20 {
            return Err(ConfigError::invalid(
                "MXMEDIA_PREVIEW__MAX_REDIRECTS",
                "must be at most 20",
            ));
        }
        if self.connect_timeout_secs == 0 {
            return Err(ConfigError::invalid(
                "MXMEDIA_PREVIEW__CONNECT_TIMEOUT_SECS",
                "must be greater than 0",
            ));
        }
        if self.timeout_secs == 0 {
            return Err(ConfigError::invalid(
                "MXMEDIA_PREVIEW__TIMEOUT_SECS",
                "must be greater than 0",
            ));
        }
        if self.rate_limit_per_minute > 0 && self.rate_limit_burst == 0 {
            return Err(ConfigError::invalid(
                "MXMEDIA_PREVIEW__RATE_LIMIT_BURST",
                "must be at least 1 when rate_limit_per_minute is set",
            ));
        }
        if self.image_cache_max_size.as_u64() == 0 {
            return Err(ConfigError::invalid(
                "MXMEDIA_PREVIEW__IMAGE_CACHE_MAX_SIZE",
                "must be greater than 0",
            ));
        }
        Ok(())
    }
}

/// One `url_denylist` entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum UrlPattern {
    /// `http:`: every URL with that scheme.
    Scheme(String),
    /// `example.com`: that host and every subdomain.
    Domain(String),
}

impl UrlPattern {
    pub fn parse(raw: &str) -> Option<Self> {
        let raw = raw.trim().to_ascii_lowercase();
        if let Some(scheme) = raw.strip_suffix(':') {
            let valid = scheme.starts_with(|c: char| c.is_ascii_alphabetic())
                && scheme
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || "+-.".contains(c));
            return valid.then(|| Self::Scheme(scheme.to_owned()));
        }
        let domain = raw.trim_start_matches("*.").trim_matches('.');
        let valid = !domain.is_empty()
            && domain
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || "-.:[]".contains(c));
        valid.then(|| Self::Domain(domain.to_owned()))
    }

    /// Whether `url` is denied by this entry.
    pub fn matches(&self, url: &url::Url) -> bool {
        match self {
            Self::Scheme(scheme) => url.scheme() == scheme,
            Self::Domain(domain) => url.host_str().is_some_and(|host| {
                let host = host.trim_end_matches('.');
                host == domain
                    || host
                        .strip_suffix(domain.as_str())
                        .is_some_and(|rest| rest.ends_with('.'))
            }),
        }
    }
}

/// Written back in the form `parse` reads, so `check-config` shows what is in force.
impl std::fmt::Display for UrlPattern {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Scheme(scheme) => write!(f, "{scheme}:"),
            Self::Domain(domain) => f.write_str(domain),
        }
    }
}

impl Serialize for UrlPattern {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for UrlPattern {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let raw = <std::borrow::Cow<'de, str>>::deserialize(d)?;
        Self::parse(&raw).ok_or_else(|| {
            serde::de::Error::custom(
                "invalid value for MXMEDIA_PREVIEW__URL_DENYLIST: entries must be domains like \
                 example.com or schemes like http:",
            )
        })
    }
}
