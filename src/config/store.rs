//! The `[store]` section: sled's cache, the free-space floor, where blobs live and the blob
//! memory cache; `[store.s3]`, the S3-compatible bucket that large blobs go to when it is set.
//! `FreeSpace` is the parsed form of `min_free_space`.

use std::path::PathBuf;

use bytesize::ByteSize;
use num_traits::ToPrimitive as _;
use serde::{Deserialize, Serialize};

use super::{ConfigError, redirect::Redirect};

/// Largest sled value whose tree node sled's page cache still counts. A node holds up to 17
/// entries and is written "as a blob" once it exceeds a quarter of sled's 512 KiB segment; sled
/// then counts it as the few bytes of its pointer, so the cache never evicts it and memory grows
/// with the database (sled 0.34, `pagecache/logger.rs`). 17 × (7 KiB + key) stays under 128 KiB.
pub const SLED_CACHEABLE_VALUE_MAX: u64 = 7 * 1024;

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
    /// An S3-compatible bucket for the blobs that are not inline (`[store.s3]`): set its
    /// `bucket` and they go there instead of `data_dir/blobs`. Unset by default.
    pub s3: Option<S3Config>,
}

/// `[store.s3]`: where and how blobs are kept in an S3-compatible bucket (AWS, Garage, Ceph,
/// SeaweedFS, MinIO). Keys are `<prefix><first two hex digits>/<sha256>`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct S3Config {
    /// The bucket; setting it turns the S3 backend on. It must exist.
    pub bucket: String,
    /// The S3 API's base URL, e.g. `http://127.0.0.1:3900` for Garage. Unset: AWS, from `region`.
    #[serde(default)]
    pub endpoint: Option<String>,
    /// The region requests are signed for. Default `us-east-1`; Garage's is `garage`.
    #[serde(default = "default_region")]
    pub region: String,
    /// The access key id. Unset: object_store's AWS credential chain (instance metadata).
    #[serde(default)]
    pub access_key_id: Option<String>,
    /// The secret key, or use `secret_access_key_file` to keep it out of the environment.
    #[serde(default)]
    pub secret_access_key: Option<String>,
    /// A file holding the secret key (trailing whitespace ignored), read at start-up.
    #[serde(default)]
    pub secret_access_key_file: Option<PathBuf>,
    /// Prepended to every key, e.g. `mxmedia/` (empty or ending in `/`), so one bucket can hold
    /// other data or several servers. Default empty.
    #[serde(default)]
    pub prefix: String,
    /// `true`: `endpoint/bucket/key` URLs (Garage, MinIO, Ceph without wildcard DNS); `false`:
    /// `bucket.endpoint/key`, as AWS prefers. Default `false`.
    #[serde(default)]
    pub path_style: bool,
    /// Seconds one S3 request may wait for a connection or for the next bytes before it fails
    /// (and is retried, within the same bound), so a hung S3 fails uploads instead of holding
    /// them. Default 30.
    #[serde(default = "default_s3_timeout")]
    pub timeout_secs: u64,
    /// Seconds an unreferenced object must be old before the start-up sweep removes it, so an
    /// upload still in flight (from a server sharing the prefix) is never swept. Default 3600.
    #[serde(default = "default_sweep_grace")]
    pub sweep_grace_secs: u64,
    /// Whether downloads that allow it (`allow_redirect=true`) are answered with a `307` to the
    /// bucket, and federation answers with a `Location` part: `off`, `presigned` (a presigned
    /// GET carrying mxmedia's Content-Type and Content-Disposition) or `public`
    /// (`public_base_url`, for inline-safe media only). Default `off`: everything streams
    /// through mxmedia.
    #[serde(default)]
    pub redirect: Redirect,
    /// The CDN or public bucket URL objects are served from with `redirect = "public"`, e.g.
    /// `https://media-cdn.example.org/`; an object's URL is this + its key. Required then.
    #[serde(default)]
    pub public_base_url: Option<String>,
    /// Seconds a presigned URL stays valid (10 to 86400); a redirect to one is cached for half
    /// of it. Short, so a quarantine soon reaches URLs already handed out. Default 300.
    #[serde(default = "default_presign_ttl")]
    pub presign_ttl_secs: u64,
    /// Disk for a local cache of S3 blobs (`cache_dir`), in bytes or as `"20GiB"`: a blob read
    /// whole is kept there and later downloads, ranges and thumbnails read it without an S3
    /// request; the least recently used go first. 0 turns it off. Default 0.
    #[serde(default)]
    pub cache_max_size: ByteSize,
    /// Where the S3 cache keeps its files. Unset: `data_dir/s3-cache`. Only this server may
    /// use it. It counts against `min_free_space` when it is on the data dir's disk.
    #[serde(default)]
    pub cache_dir: Option<PathBuf>,
}

