//! Server discovery: from a server name to where to connect, what `Host` to send and which
//! name the certificate must carry (spec: server-server API, "Resolving server names").
//!
//! Results are cached: `.well-known` answers for as long as they say (24 h by default, at most
//! 48 h), failures for an hour, so a dead or misconfigured server costs one lookup an hour.

use std::{
    collections::HashMap,
    net::IpAddr,
    sync::Mutex,
    time::{Duration, Instant},
};

use serde::Deserialize;

use super::{Federation, FetchError};
use crate::media::id::{HostKind as Host, ServerName, parse_server_name};

const DEFAULT_PORT: u16 = 8448;
const WELL_KNOWN_DEFAULT_TTL: Duration = Duration::from_secs(24 * 3600);
const WELL_KNOWN_MAX_TTL: Duration = Duration::from_secs(48 * 3600);
const WELL_KNOWN_ERROR_TTL: Duration = Duration::from_secs(3600);
const WELL_KNOWN_MAX_BODY: usize = 50 * 1024;
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

    fn direct(host: String, port: u16, host_header: String) -> Self {
        Self {
            host,
            port,
            host_header,
            addrs: None,
        }
    }
}

#[derive(Default)]
pub struct Cache {
    entries: Mutex<HashMap<ServerName, (Instant, Destination)>>,
}

#[derive(Deserialize)]
struct WellKnown {
    #[serde(rename = "m.server")]
    server: String,
}

impl Federation {
    /// Resolves `server` to a destination, from cache when fresh.
    pub async fn destination(
        &self,
        client: &awc::Client,
        server: &ServerName,
    ) -> Result<Destination, FetchError> {
        let cached = self
            .discovery_cache()
            .entries
            .lock()
            .ok()
            .and_then(|c| c.get(server).cloned());
        if let Some((expires, destination)) = cached
            && expires > Instant::now()
        {
            self.pin(&destination);
            return Ok(destination);
        }
        let (destination, ttl) = self.discover(client, server).await?;
        if let Ok(mut cache) = self.discovery_cache().entries.lock() {
            cache.insert(server.clone(), (Instant::now() + ttl, destination.clone()));
        }
        self.pin(&destination);
        Ok(destination)
    }

    async fn discover(
        &self,
        client: &awc::Client,
        server: &ServerName,
    ) -> Result<(Destination, Duration), FetchError> {
        // Steps 1 and 2: an IP literal or an explicit port is used as is.
        let hostname = match server.host_kind() {
            Host::Ip(ip) => {
                let destination = Destination::direct(
                    url_host(ip),
                    server.port().unwrap_or(DEFAULT_PORT),
                    server.as_str().to_owned(),
                );
                return Ok((destination, WELL_KNOWN_DEFAULT_TTL));
            }
            Host::Dns(name) => name,
        };
        if let Some(port) = server.port() {
            return Ok((
                Destination::direct(hostname, port, server.as_str().to_owned()),
                WELL_KNOWN_DEFAULT_TTL,
            ));
        }
        // Step 3: `.well-known` delegation.
        let (delegated, ttl) = match self.well_known(client, &hostname).await {
            Ok((delegated, ttl)) => (Some(delegated), ttl),
            Err(e) => {
                tracing::debug!(server = %server.as_str(), error = %e, "no usable .well-known/matrix/server");
                (None, WELL_KNOWN_ERROR_TTL)
            }
        };
        let Some(delegated) = delegated else {
            // Steps 4 to 6: SRV on the server's own hostname, else port 8448.
            return Ok((self.srv_or_default(&hostname).await, ttl));
        };
        let destination = match (delegated.host_kind(), delegated.port()) {
            (Host::Ip(ip), port) => Destination::direct(
                url_host(ip),
                port.unwrap_or(DEFAULT_PORT),
                delegated.as_str().to_owned(),
            ),
            (Host::Dns(name), Some(port)) => {
                Destination::direct(name, port, delegated.as_str().to_owned())
            }
            (Host::Dns(name), None) => self.srv_or_default(&name).await,
        };
        Ok((destination, ttl))
    }

    /// SRV `_matrix-fed._tcp`, then the deprecated `_matrix._tcp`, then the name on port 8448.
    /// Host and certificate stay `name`; only the connection goes to the SRV target.
    async fn srv_or_default(&self, name: &str) -> Destination {
        for service in ["_matrix-fed._tcp", "_matrix._tcp"] {
            let Ok(lookup) = self.dns().srv_lookup(format!("{service}.{name}.")).await else {
                continue;
            };
            let mut records: Vec<_> = lookup
                .answers()
                .iter()
                .filter_map(|record| match &record.data {
                    hickory_resolver::proto::rr::RData::SRV(srv) => Some(srv.clone()),
                    _ => None,
                })
                .collect();
            records.sort_by_key(|srv| (srv.priority, std::cmp::Reverse(srv.weight)));
            for srv in records {
                let target = srv.target.to_utf8();
                let target = target.trim_end_matches('.');
                if let Ok(addrs) = self.lookup(target, srv.port).await {
                    return Destination {
                        host: name.to_owned(),
                        port: srv.port,
                        host_header: name.to_owned(),
                        addrs: Some(addrs),
                    };
                }
            }
        }
        Destination::direct(name.to_owned(), DEFAULT_PORT, name.to_owned())
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
                    // The body is JSON whatever its Content-Type says.
                    let parsed: WellKnown = serde_json::from_slice(&body).map_err(|e| {
                        FetchError::BadResponse(format!("well-known is not valid JSON: {e}"))
                    })?;
                    let delegated = parse_server_name(&parsed.server).map_err(|_| {
                        FetchError::BadResponse("m.server is not a server name".into())
                    })?;
                    let ttl = cache_ttl(headers.get("cache-control").and_then(|v| v.to_str().ok()));
                    return Ok((delegated, ttl));
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

fn url_host(ip: IpAddr) -> String {
    match ip {
        IpAddr::V4(v4) => v4.to_string(),
        IpAddr::V6(v6) => format!("[{v6}]"),
    }
}

/// `max-age` from Cache-Control, capped at 48 h; 24 h when absent.
fn cache_ttl(cache_control: Option<&str>) -> Duration {
    let max_age = cache_control.and_then(|value| {
        value.split(',').find_map(|directive| {
            let (name, secs) = directive.trim().split_once('=')?;
            name.eq_ignore_ascii_case("max-age")
                .then(|| secs.trim().parse::<u64>().ok())
                .flatten()
        })
    });
    max_age.map_or(WELL_KNOWN_DEFAULT_TTL, |secs| {
        Duration::from_secs(secs).min(WELL_KNOWN_MAX_TTL)
    })
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::cache_ttl;

    #[test]
    fn well_known_ttl() {
        assert_eq!(cache_ttl(None), Duration::from_secs(86_400));
        assert_eq!(
            cache_ttl(Some("public, max-age=600")),
            Duration::from_secs(600)
        );
        assert_eq!(
            cache_ttl(Some("max-age=9999999")),
            Duration::from_secs(172_800)
        );
        assert_eq!(cache_ttl(Some("no-store")), Duration::from_secs(86_400));
    }
}
