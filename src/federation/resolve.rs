//! Server discovery: from a server name to where to connect, what `Host` to send and which
//! name the certificate must carry (spec: server-server API, "Resolving server names").
//!
//! Results are cached in a bounded cache (`DISCOVERY_CAPACITY` servers): `.well-known` answers
//! for as long as their `Cache-Control: max-age` or `Expires` says (24 h by default, at least
//! 5 min, at most 48 h, as Synapse does), failures for an hour, so a dead or misconfigured server
//! costs one lookup an hour. A result that went through SRV lasts no longer than the SRV and
//! address records behind it, and neither does its pin: a moved server is followed once its
//! DNS TTL runs out (<https://spec.matrix.org/v1.16/server-server-api/#resolving-server-names>).

use std::{
    net::IpAddr,
    time::{Duration, Instant, SystemTime},
};

use mxmedia_proto::{
    discovery::{
        self, Endpoint, SrvLookup, Step, WELL_KNOWN_DEFAULT_TTL, WELL_KNOWN_ERROR_TTL,
        WELL_KNOWN_MAX_TTL,
    },
    ids::{HostKind, ServerName},
};

use super::{Federation, FetchError};
use crate::ttl_cache::TtlCache;

const WELL_KNOWN_MAX_BODY: usize = 50 * 1024;
/// Shortest time a `.well-known` answer is kept, whatever its headers say, so a server sending
/// `no-store` is not asked again on every request.
const WELL_KNOWN_MIN_TTL: Duration = Duration::from_secs(300);
const MAX_REDIRECTS: usize = 5;

/// Where a server's federation API is reached.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Destination {
    /// The URL host: an IP literal (bracketed for IPv6) or the name the certificate must match,
    /// which is also the TLS SNI.
    pub host: String,
    pub port: u16,
    /// The `Host` header to send.
    pub host_header: String,
    /// Addresses to connect to instead of resolving `host` (from an SRV record).
    pub addrs: Option<Vec<std::net::SocketAddr>>,
}

impl Destination {
    pub fn url(&self, path_and_query: &str) -> String {
        format!("https://{}:{}{}", self.host, self.port, path_and_query)
    }

    /// The URL names the certificate name; the connection goes to `addrs` when the endpoint's
    /// host is another name (an SRV target).
    fn new(endpoint: &Endpoint, addrs: Option<Vec<std::net::SocketAddr>>) -> Self {
        let host = match endpoint.tls_name.parse::<IpAddr>() {
            Ok(IpAddr::V6(v6)) => format!("[{v6}]"),
            Ok(IpAddr::V4(v4)) => v4.to_string(),
            Err(_) => endpoint.tls_name.clone(),
        };
        Self {
            host,
            port: endpoint.port,
            host_header: endpoint.host_header.clone(),
            addrs,
        }
    }
}

/// Discovery results by server name, each with the instant it expires (also kept in the value,
/// to re-pin SRV addresses evicted from the pin cache with the same deadline).
pub struct Cache {
    entries: TtlCache<ServerName, (Destination, Instant)>,
}

impl Cache {
    pub fn new(capacity: usize) -> Self {
        Self {
            entries: TtlCache::new(capacity),
        }
    }
}

impl Federation {
    /// Resolves `server` to a destination, from cache when fresh.
    pub async fn destination(
        &self,
        client: &awc::Client,
        server: &ServerName,
    ) -> Result<Destination, FetchError> {
        if let Some((destination, until)) = self.discovery_cache().entries.get(server) {
            self.pin(&destination, until);
            return Ok(destination);
        }
        let started = Instant::now();
        let (destination, ttl, dns_until) = self.discover(client, server).await?;
        let until = dns_until.map_or(started + ttl, |dns| dns.min(started + ttl));
        self.discovery_cache()
            .entries
            .insert(server.clone(), (destination.clone(), until), until);
        self.pin(&destination, until);
        Ok(destination)
    }

