//! The address ranges outgoing requests must never reach (SSRF protection).
//!
//! Checked on the addresses actually connected to, after DNS resolution, so a name that
//! resolves to an internal address is refused whatever it is called.

use std::net::IpAddr;

use ipnet::IpNet;

#[derive(Debug, Clone, Default)]
pub struct IpDenylist {
    ranges: Vec<IpNet>,
}

impl IpDenylist {
    pub fn new(ranges: Vec<IpNet>) -> Self {
        Self { ranges }
    }

    /// Whether `ip` may not be contacted. IPv4-mapped and IPv4-compatible IPv6 addresses are
    /// judged as the IPv4 address they carry, so `::ffff:127.0.0.1` is loopback too.
    pub fn denies(&self, ip: IpAddr) -> bool {
        let canonical = match ip {
            IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
            IpAddr::V4(_) => ip,
        };
        self.ranges
            .iter()
            .any(|net| net.contains(&canonical) || net.contains(&ip))
    }
}

#[cfg(test)]
mod tests {
    use super::IpDenylist;
    use crate::config::Config;

    /// The default list refuses every internal address form and allows public ones.
    #[test]
    fn default_denylist() {
        let list = IpDenylist::new(Config::default().federation.ip_range_denylist);
        for denied in [
            "127.0.0.1",
            "127.1.2.3",
            "10.1.1.1",
            "172.16.0.1",
            "192.168.1.1",
            "169.254.169.254",
            "100.64.0.1",
            "0.0.0.0",
            "224.0.0.1",
            "::1",
            "::",
            "fe80::1",
            "fd00::1",
            "::ffff:127.0.0.1",
            "::ffff:10.0.0.1",
            "ff02::1",
        ] {
            assert!(list.denies(denied.parse().unwrap()), "{denied}");
        }
        for allowed in [
            "1.1.1.1",
            "93.184.216.34",
            "2606:4700::1111",
            "::ffff:1.1.1.1",
        ] {
            assert!(!list.denies(allowed.parse().unwrap()), "{allowed}");
        }
    }
}
