//! Outgoing HTTP clients that can only reach addresses a guard approved (SSRF protection),
//! shared by federation and URL previews.
//!
//! The guard resolves the host itself and the connector connects to exactly the addresses it
//! returned, so there is no window between the check and the connection for DNS rebinding.
//! What the guard allows (pinned discovery results, allowlists, "any denied address refuses the
//! name") is the caller's policy; this module owns only the plumbing. awc's connector skips its
//! resolver for IP literals, so callers must check those themselves before sending
//! (`literal_ip` helps).

use std::{
    net::{IpAddr, SocketAddr},
    sync::Arc,
    time::Duration,
};

use actix_tls::connect::{Resolve, Resolver};
use futures_util::future::LocalBoxFuture;
use hickory_resolver::{
    TokioResolver,
    config::{NameServerConfig, ResolverConfig},
    net::runtime::TokioRuntimeProvider,
};

pub use crate::federation::denylist::IpDenylist;

/// Decides which addresses a host name may be contacted at.
pub trait Lookup: 'static {
    type Error: std::error::Error + 'static;

    /// The addresses to connect to for `host:port`; an error refuses the connection.
    fn lookup<'a>(
        &'a self,
        host: &'a str,
        port: u16,
    ) -> LocalBoxFuture<'a, Result<Vec<SocketAddr>, Self::Error>>;
}

/// Timeouts and identity of a guarded client.
pub struct ClientOptions {
    pub tls: Arc<rustls::ClientConfig>,
    pub connect_timeout: Duration,
    pub request_timeout: Duration,
}

/// An awc client whose every connection goes through `guard` (awc clients are tied to the
/// thread that made them: build one per worker).
pub fn guarded_client(guard: impl Lookup, options: &ClientOptions) -> awc::Client {
    let tcp =
        actix_tls::connect::Connector::new(Resolver::custom(GuardedResolver(guard))).service();
    let connector = awc::Connector::new()
        .connector(tcp)
        .rustls_0_23(options.tls.clone())
        .timeout(options.connect_timeout)
        .handshake_timeout(options.connect_timeout);
    awc::Client::builder()
        .connector(connector)
        .timeout(options.request_timeout)
        .disable_redirects()
        .add_default_header(("user-agent", concat!("mxmedia/", env!("CARGO_PKG_VERSION"))))
        .finish()
}

/// A DNS resolver asking `nameservers` (`ip:port`), or the system's configuration when empty.
pub fn dns_resolver(nameservers: &[SocketAddr]) -> anyhow::Result<TokioResolver> {
    if nameservers.is_empty() {
        return Ok(TokioResolver::builder_tokio()?.build()?);
    }
    let servers = nameservers
        .iter()
        .map(|addr| {
            let mut ns = NameServerConfig::udp(addr.ip());
            for connection in &mut ns.connections {
                connection.port = addr.port();
            }
            ns
        })
        .collect();
    Ok(TokioResolver::builder_with_config(
        ResolverConfig::from_name_servers(servers),
        TokioRuntimeProvider::default(),
    )
    .build()?)
}

/// The address a host names literally (`127.0.0.1`, `[::1]`), if it is one.
pub fn literal_ip(host: &str) -> Option<IpAddr> {
    host.trim_start_matches('[')
        .trim_end_matches(']')
        .parse::<IpAddr>()
        .ok()
}

/// The connector's resolver: whatever the guard allows, nothing else.
struct GuardedResolver<G>(G);

impl<G: Lookup> Resolve for GuardedResolver<G> {
    fn lookup<'a>(
        &'a self,
        host: &'a str,
        port: u16,
    ) -> LocalBoxFuture<'a, Result<Vec<SocketAddr>, Box<dyn std::error::Error>>> {
        Box::pin(async move {
            self.0
                .lookup(host, port)
                .await
                .map_err(|e| Box::new(e) as Box<dyn std::error::Error>)
        })
    }
}
