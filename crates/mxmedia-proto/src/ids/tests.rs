use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use super::{HostKind, MediaId, MxcUri, ServerName};
use crate::error::Error;

fn sn(s: &str) -> ServerName {
    s.parse().unwrap()
}

/// Every valid example of [spec: server names](https://spec.matrix.org/v1.16/appendices/#server-name) parses and keeps its exact text, host and port.
#[test]
fn spec_valid_server_names() {
    let cases: [(&str, &str, Option<u16>); 6] = [
        ("matrix.org", "matrix.org", None),
        ("matrix.org:8888", "matrix.org", Some(8888)),
        ("1.2.3.4", "1.2.3.4", None),
        ("1.2.3.4:1234", "1.2.3.4", Some(1234)),
        ("[1234:5678::abcd]", "[1234:5678::abcd]", None),
        ("[1234:5678::abcd]:5678", "[1234:5678::abcd]", Some(5678)),
    ];
    for (text, host, port) in cases {
        let name = sn(text);
        assert_eq!(name.as_str(), text);
        assert_eq!(name.to_string(), text);
        assert_eq!(name.host(), host, "{text}");
        assert_eq!(name.port(), port, "{text}");
    }
}

/// Every invalid test case of [spec: server names](https://spec.matrix.org/v1.16/appendices/#server-name) is refused, plus ports outside u16 and junk after `]`.
#[test]
fn spec_invalid_server_names() {
    for bad in [
        "matrix.org:",
        "matrix.org:123456",
        "[1234::abcd",
        "exa mple.org",
        "example.org/path",
        "",
        "a_b.org",
        "matrix.org:65536",
        "matrix.org:99999",
        "matrix.org:8a",
        "matrix.org:80:80",
        "[1234::abcd]x",
        "[1234::abcd]:",
        "[]",
        "[:]",
        "[::1%eth0]",
        "[1.2.3.4]",
        "[gggg::1]",
        "1234::abcd",
        ":8448",
        "ex\u{e4}mple.org",
    ] {
        assert!(
            matches!(bad.parse::<ServerName>(), Err(Error::InvalidServerName(_))),
            "{bad:?} should be invalid"
        );
    }
    let long = "a".repeat(256);
    assert!(long.parse::<ServerName>().is_err());
    assert!("a".repeat(255).parse::<ServerName>().is_ok());
}

/// IP literals are classified as IPs; out-of-range "IPv4" is a DNS name ([spec: server names](https://spec.matrix.org/v1.16/appendices/#server-name) note).
#[test]
fn host_kind() {
    assert_eq!(
        sn("1.2.3.4:1234").host_kind(),
        HostKind::Ip(IpAddr::V4(Ipv4Addr::new(1, 2, 3, 4)))
    );
    assert_eq!(
        sn("010.0.0.255").host_kind(),
        HostKind::Ip(IpAddr::V4(Ipv4Addr::new(10, 0, 0, 255)))
    );
    let v6: Ipv6Addr = "1234:5678::abcd".parse().unwrap();
    assert_eq!(
        sn("[1234:5678::abcd]:5678").host_kind(),
        HostKind::Ip(IpAddr::V6(v6))
    );
    for dns in [
        "999.1.1.1",
        "1.2.3",
        "1.2.3.4.5",
        "1234",
        "Matrix.ORG",
        "a..b",
        "example.org.",
    ] {
        assert_eq!(sn(dns).host_kind(), HostKind::Dns(dns.to_owned()), "{dns}");
    }
}

/// Server names are case-sensitive and compared as exact text.
#[test]
fn server_name_equality_is_textual() {
    assert_ne!(sn("MATRIX.ORG"), sn("matrix.org"));
    assert_ne!(sn("example.org:08448"), sn("example.org:8448"));
    assert_eq!(sn("example.org:08448").port(), Some(8448));
    assert_eq!(sn("example.org"), "example.org");
}

/// Serde goes through the validated string form in both directions.
#[test]
fn server_name_serde() {
    let name: ServerName = serde_json::from_str("\"matrix.org:8448\"").unwrap();
    assert_eq!(name.port(), Some(8448));
    assert_eq!(serde_json::to_string(&name).unwrap(), "\"matrix.org:8448\"");
    assert!(serde_json::from_str::<ServerName>("\"a_b.org\"").is_err());
    assert!(serde_json::from_str::<ServerName>("12").is_err());
}

/// Media IDs follow `^[A-Za-z0-9_-]{1,255}$`, which stops path traversal ([spec: mxc URIs](https://spec.matrix.org/v1.16/client-server-api/#matrix-content-mxc-uris)).
#[test]
fn media_id_validation() {
    for good in ["a", "abc123", "A-Z_a-z-0-9", &"x".repeat(255)] {
        assert_eq!(good.parse::<MediaId>().unwrap().as_str(), good);
    }
    for bad in [
        "",
        "..",
        "../etc",
        "a/b",
        "a%2Fb",
        "a b",
        "abc=",
        "日本",
        &"x".repeat(256),
    ] {
        assert!(
            matches!(bad.parse::<MediaId>(), Err(Error::InvalidMediaId(_))),
            "{bad:?} should be invalid"
        );
    }
}

/// Generated IDs are long, alphanumeric, valid, and differ from each other.
#[test]
fn media_id_generate() {
    let a = MediaId::generate();
    let b = MediaId::generate();
    assert_ne!(a, b);
    assert!(a.as_str().len() >= 24);
    assert!(a.as_str().bytes().all(|c| c.is_ascii_alphanumeric()));
    assert_eq!(a.as_str().parse::<MediaId>().unwrap(), a);
}

/// `mxc://` URIs split into a validated server name and media ID and print back identically.
#[test]
fn mxc_uri() {
    let mxc: MxcUri = "mxc://matrix.org:8448/abc_DEF-1".parse().unwrap();
    assert_eq!(mxc.server_name().as_str(), "matrix.org:8448");
    assert_eq!(mxc.media_id().as_str(), "abc_DEF-1");
    assert_eq!(mxc.to_string(), "mxc://matrix.org:8448/abc_DEF-1");
    for bad in [
        "mxc://127.0.0.1/../../etc",
        "mxc://matrix.org/",
        "mxc://matrix.org",
        "mxc:///abc",
        "https://matrix.org/abc",
        "mxc://matrix.org/abc/def",
        "mxc://a_b/abc",
    ] {
        assert!(bad.parse::<MxcUri>().is_err(), "{bad:?} should be invalid");
    }
}

/// The built-in `localhost` is the same name, in every view, as `localhost` parsed.
#[test]
fn localhost_is_parsed_localhost() {
    let built = ServerName::localhost();
    let parsed = sn("localhost");
    assert_eq!(built, parsed);
    assert_eq!(built.host(), parsed.host());
    assert_eq!(built.port(), parsed.port());
    assert_eq!(built.host_kind(), parsed.host_kind());
}
