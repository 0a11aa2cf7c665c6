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

use mxmedia_proto::discovery::{
    self, Endpoint, SrvLookup, Step, WELL_KNOWN_DEFAULT_TTL, WELL_KNOWN_ERROR_TTL,
};

use super::{Federation, FetchError};
use crate::media::id::{HostKind, ServerName};

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

#[derive(Default)]
pub struct Cache {
    entries: Mutex<HashMap<ServerName, (Instant, Destination)>>,
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

    /// Drives the spec's steps (`mxmedia_proto::discovery`) with real HTTP and DNS.
    async fn discover(
        &self,
        client: &awc::Client,
        server: &ServerName,
    ) -> Result<(Destination, Duration), FetchError> {
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
            Step::Connect(endpoint) => Ok((Destination::new(&endpoint, None), ttl)),
            Step::LookupSrv(srv) => Ok((self.srv_destination(&srv).await, ttl)),
            Step::FetchWellKnown { .. } => Err(FetchError::BadResponse(
                "delegation loops back to .well-known".into(),
            )),
        }
    }

    /// SRV `_matrix-fed._tcp`, then the deprecated `_matrix._tcp`, then the name on port 8448.
    /// Host and certificate stay the name; only the connection goes to the SRV target.
    async fn srv_destination(&self, srv: &SrvLookup) -> Destination {
        for service in srv.srv_names() {
            let Ok(lookup) = self.dns().srv_lookup(format!("{service}.")).await else {
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
            records.sort_by_key(|record| (record.priority, std::cmp::Reverse(record.weight)));
            for record in records {
                let target = record.target.to_utf8();
                let endpoint = srv.with_target(target.trim_end_matches('.'), record.port);
                let HostKind::Dns(target) = &endpoint.host else {
                    continue;
                };
                if let Ok(addrs) = self.lookup(target, endpoint.port).await {
                    return Destination::new(&endpoint, Some(addrs));
                }
            }
        }
        Destination::new(&srv.fallback(), None)
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
                    let ttl = discovery::well_known_cache_ttl(
                        headers.get("cache-control").and_then(|v| v.to_str().ok()),
                    )
                    .max(WELL_KNOWN_MIN_TTL);
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
