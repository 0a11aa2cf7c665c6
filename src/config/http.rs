//! The `[http]` section: limits on what a client may hold of the listener (connections, time to
//! send a request), and their defaults. Each limit must stay on: 0 would let slow clients hold
//! sockets forever.

use bytesize::ByteSize;
use serde::{Deserialize, Serialize};

use super::ConfigError;

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

impl Default for HttpConfig {
    fn default() -> Self {
        Self {
            request_head_timeout_secs: 10,
            keep_alive_secs: 5,
            body_idle_timeout_secs: 30,
            max_connections: 4096,
            max_tls_handshakes: 64,
            body_min_rate: ByteSize::kib(1),
        }
    }
}

impl HttpConfig {
    pub(super) fn validate(&self) -> Result<(), ConfigError> {
        for (key, value) in [
            (
                "MXMEDIA_HTTP__REQUEST_HEAD_TIMEOUT_SECS",
                self.request_head_timeout_secs,
            ),
            (
                "MXMEDIA_HTTP__BODY_IDLE_TIMEOUT_SECS",
                self.body_idle_timeout_secs,
            ),
            (
                "MXMEDIA_HTTP__MAX_CONNECTIONS",
                u64::try_from(self.max_connections).unwrap_or(u64::MAX),
            ),
            (
                "MXMEDIA_HTTP__MAX_TLS_HANDSHAKES",
                u64::try_from(self.max_tls_handshakes).unwrap_or(u64::MAX),
            ),
        ] {
            // 0 would turn a limit off: slow clients could then hold sockets forever.
            if value == 0 {
                return Err(ConfigError::invalid(key, "must be greater than 0"));
            }
        }
        Ok(())
    }
}
