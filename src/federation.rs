//! Outgoing federation HTTP: the one client every request to another server goes through
//! (server keys, `keyring`; remote media, `media`).
//!
//! It owns server discovery (`resolve`), builds its TLS from `net::tls`, and applies the SSRF guard
//! (`net::IpPolicy`, the same judgement of addresses previews use): every
//! address connected to, whether from a server name, `.well-known` delegation or an SRV record,
//! is checked against the denylist after DNS resolution, and the connection goes to exactly the
//! address checked. Timeouts and size limits bound everything read from the network.
//!
//! What discovery learns about servers an outsider names (destinations, SRV pins) lives in
//! bounded caches, each entry no longer than the DNS record or `.well-known` answer behind it.

pub mod identity;
pub mod keyring;
pub mod media;
pub mod resolve;

use std::{
    net::{IpAddr, SocketAddr},
    sync::Arc,
    time::{Duration, Instant},
};

use bytes::Bytes;
use futures_util::future::LocalBoxFuture;
use hickory_resolver::TokioResolver;

use self::resolve::Destination;
use crate::{config::FederationConfig, net::IpPolicy, ttl_cache::TtlCache};

/// Largest JSON body read from a remote server (keys, `.well-known`).
pub const MAX_JSON_BODY: usize = 512 * 1024;
/// Servers whose discovery result (and SRV pin) is remembered: every server we federate with
/// fits many times over; a flood of made-up names evicts only names used once.
pub const DISCOVERY_CAPACITY: usize = 10_000;

#[derive(Debug, thiserror::Error)]
pub enum FetchError {
    #[error("destination address is not allowed")]
    Denied,
    #[error("could not resolve {0}")]
    Dns(String),
    #[error("request failed: {0}")]
    Request(String),
    #[error("timed out")]
    Timeout,
    #[error("remote answered {status}")]
    Status { status: u16, body: Bytes },
    #[error("response too large")]
    TooLarge,
    #[error("bad response: {0}")]
    BadResponse(String),
}

/// Shared by all workers: the parts of the client that are `Send`.
#[derive(Clone)]
pub struct Federation {
    inner: Arc<Inner>,
}

struct Inner {
    denylist: IpPolicy,
    dns: TokioResolver,
    tls: Arc<rustls::ClientConfig>,
    connect_timeout: Duration,
    request_timeout: Duration,
    /// Addresses decided by discovery (SRV targets) for a (host, port) the URL names: the
    /// connector uses them instead of resolving the host itself, until the DNS records that
    /// chose them expire.
    pinned: TtlCache<(String, u16), Vec<SocketAddr>>,
    discovery: resolve::Cache,
}

impl Federation {
    pub fn new(config: &FederationConfig) -> anyhow::Result<Self> {
        let dns = crate::net::dns_resolver(&config.nameservers)?;
        let tls = crate::net::tls::client_config(config.verify_tls, config.ca_file.as_deref())?;
        Ok(Self {
            inner: Arc::new(Inner {
                denylist: IpPolicy::new(config.ip_range_denylist.clone(), Vec::new()),
                dns,
                tls: Arc::new(tls),
                connect_timeout: Duration::from_secs(config.connect_timeout_secs),
                request_timeout: Duration::from_secs(config.request_timeout_secs),
                pinned: TtlCache::new(DISCOVERY_CAPACITY),
                discovery: resolve::Cache::new(DISCOVERY_CAPACITY),
            }),
        })
    }

    /// A client for the calling worker thread (awc clients are tied to their thread).
    pub fn client(&self) -> awc::Client {
        let options = crate::net::ClientOptions {
            tls: self.inner.tls.clone(),
            connect_timeout: self.inner.connect_timeout,
            request_timeout: self.inner.request_timeout,
        };
        crate::net::guarded_client(self.clone(), &options)
    }

    pub fn denies(&self, ip: IpAddr) -> bool {
        self.inner.denylist.denies(ip)
    }

    pub(crate) fn dns(&self) -> &TokioResolver {
        &self.inner.dns
    }

    pub(crate) fn discovery_cache(&self) -> &resolve::Cache {
        &self.inner.discovery
    }

    /// Remembers the addresses discovery chose for a URL's (host, port), until `until`.
    pub(crate) fn pin(&self, destination: &Destination, until: Instant) {
        if let Some(addrs) = &destination.addrs {
            self.inner.pinned.insert(
                (destination.host.clone(), destination.port),
                addrs.clone(),
                until,
            );
        }
    }

    /// The addresses pinned for (host, port), if still fresh at `now`.
    pub(crate) fn pinned_at(&self, host: &str, port: u16, now: Instant) -> Option<Vec<SocketAddr>> {
        self.inner.pinned.get_at(&(host.to_owned(), port), now)
    }

    /// Resolves `host` to the addresses that may be contacted; none allowed is an error.
    pub(crate) async fn lookup(
        &self,
        host: &str,
        port: u16,
    ) -> Result<Vec<SocketAddr>, FetchError> {
        if let Some(addrs) = self.pinned_at(host, port, Instant::now()) {
            return Ok(addrs);
        }
        self.resolve(host, port).await.map(|(addrs, _)| addrs)
    }