    /// Drives the spec's steps (`mxmedia_proto::discovery`) with real HTTP and DNS. Returns the
    /// destination, how long the `.well-known` step may be trusted, and when the DNS records it
    /// was pinned with expire.
    async fn discover(
        &self,
        client: &awc::Client,
        server: &ServerName,
    ) -> Result<(Destination, Duration, Option<Instant>), FetchError> {
        let (step, ttl) = match discovery::first_step(server) {
            Step::FetchWellKnown { hostname } => {
                let (delegated, ttl) = match self.well_known(client, &hostname).await {
                    Ok((delegated, ttl)) => (Some(delegated), ttl),
                    Err(e) => {
                        tracing::debug!(server = %server.as_str(), error = %e, "no usable .well-known/matrix/server");
                        (None, WELL_KNOWN_ERROR_TTL)
                    }
                };
                (
                    discovery::after_well_known(&hostname, delegated.as_ref()),
                    ttl,
                )
            }
            step => (step, WELL_KNOWN_DEFAULT_TTL),
        };
        match step {
            Step::Connect(endpoint) => Ok((Destination::new(&endpoint, None), ttl, None)),
            Step::LookupSrv(srv) => {
                let (destination, dns_until) = self.srv_destination(&srv).await;
                Ok((destination, ttl, dns_until))
            }
            Step::FetchWellKnown { .. } => Err(FetchError::BadResponse(
                "delegation loops back to .well-known".into(),
            )),
        }
    }

    /// SRV `_matrix-fed._tcp`, then the deprecated `_matrix._tcp`, then the name on port 8448.
    /// Host and certificate stay the name; only the connection goes to the SRV target, until
    /// the SRV record or the target's addresses expire, whichever is first.
    async fn srv_destination(&self, srv: &SrvLookup) -> (Destination, Option<Instant>) {
        for service in srv.srv_names() {
            let Ok(lookup) = self.dns().srv_lookup(format!("{service}.")).await else {
                continue;
            };
            let srv_until = lookup.valid_until();
            let mut records: Vec<_> = lookup
                .answers()
                .iter()
                .filter_map(|record| match &record.data {
                    hickory_resolver::proto::rr::RData::SRV(srv) => Some(srv.clone()),
                    _ => None,
                })
                .collect();
            records.sort_by_key(|record| (record.priority, std::cmp::Reverse(record.weight)));
            for record in records {
                let target = record.target.to_utf8();
                let endpoint = srv.with_target(target.trim_end_matches('.'), record.port);
                let HostKind::Dns(target) = &endpoint.host else {
                    continue;
                };
                if let Ok((addrs, addrs_until)) = self.resolve(target, endpoint.port).await {
                    let until = addrs_until.map_or(srv_until, |a| a.min(srv_until));
                    return (Destination::new(&endpoint, Some(addrs)), Some(until));
                }
            }
        }
        (Destination::new(&srv.fallback(), None), None)
    }

    /// Fetches and validates `https://<hostname>/.well-known/matrix/server`, following redirects.
    async fn well_known(
        &self,
        client: &awc::Client,
        hostname: &str,
    ) -> Result<(ServerName, Duration), FetchError> {
        let mut url = format!("https://{hostname}/.well-known/matrix/server");
        for _ in 0..=MAX_REDIRECTS {
            match self.get_bytes(client, &url, &[], WELL_KNOWN_MAX_BODY).await {
                Ok((_, headers, body)) => {
                    let delegated = discovery::parse_well_known(&body).ok_or_else(|| {
                        FetchError::BadResponse("well-known has no valid m.server".into())
                    })?;
                    return Ok((delegated, well_known_ttl(&headers, SystemTime::now())));
                }
                Err(FetchError::Status {
                    status: 301 | 302 | 303 | 307 | 308,
                    ..
                }) => {
                    // get_bytes does not expose headers on errors; fetch the redirect target.
                    url = self.redirect_target(client, &url).await?;
                }
                Err(e) => return Err(e),
            }
        }
        Err(FetchError::BadResponse("too many redirects".into()))
    }

