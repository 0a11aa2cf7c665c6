#![allow(
    clippy::indexing_slicing,
    reason = "a test indexes what it just asserted the shape of; a panic is a test failure"
)]
use super::{KeyId, Signature, SigningKey, VerifyKey};
use crate::error::Error;

use crate::test_vectors::{PUBLIC as SPEC_PUBLIC, SEED as SPEC_SEED, key as spec_key};

/// The spec seed yields the documented public key.
#[test]
fn spec_seed_public_key() {
    let key = spec_key();
    assert_eq!(key.key_id().as_str(), "ed25519:1");
    assert_eq!(key.public_key_base64(), SPEC_PUBLIC);
    assert_eq!(
        VerifyKey::from_base64(SPEC_PUBLIC).unwrap(),
        key.verify_key()
    );
}

/// Key IDs are `ed25519:` plus a `[A-Za-z0-9_]+` version; anything else is refused.
#[test]
fn key_ids() {
    for good in [
        "ed25519:1",
        "ed25519:auto",
        "ed25519:a_AbC9",
        "ed25519:abc123",
    ] {
        let id: KeyId = good.parse().unwrap();
        assert_eq!(id.as_str(), good);
        assert_eq!(id.to_string(), good);
    }
    assert_eq!("ed25519:a_bc".parse::<KeyId>().unwrap().version(), "a_bc");
    for bad in [
        "ed25519:",
        "ed25519",
        "curve25519:1",
        "ED25519:1",
        "ed25519:a-b",
        "ed25519:a:b",
        ":1",
        "",
    ] {
        assert!(
            matches!(bad.parse::<KeyId>(), Err(Error::InvalidKeyId(_))),
            "{bad:?}"
        );
    }
}

/// A written key file reads back to the same keys, in order, and keys are picked by ID.
#[test]
fn key_file_round_trip() {
    let a = SigningKey::generate("a_one").unwrap();
    let b = SigningKey::generate("b_two").unwrap();
    let file = SigningKey::write_key_file(&[a.clone(), b.clone()]);
    assert_eq!(file.lines().count(), 2);
    assert!(file.starts_with("ed25519 a_one "));
    let keys = SigningKey::parse_key_file(&file).unwrap();
    assert_eq!(keys.len(), 2);
    assert_eq!(keys[0].public_key_base64(), a.public_key_base64());
    assert_eq!(keys[1].public_key_base64(), b.public_key_base64());
    let picked = SigningKey::from_key_file(&file, Some(&"ed25519:b_two".parse().unwrap())).unwrap();
    assert_eq!(picked.verify_key(), b.verify_key());
    assert_eq!(
        SigningKey::from_key_file(&file, None).unwrap().key_id(),
        a.key_id()
    );
    assert!(SigningKey::from_key_file(&file, Some(&"ed25519:zzz".parse().unwrap())).is_err());
}

/// Synapse's layout is accepted with padded seeds, tabs, blank lines and CRLF; broken lines are not.
#[test]
fn key_file_variants() {
    let padded = format!("ed25519 1 {SPEC_SEED}=");
    let file = format!("\n\ted25519\t1\t{SPEC_SEED}\r\n\n{padded}\n");
    let keys = SigningKey::parse_key_file(&file).unwrap();
    assert_eq!(keys.len(), 2);
    assert!(keys.iter().all(|k| k.public_key_base64() == SPEC_PUBLIC));
    for bad in [
        "ed25519 1".to_owned(),
        format!("ed25519 1 {SPEC_SEED} extra"),
        format!("curve25519 1 {SPEC_SEED}"),
        format!("ed25519 a-b {SPEC_SEED}"),
        "ed25519 1 Zm9vYmFy".to_owned(),
        "ed25519 1 !!!!".to_owned(),
    ] {
        assert!(
            matches!(SigningKey::parse_key_file(&bad), Err(Error::BadKey(_))),
            "{bad:?}"
        );
    }
    assert!(SigningKey::from_key_file("", None).is_err());
}

/// Signatures verify with the matching key only, and survive a base64 round trip.
#[test]
fn sign_and_verify_bytes() {
    let key = spec_key();
    let other = SigningKey::generate("x").unwrap();
    let sig = key.sign(b"hello");
    assert!(key.verify_key().verify(b"hello", &sig).is_ok());
    assert_eq!(
        key.verify_key().verify(b"hellO", &sig),
        Err(Error::BadSignature)
    );
    assert_eq!(
        other.verify_key().verify(b"hello", &sig),
        Err(Error::BadSignature)
    );
    let again = Signature::from_base64(&sig.to_base64()).unwrap();
    assert_eq!(again, sig);
    assert_eq!(sig.to_base64().len(), 86);
    assert!(Signature::from_base64("Zm9v").is_err());
}

/// Public keys must be 32 bytes that decode to a curve point.
#[test]
fn bad_verify_keys() {
    assert!(VerifyKey::from_base64("Zm9v").is_err());
    assert!(VerifyKey::from_base64("not base64!").is_err());
    // About half of all y-coordinates have no point on the curve.
    let not_a_point = (2u8..50).any(|y| {
        let mut bytes = [0u8; 32];
        bytes[0] = y;
        VerifyKey::from_bytes(&bytes).is_err()
    });
    assert!(not_a_point);
}

/// Debug output shows the key ID and public key, never the seed.
#[test]
fn debug_hides_secret() {
    let key = spec_key();
    let debug = format!("{key:?}");
    assert!(debug.contains("ed25519:1"));
    assert!(debug.contains(SPEC_PUBLIC));
    assert!(!debug.contains(SPEC_SEED));
}
