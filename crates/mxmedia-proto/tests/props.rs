//! Property tests over the public API: the parsers that see attacker-controlled input (X-Matrix
//! headers, JSON, server names) never panic, and what we write, we read back identically.

// Strategy helpers live outside #[test] fns, where clippy's allow-unwrap-in-tests does not reach.
#![allow(clippy::unwrap_used)]

use std::net::{Ipv4Addr, Ipv6Addr};

use mxmedia_proto::canonical_json::canonical_json_str;
use mxmedia_proto::keys::{KeyId, Signature, SigningKey};
use mxmedia_proto::{ServerName, XMatrix, canonical_json, sign_json, verify_json};
use proptest::prelude::*;
use serde_json::{Map, Number, Value};

fn server_name() -> impl Strategy<Value = ServerName> {
    let port = proptest::option::of(1u16..);
    let host = prop_oneof![
        "[a-zA-Z0-9-]{1,12}(\\.[a-zA-Z0-9-]{1,12}){0,3}".prop_map(|h| h),
        any::<Ipv4Addr>().prop_map(|ip| ip.to_string()),
        any::<Ipv6Addr>().prop_map(|ip| format!("[{ip}]")),
    ];
    (host, port).prop_filter_map("valid server name", |(host, port)| {
        let text = match port {
            Some(p) => format!("{host}:{p}"),
            None => host,
        };
        text.parse().ok()
    })
}

fn x_matrix() -> impl Strategy<Value = XMatrix> {
    (
        server_name(),
        proptest::option::of(server_name()),
        "[A-Za-z0-9_]{1,12}",
        proptest::collection::vec(any::<u8>(), 64),
    )
        .prop_map(|(origin, destination, version, sig)| {
            let sig: [u8; 64] = sig.try_into().unwrap();
            XMatrix {
                origin,
                destination,
                key: KeyId::ed25519(&version).unwrap(),
                sig: Signature::from_bytes(&sig),
            }
        })
}

/// A header for `x` in any form [spec: request authentication](https://spec.matrix.org/v1.16/server-server-api/#request-authentication) allows: shuffled params, random name case, quoted or
/// bare values, whitespace around commas and `=`, an unknown parameter, `signature` for `sig`.
fn lenient_header(x: &XMatrix, seed: &[u8; 16]) -> String {
    let mut params = vec![
        ("origin".to_owned(), x.origin.to_string()),
        ("key".to_owned(), x.key.to_string()),
        (
            if seed[0].is_multiple_of(2) {
                "sig"
            } else {
                "signature"
            }
            .to_owned(),
            x.sig.to_base64(),
        ),
        ("x-unknown".to_owned(), "a b\"c".to_owned()),
    ];
    if let Some(d) = &x.destination {
        params.push(("destination".to_owned(), d.to_string()));
    }
    let n = params.len();
    params.rotate_left(usize::from(seed[1]) % n);
    params.swap(0, usize::from(seed[1] >> 4) % n);
    let ows = ["", " ", "\t", " \t "];
    let mut out = String::from(if seed[2].is_multiple_of(2) {
        "X-Matrix "
    } else {
        "x-MATRIX\t "
    });
    for (i, (name, value)) in params.iter().enumerate() {
        let s = seed[(i + 3) % 16];
        if i > 0 {
            out.push_str(ows[usize::from(s) % 4]);
            out.push(',');
            out.push_str(ows[usize::from(s >> 2) % 4]);
        }
        let name: String = name
            .chars()
            .enumerate()
            .map(|(j, c)| {
                if (s >> (j % 8)) & 1 == 1 {
                    c.to_ascii_uppercase()
                } else {
                    c
                }
            })
            .collect();
        out.push_str(&name);
        out.push_str(ows[usize::from(s >> 4) % 4]);
        out.push('=');
        let bare_ok = !value.contains([' ', '"']);
        if bare_ok && (s >> 6) & 1 == 1 {
            out.push_str(value);
        } else {
            out.push('"');
            for c in value.chars() {
                if c == '"' || (c == 'a' && s >> 7 == 1) {
                    out.push('\\');
                }
                out.push(c);
            }
            out.push('"');
        }
    }
    out
}

