//! `ServerName`: a homeserver's name, `hostname [":" port]`, per the grammar of [spec: server names](https://spec.matrix.org/v1.16/appendices/#server-name).
//! It is an identifier first (compared as an exact, case-sensitive string) and an address second,
//! so the original text is kept and the host/port split is only a view for server discovery.

use std::cmp::Ordering;
use std::hash::{Hash, Hasher};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::str::FromStr;

use crate::error::{Error, Result};

/// What the host part of a server name is, for server discovery ([spec: resolving server names](https://spec.matrix.org/v1.16/server-server-api/#resolving-server-names)): IP literals are
/// connected to directly, DNS names go through `.well-known` and SRV.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum HostKind {
    /// An IPv4 literal or a bracketed IPv6 literal (brackets removed).
    Ip(IpAddr),
    /// A DNS name, as written (case preserved).
    Dns(String),
}

/// A server name valid per [spec: server names](https://spec.matrix.org/v1.16/appendices/#server-name). Equality, ordering and hashing use the exact text, since
/// server names are case-sensitive and `example.org:08448` is not `example.org:8448`.
#[derive(Debug, Clone)]
pub struct ServerName {
    text: String,
    /// Byte length of the host part, brackets included.
    host_len: usize,
    port: Option<u16>,
    ip: Option<IpAddr>,
}

impl ServerName {
    /// `localhost`, a name that needs no parsing (the default of configs and tests).
    pub fn localhost() -> Self {
        Self {
            text: "localhost".to_owned(),
            host_len: "localhost".len(),
            port: None,
            ip: None,
        }
    }

    /// The server name as text.
    pub fn as_str(&self) -> &str {
        &self.text
    }

    /// The host part as written: a DNS name, an IPv4 literal, or a bracketed IPv6 literal
    /// (`[1234:5678::abcd]`), which is the form the `Host` header needs.
    pub fn host(&self) -> &str {
        self.text.get(..self.host_len).unwrap_or(&self.text)
    }

    /// The explicit port, if the name has one.
    pub fn port(&self) -> Option<u16> {
        self.port
    }

    /// The host as an IP address or a DNS name.
    pub fn host_kind(&self) -> HostKind {
        match self.ip {
            Some(ip) => HostKind::Ip(ip),
            None => HostKind::Dns(self.host().to_owned()),
        }
    }

    /// The host as an IP address, when it is an IP literal.
    pub fn ip(&self) -> Option<IpAddr> {
        self.ip
    }
}

impl FromStr for ServerName {
    type Err = Error;

    fn from_str(s: &str) -> Result<Self> {
        if s.is_empty() {
            return Err(Error::InvalidServerName("empty"));
        }
        let (host_len, ip, port) = if let Some(rest) = s.strip_prefix('[') {
            let Some((inner, after)) = rest.split_once(']') else {
                return Err(Error::InvalidServerName("unclosed '['"));
            };
            let port = match after {
                "" => None,
                _ => match after.strip_prefix(':') {
                    Some(p) => Some(p),
                    None => return Err(Error::InvalidServerName("text after ']'")),
                },
            };
            (inner.len() + 2, Some(IpAddr::V6(parse_ipv6(inner)?)), port)
        } else {
            let (host, port) = match s.split_once(':') {
                Some((h, p)) => (h, Some(p)),
                None => (s, None),
            };
            check_dns_name(host)?;
            (host.len(), parse_ipv4(host).map(IpAddr::V4), port)
        };
        let port = port.map(parse_port).transpose()?;
        Ok(Self {
            text: s.to_owned(),
            host_len,
            port,
            ip,
        })
    }
}

/// `IPv6address = 2*45IPv6char`, and it must be a real RFC 3513 address.
fn parse_ipv6(inner: &str) -> Result<Ipv6Addr> {
    let ipv6_char = |b: u8| b.is_ascii_hexdigit() || b == b':' || b == b'.';
    if !(2..=45).contains(&inner.len()) || !inner.bytes().all(ipv6_char) {
        return Err(Error::InvalidServerName("bad IPv6 literal"));
    }
    inner
        .parse()
        .map_err(|_| Error::InvalidServerName("bad IPv6 literal"))
}

/// `dns-name = 1*255dns-char`, `dns-char = DIGIT / ALPHA / "-" / "."`. The ABNF is all the spec
/// asks, so empty labels (`a..b`) and a trailing dot pass; resolution will simply fail for them.
fn check_dns_name(host: &str) -> Result<()> {
    if host.is_empty() {
        return Err(Error::InvalidServerName("empty host"));
    }
    if host.len() > 255 {
        return Err(Error::InvalidServerName("host longer than 255 characters"));
    }
    let dns_char = |b: u8| b.is_ascii_alphanumeric() || b == b'-' || b == b'.';
    if !host.bytes().all(dns_char) {
        return Err(Error::InvalidServerName("character outside [A-Za-z0-9.-]"));
    }
    Ok(())
}

/// Four dot-separated groups of 1-3 digits, each 0-255. Anything else, `999.1.1.1` included, is a
/// DNS name, as [spec: server names](https://spec.matrix.org/v1.16/appendices/#server-name)'s note and Synapse have it. Leading zeros are read as decimal (the ABNF
/// allows them), never as octal.
fn parse_ipv4(host: &str) -> Option<Ipv4Addr> {
    let mut octets = [0u8; 4];
    let mut parts = host.split('.');
    for octet in &mut octets {
        let part = parts.next()?;
        if part.is_empty() || part.len() > 3 || !part.bytes().all(|b| b.is_ascii_digit()) {
            return None;
        }
        *octet = part.parse().ok()?;
    }
    match parts.next() {
        Some(_) => None,
        None => Some(Ipv4Addr::from(octets)),
    }
}

/// `port = 1*5DIGIT`; five digits can exceed 65535, which no socket accepts, so that is refused.
fn parse_port(p: &str) -> Result<u16> {
    if p.is_empty() || p.len() > 5 || !p.bytes().all(|b| b.is_ascii_digit()) {
        return Err(Error::InvalidServerName("port is not 1-5 digits"));
    }
    p.parse()
        .map_err(|_| Error::InvalidServerName("port above 65535"))
}

impl TryFrom<String> for ServerName {
    type Error = Error;

    fn try_from(s: String) -> Result<Self> {
        s.parse()
    }
}

impl PartialEq for ServerName {
    fn eq(&self, other: &Self) -> bool {
        self.text == other.text
    }
}

impl Eq for ServerName {}

impl PartialOrd for ServerName {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for ServerName {
    fn cmp(&self, other: &Self) -> Ordering {
        self.text.cmp(&other.text)
    }
}

impl Hash for ServerName {
    fn hash<H: Hasher>(&self, state: &mut H) {
        self.text.hash(state);
    }
}

impl std::borrow::Borrow<str> for ServerName {
    fn borrow(&self) -> &str {
        &self.text
    }
}

impl PartialEq<str> for ServerName {
    fn eq(&self, other: &str) -> bool {
        self.text == other
    }
}

impl PartialEq<&str> for ServerName {
    fn eq(&self, other: &&str) -> bool {
        self.text == *other
    }
}

super::string_newtype!(ServerName);
