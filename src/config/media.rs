//! The `[media]` section: upload and remote-fetch size limits, async uploads, and how long
//! remote media and failed fetches are kept.

use bytesize::ByteSize;
use serde::{Deserialize, Serialize};

use super::ConfigError;

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
    /// Most bytes of local media one user may store, in bytes or as `"5GiB"`; an upload that
    /// would go over it is refused with 403 `M_USER_LIMIT_EXCEEDED`. 0 (default) sets no limit.
    /// Admins may set other limits per user.
    pub user_quota_bytes: ByteSize,
    /// Most files of local media one user may store. 0 (default) sets no limit.
    pub user_quota_files: u64,
    /// Where a user whose quota is full can read about it: the `info_uri` of
    /// `M_USER_LIMIT_EXCEEDED` (Matrix v1.18). Default: the spec's content repository section.
    pub user_quota_info_uri: String,
    /// Uploads one user may start per minute (a token bucket: a minute's worth at once, then
    /// steadily); more get 429 `M_LIMIT_EXCEEDED` with `retry_after_ms`. 0 (default): no limit.
    pub user_upload_rate_per_minute: u64,
    /// Upload bytes one user may send per minute, as `"500MiB"`; a declared length is charged
    /// before the body is read, an undeclared one once received. 0 (default): no limit.
    pub user_upload_bytes_per_minute: ByteSize,
    /// Remote fetches one user may make this server start per minute (what is already stored
    /// is never charged), so one account cannot make it download the federation. 0 (default):
    /// no limit.
    pub user_remote_fetch_rate_per_minute: u64,
}

impl Default for MediaConfig {
    fn default() -> Self {
        Self {
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
            user_quota_bytes: ByteSize::b(0),
            user_quota_files: 0,
            user_quota_info_uri:
                "https://spec.matrix.org/v1.16/client-server-api/#content-repository".into(),
            user_upload_rate_per_minute: 0,
            user_upload_bytes_per_minute: ByteSize::b(0),
            user_remote_fetch_rate_per_minute: 0,
        }
    }
}

impl MediaConfig {
    pub(super) fn validate(&self) -> Result<(), ConfigError> {
        if self.max_upload_size.as_u64() == 0 {
            return Err(ConfigError::invalid(
                "MXMEDIA_MEDIA__MAX_UPLOAD_SIZE",
                "must be greater than 0",
            ));
        }
        if self.max_remote_size.as_u64() == 0 {
            return Err(ConfigError::invalid(
                "MXMEDIA_MEDIA__MAX_REMOTE_SIZE",
                "must be greater than 0",
            ));
        }
        Ok(())
    }
}
