//! What a preview may fetch: the URL checks (scheme, credentials, URL denylist, IP literals)
//! and the address policy the connector enforces after DNS resolution.
//!
//! URLs are parsed by the `url` crate (WHATWG rules), which turns `http://2130706433/`,
//! `http://0x7f000001/` and `http://127.1/` into the IP literal `127.0.0.1` before anything
//! looks at the host, so every spelling of an address meets the same check. Names are resolved
//! here, and one denied address refuses the whole name: a name that points partly inside is
//! not trusted for the rest (Synapse does the same).

use std::net::{IpAddr, SocketAddr};

use futures_util::future::LocalBoxFuture;
use hickory_resolver::TokioResolver;
use url::{Host, Url};

use crate::{
    config::{PreviewConfig, UrlPattern},
    net::IpPolicy,
};

/// Why a URL or an address was refused. The text never names the host.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum Refused {
    #[error("destination is not allowed")]
    Denied,
    #[error("name did not resolve")]
    Dns,
}

/// The policy for every URL and address a preview touches. `Send`: shared by all workers.
pub struct Guard {
    /// The denylist and the allowlist, judged as federation judges addresses.
    addresses: IpPolicy,
    patterns: Vec<UrlPattern>,
    dns: TokioResolver,
}

impl Guard {
    pub fn new(config: &PreviewConfig) -> anyhow::Result<Self> {
        Ok(Self {
            addresses: IpPolicy::new(
                config.ip_range_denylist.clone(),
                config.ip_range_allowlist.clone(),
            ),
            patterns: config.url_denylist.clone(),
            dns: crate::net::dns_resolver(&config.nameservers)?,
        })
    }

    pub fn allows_ip(&self, ip: IpAddr) -> bool {
        self.addresses.allows(ip)
    }

    /// Checks everything about `url` that needs no DNS: run before every request, since the
    /// connector never sees IP literals.
    pub fn check_url(&self, url: &Url) -> Result<(), Refused> {
        if !matches!(url.scheme(), "http" | "https")
            || !url.username().is_empty()
            || url.password().is_some()
            || self.patterns.iter().any(|p| p.matches(url))
        {
            return Err(Refused::Denied);
        }
        let literal = match url.host() {
            None => return Err(Refused::Denied),
            Some(Host::Ipv4(ip)) => Some(IpAddr::V4(ip)),
            Some(Host::Ipv6(ip)) => Some(IpAddr::V6(ip)),
            Some(Host::Domain(_)) => None,
        };
        match literal {
            Some(ip) if !self.allows_ip(ip) => Err(Refused::Denied),
            _ => Ok(()),
        }
    }

    /// The addresses `host` may be reached at: all it resolves to, or none if any is denied.
    pub async fn resolve(&self, host: &str, port: u16) -> Result<Vec<SocketAddr>, Refused> {
        if let Some(ip) = crate::net::literal_ip(host) {
            return if self.allows_ip(ip) {
                Ok(vec![SocketAddr::new(ip, port)])
            } else {
                Err(Refused::Denied)
            };
        }
        let lookup = self.dns.lookup_ip(host).await.map_err(|_| Refused::Dns)?;
        let addrs: Vec<IpAddr> = lookup.iter().collect();
        if addrs.is_empty() {
            return Err(Refused::Dns);
        }
        if addrs.iter().any(|ip| !self.allows_ip(*ip)) {
            return Err(Refused::Denied);
        }
        Ok(addrs
            .into_iter()
            .map(|ip| SocketAddr::new(ip, port))
            .collect())
    }
}

/// The connector's view of the guard.
pub struct Lookup(pub std::sync::Arc<Guard>);

impl crate::net::Lookup for Lookup {
    type Error = Refused;

    fn lookup<'a>(
        &'a self,
        host: &'a str,
        port: u16,
    ) -> LocalBoxFuture<'a, Result<Vec<SocketAddr>, Refused>> {
        Box::pin(self.0.resolve(host, port))
    }
}
