//! Server key responses, `GET /_matrix/key/v2/server` ([spec: retrieving server keys](https://spec.matrix.org/v1.16/server-server-api/#retrieving-server-keys)): the serde wire types, checking
//! a fetched response (right server, self-signed, not expired), looking up the key an X-Matrix
//! header names, and building our own signed response. Fetching and caching are the federation
//! client's job; `usable_until` tells it how long it may keep a response.

mod notary;

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::error::{Error, Result};
use crate::ids::ServerName;
use crate::keys::{KeyId, SigningKey, VerifyKey};
use crate::signing::{sign_json, signature_of, signing_bytes};

pub use notary::{KeyCriteria, KeyQueryRequest, NotaryResponse, validate_notary_server_keys};

/// [Spec: retrieving server keys](https://spec.matrix.org/v1.16/server-server-api/#retrieving-server-keys): servers "MUST use the lesser of `valid_until_ts` and 7 days into the future", so a
/// stolen key published with a far-off expiry cannot stay trusted for long.
pub const MAX_KEY_VALIDITY_MS: u64 = 7 * 24 * 60 * 60 * 1000;

/// A Server Keys object as it travels ([spec: retrieving server keys](https://spec.matrix.org/v1.16/server-server-api/#retrieving-server-keys)). Key IDs stay strings here so a response
/// listing keys of an algorithm we do not know still deserialises; `ServerKeys` is the checked form.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ServerKeysJson {
    /// The server the keys belong to.
    pub server_name: String,
    /// Current keys: key ID → public key.
    pub verify_keys: BTreeMap<String, VerifyKeyJson>,
    /// Former keys (valid for old events, never for requests).
    #[serde(default)]
    pub old_verify_keys: BTreeMap<String, OldVerifyKeyJson>,
    /// Signing server → key ID → unpadded base64 signature.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub signatures: BTreeMap<String, BTreeMap<String, String>>,
    /// Milliseconds since the epoch after which the keys must be re-fetched.
    pub valid_until_ts: u64,
}

/// `{ "key": <unpadded base64> }`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct VerifyKeyJson {
    /// The public key, unpadded base64.
    pub key: String,
}

/// `{ "key": <unpadded base64>, "expired_ts": <ms> }`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OldVerifyKeyJson {
    /// The public key, unpadded base64.
    pub key: String,
    /// When the key stopped being used, ms since the epoch.
    pub expired_ts: u64,
}

/// A former key of a server.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OldVerifyKey {
    /// The public key.
    pub key: VerifyKey,
    /// When it stopped being used, ms since the epoch.
    pub expired_ts: u64,
}

/// A checked key response: the server is the one asked, the object is self-signed, and only
/// ed25519 keys with valid IDs are kept (others are skipped, as [spec: signing JSON](https://spec.matrix.org/v1.16/appendices/#signing-json) says).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServerKeys {
    /// The server the keys belong to.
    pub server_name: ServerName,
    /// Keys valid for signing requests.
    pub verify_keys: BTreeMap<KeyId, VerifyKey>,
    /// Former keys; never accepted for requests.
    pub old_verify_keys: BTreeMap<KeyId, OldVerifyKey>,
    /// As published: ms since the epoch. See `usable_until` for the capped value.
    pub valid_until_ts: u64,
}

impl ServerKeys {
    /// How long keys fetched at `now_ms` may be trusted: the lesser of `valid_until_ts` and
    /// `now_ms + 7 days` ([spec: retrieving server keys](https://spec.matrix.org/v1.16/server-server-api/#retrieving-server-keys)). Use it as the cache expiry.
    pub fn usable_until(&self, now_ms: u64) -> u64 {
        self.valid_until_ts
            .min(now_ms.saturating_add(MAX_KEY_VALIDITY_MS))
    }

    /// The key to verify an X-Matrix request signed with `key_id` at `now_ms` ([spec: request authentication](https://spec.matrix.org/v1.16/server-server-api/#request-authentication) step
    /// 5). `old_verify_keys` are refused (`KeyExpired`), as is everything once `valid_until_ts`
    /// has passed; a key the server does not list is `UnknownKey`.
    pub fn verify_key_at(&self, key_id: &KeyId, now_ms: u64) -> Result<&VerifyKey> {
        let Some(key) = self.verify_keys.get(key_id) else {
            if self.old_verify_keys.contains_key(key_id) {
                return Err(Error::KeyExpired);
            }
            return Err(Error::UnknownKey);
        };
        if now_ms > self.valid_until_ts {
            return Err(Error::KeyExpired);
        }
        Ok(key)
    }

    /// The unsigned wire form.
    pub fn to_json(&self) -> ServerKeysJson {
        ServerKeysJson {
            server_name: self.server_name.to_string(),
            verify_keys: self
                .verify_keys
                .iter()
                .map(|(id, key)| {
                    (
                        id.to_string(),
                        VerifyKeyJson {
                            key: key.to_base64(),
                        },
                    )
                })
                .collect(),
            old_verify_keys: self
                .old_verify_keys
                .iter()
                .map(|(id, old)| {
                    let json = OldVerifyKeyJson {
                        key: old.key.to_base64(),
                        expired_ts: old.expired_ts,
                    };
                    (id.to_string(), json)
                })
                .collect(),
            signatures: BTreeMap::new(),
            valid_until_ts: self.valid_until_ts,
        }
    }

