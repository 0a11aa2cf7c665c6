//! Media identifiers: the `{serverName}/{mediaId}` pair of an `mxc://` URI, validated once at the
//! edge so that nothing unchecked ever reaches storage or an outgoing URL.

use std::fmt;

use rand::RngExt as _;

use crate::error::Error;

/// Longest media id we accept. The spec sets no limit; ids we mint are 24 characters.
const MAX_MEDIA_ID_LEN: usize = 255;
/// Recommended maximum length of a server name (spec appendix).
const MAX_SERVER_NAME_LEN: usize = 255;
const GENERATED_ID_LEN: usize = 24;

/// A validated media id: `[A-Za-z0-9_-]{1,255}`.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct MediaId(String);

impl MediaId {
    pub fn parse(raw: &str) -> Result<Self, Error> {
        let ok = !raw.is_empty()
            && raw.len() <= MAX_MEDIA_ID_LEN
            && raw
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-');
        // An id outside the grammar cannot exist here, so it is "not found" rather than "bad".
        ok.then(|| Self(raw.to_owned())).ok_or(Error::NotFound)
    }

    pub fn generate() -> Self {
        const ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789";
        let mut rng = rand::rng();
        let id = (0..GENERATED_ID_LEN)
            .map(|_| {
                let i = rng.random_range(0..ALPHABET.len());
                char::from(ALPHABET.get(i).copied().unwrap_or(b'A'))
            })
            .collect();
        Self(id)
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// A server name as the spec's grammar defines it: `hostname [":" port]`, case-sensitive.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct ServerName(String);

impl ServerName {
    pub fn parse(raw: &str) -> Result<Self, Error> {
        if is_valid_server_name(raw) {
            Ok(Self(raw.to_owned()))
        } else {
            Err(Error::InvalidParam("Invalid server name".into()))
        }
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The host part: an IP address (brackets removed) or a DNS name.
    pub fn host(&self) -> Host {
        let (host, _) = split_port(&self.0);
        match host
            .trim_start_matches('[')
            .trim_end_matches(']')
            .parse::<std::net::IpAddr>()
        {
            Ok(ip) if host.starts_with('[') || ip.is_ipv4() => Host::Ip(ip),
            _ => Host::Dns(host.to_owned()),
        }
    }

    pub fn port(&self) -> Option<u16> {
        split_port(&self.0).1.and_then(|p| p.parse().ok())
    }
}

/// The host of a server name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Host {
    Ip(std::net::IpAddr),
    Dns(String),
}

fn split_port(raw: &str) -> (&str, Option<&str>) {
    if raw.starts_with('[') {
        match raw.rsplit_once("]:") {
            Some((host, port)) => (&raw[..host.len() + 1], Some(port)),
            None => (raw, None),
        }
    } else {
        match raw.rsplit_once(':') {
            Some((host, port)) => (host, Some(port)),
            None => (raw, None),
        }
    }
}

pub fn is_valid_server_name(raw: &str) -> bool {
    if raw.is_empty() || raw.len() > MAX_SERVER_NAME_LEN {
        return false;
    }
    let (host, port) = if let Some(rest) = raw.strip_prefix('[') {
        let Some((v6, after)) = rest.split_once(']') else {
            return false;
        };
        if v6.parse::<std::net::Ipv6Addr>().is_err() {
            return false;
        }
        match after {
            "" => return true,
            p => match p.strip_prefix(':') {
                Some(port) => ("v6", Some(port)),
                None => return false,
            },
        }
    } else {
        match raw.rsplit_once(':') {
            Some((host, port)) => (host, Some(port)),
            None => (raw, None),
        }
    };
    if let Some(port) = port
        && (port.is_empty() || port.len() > 5 || !port.bytes().all(|b| b.is_ascii_digit()))
    {
        return false;
    }
    host == "v6"
        || (!host.is_empty()
            && host.split('.').all(|label| {
                !label.is_empty()
                    && label
                        .bytes()
                        .all(|b| b.is_ascii_alphanumeric() || b == b'-')
            }))
}

/// Identifies one piece of media: where it comes from and its id there.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct MediaKey {
    pub server_name: ServerName,
    pub media_id: MediaId,
}

impl MediaKey {
    /// The sled key: `server_name` and `media_id` joined by `/`, which neither may contain.
    pub fn db_key(&self) -> Vec<u8> {
        format!("{}/{}", self.server_name.0, self.media_id.0).into_bytes()
    }
}

impl fmt::Display for MediaKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "mxc://{}/{}", self.server_name.0, self.media_id.0)
    }
}

#[cfg(test)]
mod tests {
    use super::{MediaId, is_valid_server_name};

    /// The spec's valid and invalid server-name examples.
    #[test]
    fn server_name_grammar() {
        for ok in [
            "matrix.org",
            "matrix.org:8888",
            "1.2.3.4",
            "1.2.3.4:1234",
            "[1234:5678::abcd]",
            "[1234:5678::abcd]:5678",
            "localhost",
        ] {
            assert!(is_valid_server_name(ok), "{ok}");
        }
        for bad in [
            "matrix.org:",
            "matrix.org:123456",
            "[1234::abcd",
            "exa mple.org",
            "example.org/path",
            "",
            "a_b.org",
            "..",
            "a..b",
            "[zz::1]",
            "x%2F",
        ] {
            assert!(!is_valid_server_name(bad), "{bad}");
        }
    }

    #[test]
    fn server_name_parts() {
        use super::{Host, ServerName};
        let parse = |s| ServerName::parse(s).unwrap();
        assert_eq!(parse("example.org").host(), Host::Dns("example.org".into()));
        assert_eq!(parse("example.org").port(), None);
        assert_eq!(parse("example.org:8448").port(), Some(8448));
        assert_eq!(
            parse("1.2.3.4:99").host(),
            Host::Ip("1.2.3.4".parse().unwrap())
        );
        assert_eq!(parse("[::1]:8448").host(), Host::Ip("::1".parse().unwrap()));
        assert_eq!(parse("[::1]:8448").port(), Some(8448));
        assert_eq!(parse("[::1]").port(), None);
        assert_eq!(parse("999.1.1.1").host(), Host::Dns("999.1.1.1".into()));
    }

    /// Ids outside the charset, including traversal attempts, are refused.
    #[test]
    fn media_id_grammar() {
        assert!(MediaId::parse("abcDEF123_-").is_ok());
        for bad in ["", "..", "a/b", "a.b", "%2E%2E", "ü", &"a".repeat(256)] {
            assert!(MediaId::parse(bad).is_err(), "{bad}");
        }
        let id = MediaId::generate();
        assert_eq!(id.as_str().len(), 24);
        assert!(MediaId::parse(id.as_str()).is_ok());
    }
}
