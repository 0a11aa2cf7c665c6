//! The pure half of server discovery ([spec: resolving server names](https://spec.matrix.org/v1.16/server-server-api/#resolving-server-names)): which step applies to a server name, what a
//! `.well-known/matrix/server` body delegates to, and, once an answer is known, where to connect
//! plus the `Host` header and certificate name to use. HTTP, DNS and caching belong to the
//! federation client, which drives these functions:
//!
//! ```text
//! first_step(name) ─ Connect(endpoint)                      steps 1, 2
//!                  └ FetchWellKnown{hostname}
//!                        └ after_well_known(hostname, parse_well_known(body) or None)
//!                              ─ Connect(endpoint)          steps 3.1, 3.2
//!                              └ LookupSrv(srv)             steps 3.3-3.5 or 4-6
//!                                    └ srv.with_target(..) or srv.fallback()
//! ```

use std::net::IpAddr;
use std::time::Duration;

use serde_json::Value;

use crate::ids::{HostKind, ServerName};

/// The federation port when nothing else names one.
pub const DEFAULT_PORT: u16 = 8448;
/// Cache lifetime of a `.well-known` answer without cache headers ([spec: resolving server names](https://spec.matrix.org/v1.16/server-server-api/#resolving-server-names): 24 h).
pub const WELL_KNOWN_DEFAULT_TTL: Duration = Duration::from_secs(24 * 3600);
/// Longest a `.well-known` answer may be cached, whatever its headers say ([spec: resolving server names](https://spec.matrix.org/v1.16/server-server-api/#resolving-server-names): 48 h).
pub const WELL_KNOWN_MAX_TTL: Duration = Duration::from_secs(48 * 3600);
/// Longest a failed `.well-known` fetch may be cached ([spec: resolving server names](https://spec.matrix.org/v1.16/server-server-api/#resolving-server-names): up to 1 h, with backoff).
pub const WELL_KNOWN_ERROR_TTL: Duration = Duration::from_secs(3600);

/// A settled connection target.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Endpoint {
    /// What to connect to: an IP literal, or a DNS name to resolve (CNAME/AAAA/A).
    pub host: HostKind,
    /// The TCP port.
    pub port: u16,
    /// The `Host` header to send.
    pub host_header: String,
    /// The name the server's certificate must be valid for: a DNS name, or an IP address as text.
    pub tls_name: String,
}

impl Endpoint {
    /// The TLS SNI to send: the certificate name, except none for IP addresses ([spec: resolving server names](https://spec.matrix.org/v1.16/server-server-api/#resolving-server-names)).
    pub fn sni(&self) -> Option<&str> {
        match self.tls_name.parse::<IpAddr>() {
            Ok(_) => None,
            Err(_) => Some(&self.tls_name),
        }
    }
}

/// What the client does next.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Step {
    /// Connect to this endpoint.
    Connect(Endpoint),
    /// GET `https://{hostname}/.well-known/matrix/server`, then call `after_well_known`.
    FetchWellKnown {
        /// The host to ask.
        hostname: String,
    },
    /// Look up SRV records, then use `SrvLookup::with_target` or `SrvLookup::fallback`.
    LookupSrv(SrvLookup),
}

/// An SRV step for `name` ([spec: resolving server names](https://spec.matrix.org/v1.16/server-server-api/#resolving-server-names) steps 3.3-3.5 and 4-6). With SRV, the `Host` header and
/// certificate use `name`, never the SRV target: DNS is not secure, so the delegate proves
/// itself over TLS.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SrvLookup {
    /// The (delegated) hostname being resolved.
    pub name: String,
}

impl SrvLookup {
    /// The SRV names to query, in order: `_matrix-fed._tcp` (v1.8), then the deprecated
    /// `_matrix._tcp`.
    pub fn srv_names(&self) -> [String; 2] {
        [
            format!("_matrix-fed._tcp.{}", self.name),
            format!("_matrix._tcp.{}", self.name),
        ]
    }

