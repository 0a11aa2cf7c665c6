//! Outgoing HTTP clients that can only reach addresses a guard approved (SSRF protection),
//! shared by federation and URL previews, and the one judgement of an address both use
//! (`IpPolicy`): an IPv6 address that carries an IPv4 address is judged as that IPv4 address
//! too, whichever of the standard embeddings carries it.
//!
//! The guard resolves the host itself and the connector connects to exactly the addresses it
//! returned, so there is no window between the check and the connection for DNS rebinding.
//! What the guard allows (pinned discovery results, allowlists, "any denied address refuses the
//! name") is the caller's policy; this module owns only the plumbing. awc's connector skips its
//! resolver for IP literals, so callers must check those themselves before sending
//! (`literal_ip` helps).

pub mod tls;

use std::{
    net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr},
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
use ipnet::IpNet;

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

/// Which addresses outgoing requests may reach: those in no `deny` range, or in an `allow`
/// range. Every form of an address is judged, the IPv6 address itself and each IPv4 address
/// it embeds (`embedded_ipv4`), and all must pass, so `::127.0.0.1`, `::ffff:127.0.0.1`,
/// `64:ff9b::7f00:1` or a Teredo address whose client is 127.0.0.1 are loopback however the
/// IPv6 ranges are configured.
#[derive(Debug, Clone, Default)]
pub struct IpPolicy {
    deny: Vec<IpNet>,
    allow: Vec<IpNet>,
}

impl IpPolicy {
    pub fn new(deny: Vec<IpNet>, allow: Vec<IpNet>) -> Self {
        Self { deny, allow }
    }

    /// Whether `ip` may be contacted.
    pub fn allows(&self, ip: IpAddr) -> bool {
        let listed = |ranges: &[IpNet], form: IpAddr| ranges.iter().any(|net| net.contains(&form));
        let passes = |form: IpAddr| listed(&self.allow, form) || !listed(&self.deny, form);
        match ip {
            IpAddr::V4(_) => passes(ip),
            IpAddr::V6(v6) => {
                passes(ip)
                    && embedded_ipv4(v6)
                        .into_iter()
                        .flatten()
                        .all(|v4| passes(v4.into()))
            }
        }
    }

    /// Whether `ip` may not be contacted.
    pub fn denies(&self, ip: IpAddr) -> bool {
        !self.allows(ip)
    }
}

/// The IPv4 addresses an IPv6 address carries, by every standard embedding: IPv4-mapped
/// (`::ffff:0:0/96`, RFC 4291), IPv4-translated (`::ffff:0:0:0/96`, RFC 2765),
/// IPv4-compatible (`::/96` but `::` and `::1`, RFC 4291), NAT64 (`64:ff9b::/96`, RFC 6052, and
/// the local-use `64:ff9b:1::/48`, RFC 8215, read both as a /96 and as a /48 prefix), 6to4
/// (`2002::/16`, RFC 3056) and Teredo (`2001::/32`, RFC 4380: the client is the inverted last
/// 32 bits). An OS or a gateway may deliver packets for any of them to that IPv4 address.
pub fn embedded_ipv4(ip: Ipv6Addr) -> [Option<Ipv4Addr>; 2] {
    let s = ip.segments();
    let o = ip.octets();
    let last32 = Ipv4Addr::new(o[12], o[13], o[14], o[15]);
    match s {
        [0, 0, 0, 0, 0, 0xffff, _, _] | [0, 0, 0, 0, 0xffff, 0, _, _] => [Some(last32), None],
        [0, 0, 0, 0, 0, 0, hi, lo] if (hi, lo) != (0, 0) && (hi, lo) != (0, 1) => {
            [Some(last32), None]
        }
        [0x64, 0xff9b, 0, 0, 0, 0, _, _] => [Some(last32), None],
        [0x64, 0xff9b, 1, ..] => {
            // RFC 6052 §2.2 for a /48 prefix: 16 bits of IPv4 before the reserved octet u
            // (bits 64..72), 16 after it.
            let as_48 = Ipv4Addr::new(o[6], o[7], o[9], o[10]);
            [Some(last32), Some(as_48)]
        }
        [0x2002, ..] => [Some(Ipv4Addr::new(o[2], o[3], o[4], o[5])), None],
        [0x2001, 0, ..] => [Some(Ipv4Addr::from(!u32::from(last32))), None],
        _ => [None, None],
    }
}

/// The connector's resolver: whatever the guard allows, nothing else.
struct GuardedResolver<G>(G);

impl<G: Lookup> Resolve for GuardedResolver<G> {
    fn lookup<'a>(
        &'a self,
        host: &'a str,
        port: u16,
    ) -> LocalBoxFuture<'a, Result<Vec<SocketAddr>, Box<dyn std::error::Error>>> {
        Box::pin(async move { self.0.lookup(host, port).await.map_err(Into::into) })
    }
}

#[cfg(test)]
mod tests;
