use std::collections::BTreeMap;

use serde_json::{Value, json};

use super::{
    KeyQueryRequest, MAX_KEY_VALIDITY_MS, OldVerifyKey, ServerKeysJson, build_server_keys_response,
    validate_notary_server_keys, validate_server_keys,
};
use crate::error::Error;
use crate::ids::ServerName;
use crate::keys::{KeyId, SigningKey};
use crate::signing::sign_json;
use crate::test_vectors::{PUBLIC, domain, key as spec_key};

const VALID_UNTIL: u64 = 1_700_000_000_000;
const NOW: u64 = 1_600_000_000_000;
const SELF_SIG: &str =
    "ewq/uPhfAzmWSa/3PRlr5Q0W59jG75Wtb6mzxIELuVRAxYMHOeMFue6fNXijZkIwLLembQ0+gl7DIkiUGcoUBg";

fn id(s: &str) -> KeyId {
    s.parse().unwrap()
}

fn spec_response() -> Value {
    build_server_keys_response(&domain(), &[spec_key()], BTreeMap::new(), VALID_UNTIL).unwrap()
}

/// Our built response is byte for byte the self-signed key response derived from the key of
/// the [cryptographic test vectors](https://spec.matrix.org/v1.16/appendices/#cryptographic-test-vectors).
#[test]
fn derived_self_signed_vector() {
    let response = spec_response();
    assert_eq!(
        response,
        json!({
            "old_verify_keys": {},
            "server_name": "domain",
            "valid_until_ts": VALID_UNTIL,
            "verify_keys": {"ed25519:1": {"key": PUBLIC}},
            "signatures": {"domain": {"ed25519:1": SELF_SIG}}
        })
    );
}

/// A genuine response validates, and its key serves requests until valid_until_ts only.
#[test]
fn validate_good_response() {
    let keys = validate_server_keys(&domain(), &spec_response(), NOW).unwrap();
    assert_eq!(keys.server_name, domain());
    assert_eq!(keys.valid_until_ts, VALID_UNTIL);
    assert_eq!(keys.verify_keys[&id("ed25519:1")], spec_key().verify_key());
    assert_eq!(
        keys.verify_key_at(&id("ed25519:1"), NOW).unwrap(),
        &spec_key().verify_key()
    );
    assert_eq!(
        keys.verify_key_at(&id("ed25519:2"), NOW),
        Err(Error::UnknownKey)
    );
    assert_eq!(
        keys.verify_key_at(&id("ed25519:1"), VALID_UNTIL + 1),
        Err(Error::KeyExpired)
    );
    assert_eq!(keys.usable_until(NOW), NOW + MAX_KEY_VALIDITY_MS);
    assert_eq!(keys.usable_until(VALID_UNTIL - 5), VALID_UNTIL);
    assert_eq!(keys.usable_until(u64::MAX), VALID_UNTIL);
}

/// Wrong server, tampering, missing self-signature and expiry are each refused.
#[test]
fn validate_refusals() {
    let good = spec_response();
    let other: ServerName = "other".parse().unwrap();
    assert_eq!(
        validate_server_keys(&other, &good, NOW),
        Err(Error::ServerNameMismatch)
    );
    assert_eq!(
        validate_server_keys(&domain(), &good, VALID_UNTIL + 1),
        Err(Error::KeyExpired)
    );

    let mut tampered = good.clone();
    tampered["valid_until_ts"] = json!(VALID_UNTIL + 1);
    assert_eq!(
        validate_server_keys(&domain(), &tampered, NOW),
        Err(Error::BadSignature)
    );

    let mut unsigned = good.clone();
    unsigned["signatures"] = json!({});
    assert_eq!(
        validate_server_keys(&domain(), &unsigned, NOW),
        Err(Error::MissingSignature)
    );

    // Signed only by a key the response does not list: not self-signed.
    let stranger = SigningKey::generate("zz").unwrap();
    let mut by_stranger = unsigned.clone();
    by_stranger = sign_json(&domain(), &stranger, &by_stranger).unwrap();
    assert_eq!(
        validate_server_keys(&domain(), &by_stranger, NOW),
        Err(Error::MissingSignature)
    );

    for broken in [
        json!([]),
        json!({"server_name": "domain"}),
        json!({"server_name": "domain",
        "verify_keys": {}, "valid_until_ts": -1}),
    ] {
        assert!(matches!(
            validate_server_keys(&domain(), &broken, NOW),
            Err(Error::BadJson(_))
        ));
    }
}