    /// The endpoint for an SRV answer's target and port.
    pub fn with_target(&self, target: &str, port: u16) -> Endpoint {
        Endpoint {
            host: HostKind::Dns(target.to_owned()),
            port,
            host_header: self.name.clone(),
            tls_name: self.name.clone(),
        }
    }

    /// The endpoint when neither SRV name has records: the name itself on port 8448.
    pub fn fallback(&self) -> Endpoint {
        self.with_target(&self.name, DEFAULT_PORT)
    }
}

/// [Spec: resolving server names](https://spec.matrix.org/v1.16/server-server-api/#resolving-server-names) steps 1-3 for `server`: IP literals and explicit ports connect directly; a bare DNS
/// name needs its `.well-known` first.
pub fn first_step(server: &ServerName) -> Step {
    match (server.host_kind(), server.port()) {
        (HostKind::Ip(ip), port) => Step::Connect(ip_endpoint(ip, port, server)),
        (HostKind::Dns(host), Some(port)) => Step::Connect(Endpoint {
            host: HostKind::Dns(host.clone()),
            port,
            host_header: server.to_string(),
            tls_name: host,
        }),
        (HostKind::Dns(hostname), None) => Step::FetchWellKnown { hostname },
    }
}

/// The delegated server name in a `.well-known/matrix/server` body, read as JSON whatever the
/// Content-Type. `None` (bad JSON, no or invalid `m.server`) means "invalid": go on to SRV.
pub fn parse_well_known(body: &[u8]) -> Option<ServerName> {
    let value: Value = serde_json::from_slice(body).ok()?;
    value.get("m.server")?.as_str()?.parse().ok()
}

/// [Spec: resolving server names](https://spec.matrix.org/v1.16/server-server-api/#resolving-server-names) steps 3.1-3.5 when `.well-known` of `hostname` delegated to `delegated`, or steps
/// 4-6 when it failed or was invalid (`None`).
pub fn after_well_known(hostname: &str, delegated: Option<&ServerName>) -> Step {
    let Some(delegated) = delegated else {
        return Step::LookupSrv(SrvLookup {
            name: hostname.to_owned(),
        });
    };
    match first_step(delegated) {
        // 3.1 and 3.2 are steps 1 and 2 applied to the delegated name.
        Step::Connect(endpoint) => Step::Connect(endpoint),
        Step::FetchWellKnown { hostname } | Step::LookupSrv(SrvLookup { name: hostname }) => {
            Step::LookupSrv(SrvLookup { name: hostname })
        }
    }
}

/// Step 1 / 3.1: connect to the IP, `Host` is the name as written (port included if given).
fn ip_endpoint(ip: IpAddr, port: Option<u16>, name: &ServerName) -> Endpoint {
    Endpoint {
        host: HostKind::Ip(ip),
        port: port.unwrap_or(DEFAULT_PORT),
        host_header: name.to_string(),
        tls_name: ip.to_string(),
    }
}

/// How long to cache a successful `.well-known` answer given its `Cache-Control` header:
/// `no-store` → zero, `max-age=N` → N seconds capped at 48 h, otherwise 24 h. Callers may add
/// jitter or a floor (Synapse uses 5 minutes).
pub fn well_known_cache_ttl(cache_control: Option<&str>) -> Duration {
    let mut max_age = None;
    for directive in cache_control.unwrap_or_default().split(',') {
        let directive = directive.trim();
        if directive.eq_ignore_ascii_case("no-store") {
            return Duration::ZERO;
        }
        let Some((name, value)) = directive.split_once('=') else {
            continue;
        };
        if name.trim().eq_ignore_ascii_case("max-age") {
            max_age = value.trim().trim_matches('"').parse::<u64>().ok();
        }
    }
    max_age
        .map(Duration::from_secs)
        .unwrap_or(WELL_KNOWN_DEFAULT_TTL)
        .min(WELL_KNOWN_MAX_TTL)
}

#[cfg(test)]
mod tests;
