use serde_json::json;

use super::{sign_json, signing_bytes, signing_key_ids, verify_json};
use crate::error::Error;
use crate::ids::ServerName;
use crate::keys::SigningKey;
use crate::test_vectors::{domain, key as spec_key};

/// [Spec: cryptographic test vectors](https://spec.matrix.org/v1.16/appendices/#cryptographic-test-vectors) "JSON signing, empty object": byte-for-byte the spec's output.
#[test]
fn spec_vector_empty_object() {
    let signed = sign_json(&domain(), &spec_key(), &json!({})).unwrap();
    assert_eq!(
        signed,
        json!({"signatures": {"domain": {"ed25519:1":
            "K8280/U9SSy9IVtjBuVeLr+HpOB4BQFWbg+UZaADMtTdGYI7Geitb76LTrr5QV/7Xg4ahLwYGYZzuHGZKM5ZAQ"}}})
    );
}

/// [Spec: cryptographic test vectors](https://spec.matrix.org/v1.16/appendices/#cryptographic-test-vectors) "JSON signing with data": byte-for-byte the spec's output.
#[test]
fn spec_vector_with_data() {
    let signed = sign_json(&domain(), &spec_key(), &json!({"one": 1, "two": "Two"})).unwrap();
    assert_eq!(
        signed,
        json!({"one": 1, "two": "Two", "signatures": {"domain": {"ed25519:1":
            "KqmLSbO39/Bzb0QIYE82zqLwsA+PDzYIpIRA2sRQ4sL53+sN6/fpNSoqE7BP7vBZhG6kYdD13EIMJpvhJI+6Bw"}}})
    );
}

/// The spec's signed outputs verify with the spec's public key, and tampering breaks them.
#[test]
fn spec_vectors_verify() {
    let key = spec_key();
    let id = key.key_id().clone();
    let vk = key.verify_key();
    let signed = json!({"one": 1, "two": "Two", "signatures": {"domain": {"ed25519:1":
        "KqmLSbO39/Bzb0QIYE82zqLwsA+PDzYIpIRA2sRQ4sL53+sN6/fpNSoqE7BP7vBZhG6kYdD13EIMJpvhJI+6Bw"}}});
    verify_json(&domain(), &id, &vk, &signed).unwrap();
    let mut tampered = signed.clone();
    tampered["one"] = json!(2);
    assert_eq!(
        verify_json(&domain(), &id, &vk, &tampered),
        Err(Error::BadSignature)
    );
    let other: ServerName = "other".parse().unwrap();
    assert_eq!(
        verify_json(&other, &id, &vk, &signed),
        Err(Error::MissingSignature)
    );
    let other_id = "ed25519:2".parse().unwrap();
    assert_eq!(
        verify_json(&domain(), &other_id, &vk, &signed),
        Err(Error::MissingSignature)
    );
}

/// `unsigned` and other servers' signatures are kept and not covered by ours.
#[test]
fn keeps_unsigned_and_other_signatures() {
    let input = json!({
        "one": 1,
        "unsigned": {"age": 5},
        "signatures": {"notary": {"ed25519:n": "abc"}}
    });
    let signed = sign_json(&domain(), &spec_key(), &input).unwrap();
    assert_eq!(signed["unsigned"], json!({"age": 5}));
    assert_eq!(signed["signatures"]["notary"], json!({"ed25519:n": "abc"}));
    let key = spec_key();
    verify_json(&domain(), key.key_id(), &key.verify_key(), &signed).unwrap();
    let mut changed = signed.clone();
    changed["unsigned"] = json!({"age": 99});
    verify_json(&domain(), key.key_id(), &key.verify_key(), &changed).unwrap();
    assert_eq!(signing_bytes(&signed).unwrap(), r#"{"one":1}"#);
}

/// Signing twice with two keys keeps both signatures, each verifying on its own.
#[test]
fn two_keys_both_verify() {
    let a = SigningKey::generate("a").unwrap();
    let b = SigningKey::generate("b").unwrap();
    let once = sign_json(&domain(), &a, &json!({"x": "y"})).unwrap();
    let twice = sign_json(&domain(), &b, &once).unwrap();
    verify_json(&domain(), a.key_id(), &a.verify_key(), &twice).unwrap();
    verify_json(&domain(), b.key_id(), &b.verify_key(), &twice).unwrap();
    let ids = signing_key_ids(&twice, "domain");
    assert_eq!(ids, vec![a.key_id().clone(), b.key_id().clone()]);
}

/// Non-objects, malformed signature containers and floats are errors, never panics.
#[test]
fn bad_inputs() {
    let key = spec_key();
    let vk = key.verify_key();
    assert!(matches!(
        sign_json(&domain(), &key, &json!([1])),
        Err(Error::BadJson(_))
    ));
    assert!(matches!(
        sign_json(&domain(), &key, &json!({"signatures": 1})),
        Err(Error::BadJson(_))
    ));
    assert!(matches!(
        sign_json(&domain(), &key, &json!({"signatures": {"domain": "x"}})),
        Err(Error::BadJson(_))
    ));
    assert!(matches!(
        sign_json(&domain(), &key, &json!({"f": 0.5})),
        Err(Error::NotCanonical(_))
    ));
    let bad_sig = json!({"signatures": {"domain": {"ed25519:1": 5}}});
    assert_eq!(
        verify_json(&domain(), key.key_id(), &vk, &bad_sig),
        Err(Error::BadSignature)
    );
    let short_sig = json!({"signatures": {"domain": {"ed25519:1": "Zm9v"}}});
    assert_eq!(
        verify_json(&domain(), key.key_id(), &vk, &short_sig),
        Err(Error::BadSignature)
    );
    assert_eq!(
        verify_json(&domain(), key.key_id(), &vk, &json!("x")),
        Err(Error::MissingSignature)
    );
}