fn default_region() -> String {
    "us-east-1".to_owned()
}

fn default_s3_timeout() -> u64 {
    30
}

fn default_sweep_grace() -> u64 {
    3600
}

fn default_presign_ttl() -> u64 {
    super::redirect::DEFAULT_PRESIGN_TTL_SECS
}

impl S3Config {
    /// The cache's directory, if the cache is on.
    pub fn cache_dir(&self, data_dir: &std::path::Path) -> Option<PathBuf> {
        (self.cache_max_size.as_u64() > 0).then(|| {
            self.cache_dir
                .clone()
                .unwrap_or_else(|| data_dir.join("s3-cache"))
        })
    }

    fn validate(&self) -> Result<(), ConfigError> {
        if self.bucket.is_empty() {
            return Err(ConfigError::invalid(
                "MXMEDIA_STORE__S3__BUCKET",
                "must not be empty",
            ));
        }
        if let Some(endpoint) = &self.endpoint {
            match url::Url::parse(endpoint) {
                Ok(url) if matches!(url.scheme(), "http" | "https") && url.has_host() => {}
                _ => {
                    return Err(ConfigError::invalid(
                        "MXMEDIA_STORE__S3__ENDPOINT",
                        "must be an http:// or https:// URL such as http://127.0.0.1:3900",
                    ));
                }
            }
        }
        if self.region.is_empty() {
            return Err(ConfigError::invalid(
                "MXMEDIA_STORE__S3__REGION",
                "must not be empty",
            ));
        }
        if self.secret_access_key.is_some() && self.secret_access_key_file.is_some() {
            return Err(ConfigError::invalid(
                "MXMEDIA_STORE__S3__SECRET_ACCESS_KEY_FILE",
                "set either it or MXMEDIA_STORE__S3__SECRET_ACCESS_KEY, not both",
            ));
        }
        let has_secret = self.secret_access_key.is_some() || self.secret_access_key_file.is_some();
        if has_secret != self.access_key_id.is_some() {
            return Err(ConfigError::invalid(
                "MXMEDIA_STORE__S3__ACCESS_KEY_ID",
                "set it together with MXMEDIA_STORE__S3__SECRET_ACCESS_KEY (or its _FILE)",
            ));
        }
        let allowed = |c: char| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.' | '/');
        if !self.prefix.chars().all(allowed)
            || self.prefix.starts_with('/')
            || !(self.prefix.is_empty() || self.prefix.ends_with('/'))
            || self.prefix.contains("//")
            || self
                .prefix
                .split('/')
                .any(|part| part == "." || part == "..")
        {
            return Err(ConfigError::invalid(
                "MXMEDIA_STORE__S3__PREFIX",
                "use letters, digits, `-`, `_`, `.` and `/` (last, not first, not doubled), e.g. `mxmedia/`",
            ));
        }
        if self.timeout_secs == 0 {
            return Err(ConfigError::invalid(
                "MXMEDIA_STORE__S3__TIMEOUT_SECS",
                "must be at least 1",
            ));
        }
        super::redirect::validate(
            self.redirect,
            self.public_base_url.as_deref(),
            self.presign_ttl_secs,
        )
    }
}

impl Default for StoreConfig {
    fn default() -> Self {
        Self {
            cache_capacity: ByteSize::mib(32),
            min_free_space: FreeSpace::Bytes(ByteSize::gib(1).as_u64()),
            inline_blob_max: ByteSize::kib(4),
            memory_cache: ByteSize::mib(32),
            s3: None,
        }
    }
}

impl StoreConfig {
    pub(super) fn validate(&self) -> Result<(), ConfigError> {
        if let FreeSpace::Percent(p) = self.min_free_space
            && !(0.0..100.0).contains(&p)
        {
            return Err(ConfigError::invalid(
                "MXMEDIA_STORE__MIN_FREE_SPACE",
                "percentage must be in 0..100",
            ));
        }
        if let Some(s3) = &self.s3 {
            s3.validate()?;
        }
        Ok(())
    }
}

/// A free-space floor: an absolute size or a percentage of the file system.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum FreeSpace {
    Bytes(u64),
    Percent(f64),
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
            // Percentages of real disks fit f64 exactly enough; truncation is harmless here. A
            // result outside u64 (only a NaN or negative share could give one) means no reserve.
            Self::Percent(p) => total
                .to_f64()
                .and_then(|total| (total * p / 100.0).to_u64())
                .unwrap_or(0),
        }
    }
}
