use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use super::{IpPolicy, embedded_ipv4};
use crate::config::Config;

fn default_policy(allow: &[&str]) -> IpPolicy {
    IpPolicy::new(
        Config::default().federation.ip_range_denylist,
        allow.iter().map(|n| n.parse().unwrap()).collect(),
    )
}

/// The default list refuses every internal address form and allows public ones.
#[test]
fn default_denylist() {
    let list = default_policy(&[]);
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
        assert!(list.allows(allowed.parse().unwrap()), "{allowed}");
    }
}

/// Loopback carried in any IPv6 embedding is loopback: refused by the default list, and still
/// refused when an operator allow-lists the IPv6 range that carries it (a NAT64 or 6to4
/// network), because the IPv4 address inside is judged as well.
#[test]
fn embedded_ipv4_is_judged_as_ipv4() {
    let loopback_forms = [
        "::127.0.0.1",
        "::7f00:1",
        "::ffff:7f00:1",
        "::ffff:0:7f00:1",
        "64:ff9b::7f00:1",
        "64:ff9b:1::7f00:1",
        "64:ff9b:1:7f00:0:100::",
        "2002:7f00:1::",
        "2002:7f00:1:1234::5",
        // Teredo: server 65.54.227.120, client 127.0.0.1 inverted (0x80ffffffe).
        "2001:0:4136:e378:8000:63bf:80ff:fffe",
    ];
    let allow_v6 = [
        "::/96",
        "::ffff:0:0/96",
        "::ffff:0:0:0/96",
        "64:ff9b::/96",
        "64:ff9b:1::/48",
        "2002::/16",
        "2001::/32",
    ];
    for policy in [default_policy(&[]), default_policy(&allow_v6)] {
        for form in loopback_forms {
            let ip: IpAddr = form.parse().unwrap();
            assert!(policy.denies(ip), "{form}");
        }
    }
    // Allow-listing the carrying range does let public IPv4 addresses through it.
    let nat64 = default_policy(&allow_v6);
    for public in ["64:ff9b::808:808", "2002:808:808::", "::ffff:808:808"] {
        assert!(nat64.allows(public.parse().unwrap()), "{public}");
    }
    // And an allow-listed IPv4 address is allowed in its mapped form too.
    let local = default_policy(&["127.0.0.1/32"]);
    assert!(local.allows("::ffff:127.0.0.1".parse().unwrap()));
}

/// Each embedding yields the IPv4 address its RFC puts there; other addresses yield none,
/// and `::`/`::1` are not IPv4-compatible addresses.
#[test]
fn embeddings_are_decoded() {
    let one = |v6: &str| {
        let v6: Ipv6Addr = v6.parse().unwrap();
        embedded_ipv4(v6)
    };
    let v4 = |s: &str| Some(s.parse::<Ipv4Addr>().unwrap());
    assert_eq!(one("::ffff:192.0.2.33"), [v4("192.0.2.33"), None]);
    assert_eq!(one("::192.0.2.33"), [v4("192.0.2.33"), None]);
    assert_eq!(one("64:ff9b::192.0.2.33"), [v4("192.0.2.33"), None]);
    assert_eq!(
        one("64:ff9b:1:c000:2:2100::"),
        [v4("0.0.0.0"), v4("192.0.2.33")]
    );
    assert_eq!(one("2002:c000:221::1"), [v4("192.0.2.33"), None]);
    assert_eq!(
        one("2001:0:4136:e378:8000:63bf:3fff:fdd2"),
        [v4("192.0.2.45"), None]
    );
    for none in ["::", "::1", "2606:4700::1111", "fe80::1"] {
        assert_eq!(one(none), [None, None], "{none}");
    }
}
