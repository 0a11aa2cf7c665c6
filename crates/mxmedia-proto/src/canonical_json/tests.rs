use serde_json::{Value, json};

use super::{MAX_SAFE_INT, canonical_json, canonical_json_str};
use crate::error::Error;

const ROW5_INPUT: &str = r#"{"auth": {"success": true, "mxid": "@john.doe:example.com", "profile": {"display_name": "John Doe", "three_pids": [{"medium": "email", "address": "john.doe@example.org"}, {"medium": "msisdn", "address": "123456789"}]}}}"#;
const ROW5_OUTPUT: &str = r#"{"auth":{"mxid":"@john.doe:example.com","profile":{"display_name":"John Doe","three_pids":[{"address":"john.doe@example.org","medium":"email"},{"address":"123456789","medium":"msisdn"}]},"success":true}}"#;

/// Every input/output pair of [spec: canonical JSON](https://spec.matrix.org/v1.16/appendices/#canonical-json)'s table is reproduced byte for byte.
#[test]
fn spec_vectors() {
    let cases = [
        ("{}", "{}"),
        (r#"{ "one": 1, "two": "Two" }"#, r#"{"one":1,"two":"Two"}"#),
        (r#"{ "b": "2", "a": "1" }"#, r#"{"a":"1","b":"2"}"#),
        (r#"{"b":"2","a":"1"}"#, r#"{"a":"1","b":"2"}"#),
        (ROW5_INPUT, ROW5_OUTPUT),
        (r#"{ "a": "日本語" }"#, r#"{"a":"日本語"}"#),
        (r#"{ "本": 2, "日": 1 }"#, r#"{"日":1,"本":2}"#),
        (r#"{ "a": "\u65E5" }"#, r#"{"a":"日"}"#),
        (r#"{ "a": null }"#, r#"{"a":null}"#),
        (r#"{ "a": -0, "b": 1e10 }"#, r#"{"a":0,"b":10000000000}"#),
    ];
    for (input, expected) in cases {
        assert_eq!(
            canonical_json_str(input).unwrap(),
            expected,
            "input {input}"
        );
    }
}

/// Escapes are exactly the ABNF's: short forms for b t n f r " \, `\u00xx` with lowercase hex
/// for the other controls, and nothing else escaped (not `/`, DEL, or non-ASCII).
#[test]
fn string_escapes() {
    let s: String = (0u8..0x20).map(char::from).collect();
    let out = canonical_json(&json!(s)).unwrap();
    assert_eq!(
        out,
        "\"\\u0000\\u0001\\u0002\\u0003\\u0004\\u0005\\u0006\\u0007\\b\\t\\n\\u000b\\f\\r\\u000e\\u000f\
         \\u0010\\u0011\\u0012\\u0013\\u0014\\u0015\\u0016\\u0017\\u0018\\u0019\\u001a\\u001b\\u001c\\u001d\\u001e\\u001f\""
    );
    assert_eq!(
        canonical_json(&json!("a/b\u{7f}\"\\é😀")).unwrap(),
        "\"a/b\u{7f}\\\"\\\\é😀\""
    );
}

/// Keys sort by code point, including astral characters and keys that are prefixes of others.
#[test]
fn key_order_by_code_point() {
    let v = json!({"b": 1, "a": 2, "aa": 3, "A": 4, "😀": 5, "\u{ffff}": 6, "é": 7, "": 8});
    assert_eq!(
        canonical_json(&v).unwrap(),
        r#"{"":8,"A":4,"a":2,"aa":3,"b":1,"é":7,"￿":6,"😀":5}"#
    );
}

/// Integers at the edges of the allowed range pass; one past them, fractions, and huge values fail.
#[test]
fn number_rules() {
    assert_eq!(
        canonical_json(&json!(MAX_SAFE_INT)).unwrap(),
        "9007199254740991"
    );
    assert_eq!(
        canonical_json(&json!(-MAX_SAFE_INT)).unwrap(),
        "-9007199254740991"
    );
    assert_eq!(canonical_json_str("1.0").unwrap(), "1");
    assert_eq!(canonical_json_str("-0.0").unwrap(), "0");
    assert_eq!(
        canonical_json_str("9007199254740991e0").unwrap(),
        "9007199254740991"
    );
    for bad in [
        json!(MAX_SAFE_INT + 1),
        json!(-MAX_SAFE_INT - 1),
        json!(u64::MAX),
        json!(i64::MIN),
        json!(1.5),
        json!(-0.1),
        json!(1e300),
        json!({"a": [1, 2, 0.5]}),
    ] {
        assert!(
            matches!(canonical_json(&bad), Err(Error::NotCanonical(_))),
            "{bad}"
        );
    }
    for bad in [
        "9007199254740992",
        "9007199254740992.0",
        "1e16",
        "-1e16",
        "0.5",
    ] {
        assert!(canonical_json_str(bad).is_err(), "{bad}");
    }
}

/// Scalars, arrays and nesting come out with no whitespace.
#[test]
fn compact_layout() {
    let v = json!({"z": [true, false, null, [], {}], "y": {"b": [1, {"d": 2, "c": 3}]}});
    assert_eq!(
        canonical_json(&v).unwrap(),
        r#"{"y":{"b":[1,{"c":3,"d":2}]},"z":[true,false,null,[],{}]}"#
    );
}

/// Bad text is BadJson; values nested past the limit are refused instead of overflowing the stack.
#[test]
fn bad_input() {
    assert!(matches!(canonical_json_str("{"), Err(Error::BadJson(_))));
    assert!(matches!(canonical_json_str("NaN"), Err(Error::BadJson(_))));
    let mut deep = Value::Null;
    for _ in 0..300 {
        deep = Value::Array(vec![deep]);
    }
    assert!(matches!(canonical_json(&deep), Err(Error::NotCanonical(_))));
}