    async fn redirect_target(&self, client: &awc::Client, url: &str) -> Result<String, FetchError> {
        let response = client.get(url).send().await.map_err(super::send_error)?;
        let location = response
            .headers()
            .get("location")
            .and_then(|v| v.to_str().ok())
            .ok_or_else(|| FetchError::BadResponse("redirect without Location".into()))?;
        if location.starts_with("https://") {
            Ok(location.to_owned())
        } else {
            Err(FetchError::BadResponse(
                "well-known redirect must stay on https".into(),
            ))
        }
    }
}

/// How long a `.well-known` answer is kept: `Cache-Control` (`no-store`, `max-age`) first, else
/// `Expires`, else 24 h; never under `WELL_KNOWN_MIN_TTL` nor over 48 h.
fn well_known_ttl(headers: &awc::http::header::HeaderMap, now: SystemTime) -> Duration {
    let cache_control = headers.get("cache-control").and_then(|v| v.to_str().ok());
    // HTTP caching: max-age (and no-store) override Expires.
    let decides = cache_control.is_some_and(|cc| {
        cc.split(',').any(|d| {
            let d = d.trim().to_ascii_lowercase();
            d == "no-store" || d.starts_with("max-age")
        })
    });
    let expires = headers
        .get("expires")
        .and_then(|v| v.to_str().ok())
        .map(|v| v.trim().parse::<awc::http::header::HttpDate>());
    let ttl = match expires {
        Some(expires) if !decides => expires
            .ok()
            .and_then(|at| SystemTime::from(at).duration_since(now).ok())
            // An unparseable or past date means "already stale" (RFC 9111 §5.3).
            .unwrap_or(Duration::ZERO)
            .min(WELL_KNOWN_MAX_TTL),
        _ => discovery::well_known_cache_ttl(cache_control),
    };
    ttl.max(WELL_KNOWN_MIN_TTL)
}

#[cfg(test)]
mod tests {
    use std::time::{Duration, SystemTime};

    use awc::http::header::{HeaderMap, HeaderName, HeaderValue, HttpDate};

    use super::well_known_ttl;

    fn headers(pairs: &[(&'static str, String)]) -> HeaderMap {
        let mut map = HeaderMap::new();
        for (name, value) in pairs {
            map.insert(
                HeaderName::from_static(name),
                HeaderValue::from_str(value).unwrap(),
            );
        }
        map
    }

    /// A `.well-known` answer lives as its headers say, within 5 min and 48 h, 24 h if silent.
    #[test]
    fn well_known_lifetime_follows_cache_headers() {
        let now = SystemTime::now();
        let hours = |h: u64| Duration::from_secs(h * 3600);
        let in_3h = HttpDate::from(now + hours(3)).to_string();
        let cases = [
            (headers(&[]), hours(24)),
            (
                headers(&[("cache-control", "max-age=7200".into())]),
                hours(2),
            ),
            (
                headers(&[("cache-control", "max-age=9999999".into())]),
                hours(48),
            ),
            (
                headers(&[("cache-control", "no-store".into())]),
                Duration::from_secs(300),
            ),
            (headers(&[("expires", in_3h.clone())]), hours(3)),
            (
                headers(&[("expires", in_3h), ("cache-control", "max-age=3600".into())]),
                hours(1),
            ),
            (
                headers(&[("expires", "0".into())]),
                Duration::from_secs(300),
            ),
            (
                headers(&[("expires", HttpDate::from(now + hours(500)).to_string())]),
                hours(48),
            ),
        ];
        for (map, expected) in cases {
            let ttl = well_known_ttl(&map, now);
            // HTTP dates have a resolution of one second.
            assert!(
                ttl.abs_diff(expected) <= Duration::from_secs(1),
                "{map:?}: {ttl:?} != {expected:?}"
            );
        }
    }
}
