//! `SigningKey`: our server's ed25519 key and its ID. It reads and writes Synapse's signing key
//! file (`ed25519 <version> <unpadded base64 seed>`, one key per line), so a media repo and a
//! homeserver can share one key file ([spec: request authentication](https://spec.matrix.org/v1.16/server-server-api/#request-authentication)). The secret never appears in `Debug` output.

use std::fmt;

use ed25519_dalek::Signer as _;

use crate::base64;
use crate::error::{Error, Result};
use crate::keys::{ED25519, KeyId, Signature, VerifyKey};

/// An ed25519 signing key with its key ID.
#[derive(Clone)]
pub struct SigningKey {
    key_id: KeyId,
    key: ed25519_dalek::SigningKey,
}

impl SigningKey {
    /// A fresh random key with ID `ed25519:{version}`.
    pub fn generate(version: &str) -> Result<Self> {
        Ok(Self {
            key_id: KeyId::ed25519(version)?,
            key: ed25519_dalek::SigningKey::generate(&mut rand::rng()),
        })
    }

    /// The key whose 32-byte seed (what Synapse stores) is `seed`.
    pub fn from_seed(key_id: KeyId, seed: &[u8; 32]) -> Self {
        Self {
            key_id,
            key: ed25519_dalek::SigningKey::from_bytes(seed),
        }
    }

    /// Every key in a Synapse-format key file, in file order. Blank lines are skipped; any other
    /// line must be `ed25519 <version> <base64 seed>` separated by whitespace.
    pub fn parse_key_file(contents: &str) -> Result<Vec<Self>> {
        contents
            .lines()
            .filter(|line| !line.trim().is_empty())
            .map(parse_line)
            .collect()
    }

    /// The key with ID `key_id` from a key file, or its first key when `key_id` is `None`.
    pub fn from_key_file(contents: &str, key_id: Option<&KeyId>) -> Result<Self> {
        let keys = Self::parse_key_file(contents)?;
        let found = match key_id {
            Some(id) => keys.into_iter().find(|k| &k.key_id == id),
            None => keys.into_iter().next(),
        };
        found.ok_or(Error::BadKey("no such key in the key file"))
    }

    /// This key as one key-file line, newline included. It contains the secret seed.
    pub fn to_key_file_line(&self) -> String {
        format!(
            "{ED25519} {} {}\n",
            self.key_id.version(),
            base64::encode(self.key.as_bytes())
        )
    }

    /// A key file holding `keys` in order (the first is the one used by default).
    pub fn write_key_file(keys: &[Self]) -> String {
        keys.iter().map(Self::to_key_file_line).collect()
    }

    /// The key ID, e.g. `ed25519:a_AbCd`.
    pub fn key_id(&self) -> &KeyId {
        &self.key_id
    }

    /// The public half.
    pub fn verify_key(&self) -> VerifyKey {
        VerifyKey(self.key.verifying_key())
    }

    /// The public key as unpadded base64, as published in `verify_keys`.
    pub fn public_key_base64(&self) -> String {
        self.verify_key().to_base64()
    }

    /// Signs raw bytes (callers sign canonical JSON; see `signing`).
    pub fn sign(&self, message: &[u8]) -> Signature {
        Signature(self.key.sign(message))
    }
}

fn parse_line(line: &str) -> Result<SigningKey> {
    let mut fields = line.split_whitespace();
    let (Some(algorithm), Some(version), Some(seed), None) =
        (fields.next(), fields.next(), fields.next(), fields.next())
    else {
        return Err(Error::BadKey(
            "key file line is not '<algorithm> <version> <seed>'",
        ));
    };
    if algorithm != ED25519 {
        return Err(Error::BadKey("unsupported algorithm in key file"));
    }
    let key_id =
        KeyId::ed25519(version).map_err(|_| Error::BadKey("bad key version in key file"))?;
    let seed = base64::decode_array::<32>(seed)
        .map_err(|_| Error::BadKey("key file seed is not 32 bytes of base64"))?;
    Ok(SigningKey::from_seed(key_id, &seed))
}

impl fmt::Debug for SigningKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SigningKey")
            .field("key_id", &self.key_id)
            .field("public_key", &self.public_key_base64())
            .finish_non_exhaustive()
    }
}
