use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::time::Duration;

use super::{
    Endpoint, SrvLookup, Step, WELL_KNOWN_DEFAULT_TTL, WELL_KNOWN_MAX_TTL, after_well_known,
    first_step, parse_well_known, well_known_cache_ttl,
};
use crate::ids::{HostKind, ServerName};

fn sn(s: &str) -> ServerName {
    s.parse().unwrap()
}

fn connect(step: Step) -> Endpoint {
    match step {
        Step::Connect(endpoint) => endpoint,
        other => panic!("expected Connect, got {other:?}"),
    }
}

/// Step 1: IP literals connect directly, default port 8448, no SNI, Host = the name as written.
#[test]
fn ip_literals() {
    let e = connect(first_step(&sn("1.2.3.4")));
    assert_eq!(e.host, HostKind::Ip(IpAddr::V4(Ipv4Addr::new(1, 2, 3, 4))));
    assert_eq!(
        (e.port, e.host_header.as_str(), e.sni()),
        (8448, "1.2.3.4", None)
    );
    let e = connect(first_step(&sn("[1234:5678::abcd]:5678")));
    let v6: Ipv6Addr = "1234:5678::abcd".parse().unwrap();
    assert_eq!(e.host, HostKind::Ip(IpAddr::V6(v6)));
    assert_eq!(e.port, 5678);
    assert_eq!(e.host_header, "[1234:5678::abcd]:5678");
    assert_eq!(e.tls_name, "1234:5678::abcd");
    assert_eq!(e.sni(), None);
}

/// Step 2: a DNS name with a port connects there; Host keeps the port, the cert is the host.
#[test]
fn dns_with_port() {
    let e = connect(first_step(&sn("matrix.org:8888")));
    assert_eq!(e.host, HostKind::Dns("matrix.org".to_owned()));
    assert_eq!((e.port, e.host_header.as_str()), (8888, "matrix.org:8888"));
    assert_eq!(e.sni(), Some("matrix.org"));
}

/// Step 3: a bare DNS name asks .well-known first.
#[test]
fn dns_without_port() {
    assert_eq!(
        first_step(&sn("example.org")),
        Step::FetchWellKnown {
            hostname: "example.org".to_owned()
        }
    );
}

/// Steps 3.1-3.5 follow the delegated name; 4-6 fall back to SRV on the original host.
#[test]
fn after_delegation() {
    let e = connect(after_well_known("example.org", Some(&sn("10.0.0.1"))));
    assert_eq!(
        (e.port, e.host_header.as_str(), e.sni()),
        (8448, "10.0.0.1", None)
    );

    let e = connect(after_well_known(
        "example.org",
        Some(&sn("fed.example.com:1234")),
    ));
    assert_eq!(e.host, HostKind::Dns("fed.example.com".to_owned()));
    assert_eq!(
        (e.port, e.host_header.as_str()),
        (1234, "fed.example.com:1234")
    );
    assert_eq!(e.tls_name, "fed.example.com");

    let srv = SrvLookup {
        name: "fed.example.com".to_owned(),
    };
    assert_eq!(
        after_well_known("example.org", Some(&sn("fed.example.com"))),
        Step::LookupSrv(srv.clone())
    );
    assert_eq!(
        srv.srv_names(),
        [
            "_matrix-fed._tcp.fed.example.com".to_owned(),
            "_matrix._tcp.fed.example.com".to_owned()
        ]
    );
    let e = srv.with_target("host1.example.net.", 443);
    assert_eq!(e.host, HostKind::Dns("host1.example.net.".to_owned()));
    assert_eq!((e.port, e.host_header.as_str()), (443, "fed.example.com"));
    assert_eq!(e.sni(), Some("fed.example.com"));
    let e = srv.fallback();
    assert_eq!((e.port, e.host_header.as_str()), (8448, "fed.example.com"));

    assert_eq!(
        after_well_known("example.org", None),
        Step::LookupSrv(SrvLookup {
            name: "example.org".to_owned()
        })
    );
}

/// `.well-known` bodies are JSON whatever their type; anything invalid yields None.
#[test]
fn well_known_bodies() {
    assert_eq!(
        parse_well_known(br#"{"m.server": "delegated.example.com:1234"}"#),
        Some(sn("delegated.example.com:1234"))
    );
    assert_eq!(
        parse_well_known(br#"{"m.server": "[::1]", "x": 1}"#),
        Some(sn("[::1]"))
    );
    for bad in [
        &b""[..],
        b"<html>",
        b"[]",
        b"{}",
        br#"{"m.server": 5}"#,
        br#"{"m.server": "a_b"}"#,
        br#"{"m.server": ""}"#,
        b"\xff",
    ] {
        assert_eq!(parse_well_known(bad), None);
    }
}

/// Cache-Control is honoured within the spec's cap.
#[test]
fn cache_ttl() {
    assert_eq!(well_known_cache_ttl(None), WELL_KNOWN_DEFAULT_TTL);
    assert_eq!(
        well_known_cache_ttl(Some("public, max-age=600")),
        Duration::from_secs(600)
    );
    assert_eq!(
        well_known_cache_ttl(Some("Max-Age=\"60\"")),
        Duration::from_secs(60)
    );
    assert_eq!(
        well_known_cache_ttl(Some("max-age=99999999")),
        WELL_KNOWN_MAX_TTL
    );
    assert_eq!(
        well_known_cache_ttl(Some("max-age=abc")),
        WELL_KNOWN_DEFAULT_TTL
    );
    assert_eq!(
        well_known_cache_ttl(Some("no-store, max-age=600")),
        Duration::ZERO
    );
}