    /// DNS (never the pins) for `host`, filtered, with when the answer expires (`None` for an
    /// IP literal).
    pub(crate) async fn resolve(
        &self,
        host: &str,
        port: u16,
    ) -> Result<(Vec<SocketAddr>, Option<Instant>), FetchError> {
        if let Some(ip) = crate::net::literal_ip(host) {
            return if self.denies(ip) {
                Err(FetchError::Denied)
            } else {
                Ok((vec![SocketAddr::new(ip, port)], None))
            };
        }
        let lookup = self
            .inner
            .dns
            .lookup_ip(host)
            .await
            .map_err(|_| FetchError::Dns(host.to_owned()))?;
        let valid_until = lookup.valid_until();
        let all: Vec<IpAddr> = lookup.iter().collect();
        if all.is_empty() {
            return Err(FetchError::Dns(host.to_owned()));
        }
        let allowed: Vec<SocketAddr> = all
            .into_iter()
            .filter(|ip| !self.denies(*ip))
            .map(|ip| SocketAddr::new(ip, port))
            .collect();
        if allowed.is_empty() {
            Err(FetchError::Denied)
        } else {
            Ok((allowed, Some(valid_until)))
        }
    }

    /// GETs `path` from `server`'s federation API (after discovery) and parses the JSON answer.
    pub async fn get_json(
        &self,
        client: &awc::Client,
        server: &mxmedia_proto::ids::ServerName,
        path: &str,
    ) -> Result<serde_json::Value, FetchError> {
        let destination = self.destination(client, server).await?;
        let (_, _, body) = self
            .get_bytes(
                client,
                &destination.url(path),
                &[("host", destination.host_header.clone())],
                MAX_JSON_BODY,
            )
            .await?;
        serde_json::from_slice(&body).map_err(|e| FetchError::BadResponse(format!("not JSON: {e}")))
    }

    /// GETs a URL, reading at most `limit` bytes of body. Non-2xx answers are errors that keep
    /// the (bounded) body so callers can tell `M_UNRECOGNIZED` from `M_NOT_FOUND`.
    pub async fn get_bytes(
        &self,
        client: &awc::Client,
        url: &str,
        headers: &[(&str, String)],
        limit: usize,
    ) -> Result<(awc::http::StatusCode, awc::http::header::HeaderMap, Bytes), FetchError> {
        let mut response = self.send_get(client, url, headers).await?;
        let status = response.status();
        let headers = response.headers().clone();
        let body = response.body().limit(limit).await.map_err(|e| match e {
            awc::error::PayloadError::Overflow => FetchError::TooLarge,
            other => FetchError::Request(other.to_string()),
        })?;
        if !status.is_success() {
            return Err(FetchError::Status {
                status: status.as_u16(),
                body,
            });
        }
        Ok((status, headers, body))
    }

    /// GETs a URL and returns the response with its body unread, whatever the status, so
    /// large bodies can be streamed. Only `https` URLs are fetched.
    pub async fn send_get(
        &self,
        client: &awc::Client,
        url: &str,
        headers: &[(&str, String)],
    ) -> Result<ClientResponse, FetchError> {
        let uri: awc::http::Uri = url
            .parse()
            .map_err(|_| FetchError::BadResponse(format!("bad URL {url}")))?;
        if uri.scheme_str() != Some("https") {
            return Err(FetchError::BadResponse(format!("not an https URL: {url}")));
        }
        // The connector skips its resolver for IP literals, so they are checked here.
        if let Some(ip) = uri.host().and_then(crate::net::literal_ip)
            && self.denies(ip)
        {
            return Err(FetchError::Denied);
        }
        let mut request = client.get(uri);
        for (name, value) in headers {
            request = request.insert_header((*name, value.as_str()));
        }
        request.send().await.map_err(send_error)
    }

    pub fn request_timeout(&self) -> Duration {
        self.inner.request_timeout
    }
}

/// An outgoing response whose body is still to be read.
pub type ClientResponse = awc::ClientResponse;

pub(crate) fn send_error(err: awc::error::SendRequestError) -> FetchError {
    use awc::error::{ConnectError as AwcConnect, SendRequestError};
    match err {
        SendRequestError::Timeout | SendRequestError::Connect(AwcConnect::Timeout) => {
            FetchError::Timeout
        }
        SendRequestError::Connect(AwcConnect::Resolver(e))
            if e.to_string().contains("not allowed") =>
        {
            FetchError::Denied
        }
        other => FetchError::Request(other.to_string()),
    }
}

/// The connector's guard: discovery's pinned addresses, else DNS, always filtered.
impl crate::net::Lookup for Federation {
    type Error = FetchError;

    fn lookup<'a>(
        &'a self,
        host: &'a str,
        port: u16,
    ) -> LocalBoxFuture<'a, Result<Vec<SocketAddr>, FetchError>> {
        Box::pin(Federation::lookup(self, host, port))
    }
}

#[cfg(test)]
mod tests;
