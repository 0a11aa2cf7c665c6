//! Key material: key IDs (`ed25519:<version>`), public verify keys, signatures, and our own
//! signing key with Synapse's key file format. ed25519 is the only algorithm Matrix uses, so the
//! types are ed25519-specific rather than generic over algorithms.

mod signing_key;

use std::fmt;
use std::str::FromStr;

use ed25519_dalek::{Signature as DalekSignature, VerifyingKey};

use crate::base64;
use crate::error::{Error, Result};

pub use signing_key::SigningKey;

/// The key algorithm prefix of every key ID we can use.
pub const ED25519: &str = "ed25519";

/// Longest key version accepted; the spec sets no limit, this only bounds memory.
const MAX_VERSION_LEN: usize = 255;

/// A key ID `ed25519:<version>`, the version matching `[A-Za-z0-9_]+` ([spec: signing JSON](https://spec.matrix.org/v1.16/appendices/#signing-json)).
/// IDs of other algorithms are refused, so callers skip them as the spec's verification steps say.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct KeyId(String);

impl KeyId {
    /// `ed25519:{version}`, checking the version's charset.
    pub fn ed25519(version: &str) -> Result<Self> {
        check_version(version)?;
        Ok(Self(format!("{ED25519}:{version}")))
    }

    /// The part after `ed25519:`.
    pub fn version(&self) -> &str {
        self.0.get(ED25519.len() + 1..).unwrap_or_default()
    }

    /// The full ID as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

fn check_version(version: &str) -> Result<()> {
    if version.is_empty() {
        return Err(Error::InvalidKeyId("empty key version"));
    }
    if version.len() > MAX_VERSION_LEN {
        return Err(Error::InvalidKeyId("key version too long"));
    }
    if !version
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || b == b'_')
    {
        return Err(Error::InvalidKeyId("key version outside [A-Za-z0-9_]"));
    }
    Ok(())
}

impl FromStr for KeyId {
    type Err = Error;

    fn from_str(s: &str) -> Result<Self> {
        let Some((algorithm, version)) = s.split_once(':') else {
            return Err(Error::InvalidKeyId("no ':' in key id"));
        };
        if algorithm != ED25519 {
            return Err(Error::InvalidKeyId("unsupported key algorithm"));
        }
        Self::ed25519(version)
    }
}

impl std::borrow::Borrow<str> for KeyId {
    fn borrow(&self) -> &str {
        &self.0
    }
}

crate::ids::string_newtype!(KeyId);

/// A public ed25519 key, as published in `verify_keys` (unpadded base64 of 32 bytes).
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct VerifyKey(VerifyingKey);

impl VerifyKey {
    /// Decodes unpadded (or padded) base64 of a 32-byte ed25519 public key.
    pub fn from_base64(text: &str) -> Result<Self> {
        let bytes = base64::decode_array::<32>(text)
            .map_err(|_| Error::BadKey("not 32 bytes of base64"))?;
        Self::from_bytes(&bytes)
    }

    /// Wraps raw public key bytes, refusing ones that are not a curve point.
    pub fn from_bytes(bytes: &[u8; 32]) -> Result<Self> {
        VerifyingKey::from_bytes(bytes)
            .map(Self)
            .map_err(|_| Error::BadKey("not an ed25519 public key"))
    }

    /// The key as unpadded base64.
    pub fn to_base64(&self) -> String {
        base64::encode(self.0.as_bytes())
    }

    /// The raw key bytes.
    pub fn to_bytes(&self) -> [u8; 32] {
        self.0.to_bytes()
    }

    /// Checks `signature` over `message`. `verify_strict` refuses weak keys and non-canonical
    /// signatures, so one message cannot carry two different valid signatures by a key.
    pub fn verify(&self, message: &[u8], signature: &Signature) -> Result<()> {
        self.0
            .verify_strict(message, &signature.0)
            .map_err(|_| Error::BadSignature)
    }
}

impl fmt::Debug for VerifyKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("VerifyKey").field(&self.to_base64()).finish()
    }
}

/// An ed25519 signature (64 bytes; unpadded base64 on the wire).
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct Signature(DalekSignature);

impl Signature {
    /// Decodes padded or unpadded standard base64 of exactly 64 bytes.
    pub fn from_base64(text: &str) -> Result<Self> {
        let bytes = base64::decode_array::<64>(text).map_err(|_| Error::BadSignature)?;
        Ok(Self::from_bytes(&bytes))
    }

    /// Wraps raw signature bytes. Malformed values are caught when verifying.
    pub fn from_bytes(bytes: &[u8; 64]) -> Self {
        Self(DalekSignature::from_bytes(bytes))
    }

    /// The signature as unpadded base64.
    pub fn to_base64(&self) -> String {
        base64::encode(self.0.to_bytes())
    }

    /// The raw signature bytes.
    pub fn to_bytes(&self) -> [u8; 64] {
        self.0.to_bytes()
    }
}

impl fmt::Debug for Signature {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("Signature").field(&self.to_base64()).finish()
    }
}

#[cfg(test)]
mod tests;