    /// The wire form signed by each of `signing_keys` under this server's name. Every signing
    /// key must be listed in `verify_keys`, or receivers could not check its signature.
    pub fn to_signed_json(&self, signing_keys: &[SigningKey]) -> Result<Value> {
        if signing_keys.is_empty() {
            return Err(Error::BadKey("no signing key"));
        }
        let mut json =
            serde_json::to_value(self.to_json()).map_err(|e| Error::BadJson(e.to_string()))?;
        for key in signing_keys {
            if self.verify_keys.get(key.key_id()) != Some(&key.verify_key()) {
                return Err(Error::BadKey("signing key not listed in verify_keys"));
            }
            json = sign_json(&self.server_name, key, &json)?;
        }
        Ok(json)
    }
}

/// Checks a `/_matrix/key/v2/server` response fetched from `expected_server` at `now_ms`.
///
/// Requires: `server_name` equals `expected_server` (`ServerNameMismatch`); at least one signature
/// by the server with a key it lists in `verify_keys` (`MissingSignature`), and every such
/// signature verifies (`BadSignature`); every ed25519 key decodes (`BadKey`); `valid_until_ts` is
/// not already past (`KeyExpired`). Signatures by keys not in `verify_keys` are ignored. The
/// caller caches the result until `usable_until(now_ms)`.
pub fn validate_server_keys(
    expected_server: &ServerName,
    response_json: &Value,
    now_ms: u64,
) -> Result<ServerKeys> {
    let wire =
        ServerKeysJson::deserialize(response_json).map_err(|e| Error::BadJson(e.to_string()))?;
    if wire.server_name != expected_server.as_str() {
        return Err(Error::ServerNameMismatch);
    }
    let keys = ServerKeys {
        server_name: expected_server.clone(),
        verify_keys: parse_keys(&wire.verify_keys, |k| VerifyKey::from_base64(&k.key))?,
        old_verify_keys: parse_keys(&wire.old_verify_keys, |k| {
            Ok(OldVerifyKey {
                key: VerifyKey::from_base64(&k.key)?,
                expired_ts: k.expired_ts,
            })
        })?,
        valid_until_ts: wire.valid_until_ts,
    };
    check_signed_by(response_json, &keys.server_name, &keys.verify_keys)?;
    if keys.valid_until_ts < now_ms {
        return Err(Error::KeyExpired);
    }
    Ok(keys)
}

/// Keeps entries whose ID is a valid ed25519 key ID, converting each; a bad key under a valid ID
/// is an error, since the server claims it can sign with it.
fn parse_keys<J, K>(
    wire: &BTreeMap<String, J>,
    convert: impl Fn(&J) -> Result<K>,
) -> Result<BTreeMap<KeyId, K>> {
    let mut keys = BTreeMap::new();
    for (id, json) in wire {
        let Ok(id) = id.parse::<KeyId>() else {
            continue;
        };
        keys.insert(id, convert(json)?);
    }
    Ok(keys)
}

/// Checks that `signer` signed `value` with at least one of `keys`, and that all of its signatures
/// by those keys verify.
pub(crate) fn check_signed_by(
    value: &Value,
    signer: &ServerName,
    keys: &BTreeMap<KeyId, VerifyKey>,
) -> Result<()> {
    let message = signing_bytes(value)?;
    let mut verified = 0usize;
    for (id, key) in keys {
        let Some(signature) = signature_of(value, signer.as_str(), id.as_str())? else {
            continue;
        };
        key.verify(message.as_bytes(), &signature)?;
        verified += 1;
    }
    if verified == 0 {
        return Err(Error::MissingSignature);
    }
    Ok(())
}

/// Our own `/_matrix/key/v2/server` response: every key in `signing_keys` listed in
/// `verify_keys` and signing the object, `old_verify_keys` as given. [Spec: retrieving server keys](https://spec.matrix.org/v1.16/server-server-api/#retrieving-server-keys) says not to
/// publish responses that expire within an hour; picking `valid_until_ts` is the caller's call.
pub fn build_server_keys_response(
    server_name: &ServerName,
    signing_keys: &[SigningKey],
    old_verify_keys: BTreeMap<KeyId, OldVerifyKey>,
    valid_until_ts: u64,
) -> Result<Value> {
    let keys = ServerKeys {
        server_name: server_name.clone(),
        verify_keys: signing_keys
            .iter()
            .map(|k| (k.key_id().clone(), k.verify_key()))
            .collect(),
        old_verify_keys,
        valid_until_ts,
    };
    keys.to_signed_json(signing_keys)
}

#[cfg(test)]
mod tests;
