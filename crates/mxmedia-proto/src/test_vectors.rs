//! The constants of the spec's [cryptographic test vectors](https://spec.matrix.org/v1.16/appendices/#cryptographic-test-vectors), shared by the unit tests of every
//! module. Test-only.

use crate::ids::ServerName;
use crate::keys::SigningKey;

/// The 32-byte seed of the spec's signing key, base64 as printed (with non-zero trailing bits).
pub(crate) const SEED: &str = "YJDBA9Xnr2sVqXD9Vj7XVUnmFZcZrlw8Md7kMW+3XA1";
/// The public key for SEED (derived from it; also in Synapse's documentation).
pub(crate) const PUBLIC: &str = "XGX0JRS2Af3be3knz2fBiRbApjm2Dh61gXDJA8kcJNI";

/// The spec's key: `ed25519:1` from SEED, read through the key-file parser.
pub(crate) fn key() -> SigningKey {
    SigningKey::from_key_file(&format!("ed25519 1 {SEED}\n"), None).unwrap()
}

/// The spec's SERVER_NAME.
pub(crate) fn domain() -> ServerName {
    "domain".parse().unwrap()
}