fn json_value() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(Value::from),
        (-(1i64 << 53) + 1..(1i64 << 53)).prop_map(Value::from),
        any::<f64>().prop_filter_map("finite", |f| Number::from_f64(f).map(Value::Number)),
        any::<String>().prop_map(Value::String),
    ];
    leaf.prop_recursive(4, 48, 6, |inner| {
        prop_oneof![
            proptest::collection::vec(inner.clone(), 0..6).prop_map(Value::Array),
            proptest::collection::vec((any::<String>(), inner), 0..6)
                .prop_map(|m| Value::Object(m.into_iter().collect::<Map<_, _>>())),
        ]
    })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(400))]

    /// The X-Matrix parser returns (never panics) on any text, plain or header-shaped.
    #[test]
    fn x_matrix_parse_total(s in any::<String>(), t in "(?i)x-matrix[ \t]{1,2}[a-zA-Z=\",\\\\ \t:./+_é-]{0,80}") {
        let _ = XMatrix::parse(&s);
        let _ = XMatrix::parse(&t);
    }

    /// parse(format(x)) == x.
    #[test]
    fn x_matrix_round_trip(x in x_matrix()) {
        prop_assert_eq!(XMatrix::parse(&x.to_string()), Ok(x));
    }

    /// Every lenient spelling of a header parses to the same credential.
    #[test]
    fn x_matrix_lenient_forms(x in x_matrix(), seed in any::<[u8; 16]>()) {
        let header = lenient_header(&x, &seed);
        prop_assert_eq!(XMatrix::parse(&header), Ok(x), "{}", header);
    }

    /// Server names: parsing is total and Display gives back the input.
    #[test]
    fn server_name_total(s in any::<String>(), t in "[a-z0-9.:\\[\\]-]{0,20}") {
        for text in [s, t] {
            if let Ok(name) = text.parse::<ServerName>() {
                prop_assert_eq!(name.to_string(), text);
            }
        }
    }

    /// canonical_json_str returns (never panics) on any text.
    #[test]
    fn canonical_json_total(s in any::<String>(), t in "[\\[\\]{}\":,0-9eE.+ a-z\\\\-]{0,60}") {
        let _ = canonical_json_str(&s);
        let _ = canonical_json_str(&t);
    }

    /// Canonical output is valid JSON, denotes the same value, and is a fixed point.
    #[test]
    fn canonical_json_fixed_point(v in json_value()) {
        if let Ok(text) = canonical_json(&v) {
            let back: Value = serde_json::from_str(&text).unwrap();
            prop_assert_eq!(canonical_json(&back).unwrap(), text.clone());
            prop_assert!(!text.contains(['\n', ' ']) || contains_string_with_space(&v));
        }
    }

    /// Whatever we sign, we verify; any other server name does not.
    #[test]
    fn sign_then_verify(v in json_value(), origin in server_name()) {
        let key = SigningKey::generate("p").unwrap();
        let object = match v {
            Value::Object(m) => Value::Object(m),
            other => serde_json::json!({"v": other}),
        };
        if let Ok(signed) = sign_json(&origin, &key, &object) {
            prop_assert!(verify_json(&origin, key.key_id(), &key.verify_key(), &signed).is_ok());
        }
    }
}

fn contains_string_with_space(v: &Value) -> bool {
    match v {
        Value::String(s) => s.contains([' ', '\n']),
        Value::Array(a) => a.iter().any(contains_string_with_space),
        Value::Object(m) => m
            .iter()
            .any(|(k, v)| k.contains([' ', '\n']) || contains_string_with_space(v)),
        _ => false,
    }
}