/// Every signature by a listed key must verify, even if another one does.
#[test]
fn one_bad_signature_among_good_fails() {
    let second = SigningKey::generate("second").unwrap();
    let response = build_server_keys_response(
        &domain(),
        &[spec_key(), second.clone()],
        BTreeMap::new(),
        VALID_UNTIL,
    )
    .unwrap();
    validate_server_keys(&domain(), &response, NOW).unwrap();
    let mut broken = response.clone();
    broken["signatures"]["domain"]["ed25519:second"] = json!(SELF_SIG);
    assert_eq!(
        validate_server_keys(&domain(), &broken, NOW),
        Err(Error::BadSignature)
    );
}

/// Unknown algorithms and signatures by unlisted keys are ignored; old keys are kept but refused
/// for requests.
#[test]
fn unknown_algorithms_and_old_keys() {
    let old = SigningKey::generate("old").unwrap();
    let mut olds = BTreeMap::new();
    olds.insert(
        old.key_id().clone(),
        OldVerifyKey {
            key: old.verify_key(),
            expired_ts: 5,
        },
    );
    let mut response =
        build_server_keys_response(&domain(), &[spec_key()], olds, VALID_UNTIL).unwrap();
    response["verify_keys"]["curve25519:x"] = json!({"key": "abc"});
    response["extra_field"] = json!("covered by the signature");
    let response = sign_json(&domain(), &spec_key(), &response).unwrap();
    let response = sign_json(&domain(), &old, &response).unwrap();
    let keys = validate_server_keys(&domain(), &response, NOW).unwrap();
    assert_eq!(keys.verify_keys.len(), 1);
    assert_eq!(keys.old_verify_keys[old.key_id()].expired_ts, 5);
    assert_eq!(
        keys.verify_key_at(old.key_id(), NOW),
        Err(Error::KeyExpired)
    );
}

/// The spec's example response deserialises into the wire type, but its placeholder keys are
/// not real ed25519 keys, so validation refuses it.
#[test]
fn spec_example_shape() {
    let example = json!({
      "server_name": "example.org",
      "verify_keys": { "ed25519:abc123": { "key": "VGhpcyBzaG91bGQgYmUgYSByZWFsIGVkMjU1MTkgcGF5bG9hZA" } },
      "old_verify_keys": {
        "ed25519:0ldk3y": { "expired_ts": 1_532_645_052_628_u64, "key": "VGhpcyBzaG91bGQgYmUgeW91ciBvbGQga2V5J3MgZWQyNTUxOSBwYXlsb2FkLg" }
      },
      "signatures": { "example.org": { "ed25519:auto2": "VGhpcyBzaG91bGQgYWN0dWFsbHkgYmUgYSBzaWduYXR1cmU" } },
      "valid_until_ts": 1_652_262_000_000_u64
    });
    let wire: ServerKeysJson = serde_json::from_value(example.clone()).unwrap();
    assert_eq!(
        wire.old_verify_keys["ed25519:0ldk3y"].expired_ts,
        1_532_645_052_628
    );
    let name: ServerName = "example.org".parse().unwrap();
    assert!(matches!(
        validate_server_keys(&name, &example, NOW),
        Err(Error::BadKey(_))
    ));
}

/// Building refuses no keys at all.
#[test]
fn build_needs_a_key() {
    assert!(build_server_keys_response(&domain(), &[], BTreeMap::new(), VALID_UNTIL).is_err());
}

/// A notary's copy needs both the origin's and the notary's signature.
#[test]
fn notary_entry() {
    let notary: ServerName = "notary.example".parse().unwrap();
    let notary_key = SigningKey::generate("n").unwrap();
    let mut trusted = BTreeMap::new();
    trusted.insert(notary_key.key_id().clone(), notary_key.verify_key());
    let origin_only = spec_response();
    assert_eq!(
        validate_notary_server_keys(&domain(), &origin_only, NOW, &notary, &trusted),
        Err(Error::MissingSignature)
    );
    let countersigned = sign_json(&notary, &notary_key, &origin_only).unwrap();
    let keys =
        validate_notary_server_keys(&domain(), &countersigned, NOW, &notary, &trusted).unwrap();
    assert_eq!(keys.server_name, domain());
    let mut forged = countersigned.clone();
    forged["signatures"]["notary.example"]["ed25519:n"] = json!(SELF_SIG);
    assert_eq!(
        validate_notary_server_keys(&domain(), &forged, NOW, &notary, &trusted),
        Err(Error::BadSignature)
    );
}

/// The notary query body round-trips with the spec's example.
#[test]
fn key_query_body() {
    let text = r#"{"server_keys":{"example.org":{"ed25519:abc123":{"minimum_valid_until_ts":1234567890}}}}"#;
    let body: KeyQueryRequest = serde_json::from_str(text).unwrap();
    assert_eq!(
        body.server_keys["example.org"]["ed25519:abc123"].minimum_valid_until_ts,
        Some(1_234_567_890)
    );
    assert_eq!(serde_json::to_string(&body).unwrap(), text);
}
