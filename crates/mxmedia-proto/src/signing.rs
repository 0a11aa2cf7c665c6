//! Signing and verifying JSON objects ([spec: signing JSON](https://spec.matrix.org/v1.16/appendices/#signing-json)). The signature covers the canonical JSON of the
//! object without its `signatures` and `unsigned` members, which is what lets notaries add their
//! own signatures to a server's key response without breaking the origin's.

use serde_json::{Map, Value};

use crate::canonical_json::canonical_json;
use crate::error::{Error, Result};
use crate::ids::ServerName;
use crate::keys::{KeyId, Signature, SigningKey, VerifyKey};

/// The canonical JSON bytes that a signature over `value` covers: the object minus
/// `signatures` and `unsigned`.
pub fn signing_bytes(value: &Value) -> Result<String> {
    let Value::Object(map) = value else {
        return Err(Error::BadJson("signed JSON must be an object".to_owned()));
    };
    let mut stripped = map.clone();
    stripped.remove("signatures");
    stripped.remove("unsigned");
    canonical_json(&Value::Object(stripped))
}

/// Returns `value` with our signature added at `signatures[server_name][key_id]`. Signatures by
/// other servers or keys are kept (ours for the same key is replaced) and `unsigned` is carried
/// over untouched.
pub fn sign_json(server_name: &ServerName, key: &SigningKey, value: &Value) -> Result<Value> {
    let signature = key.sign(signing_bytes(value)?.as_bytes());
    let mut signed = match value {
        Value::Object(map) => map.clone(),
        _ => return Err(Error::BadJson("signed JSON must be an object".to_owned())),
    };
    let signatures = object_entry(&mut signed, "signatures")?;
    let ours = object_entry(signatures, server_name.as_str())?;
    ours.insert(
        key.key_id().as_str().to_owned(),
        Value::String(signature.to_base64()),
    );
    Ok(Value::Object(signed))
}

/// The object at `map[key]`, created empty when absent; an existing non-object is an error
/// rather than something to overwrite, since it means the input is not what we think.
fn object_entry<'a>(
    map: &'a mut Map<String, Value>,
    key: &str,
) -> Result<&'a mut Map<String, Value>> {
    let entry = map
        .entry(key.to_owned())
        .or_insert_with(|| Value::Object(Map::new()));
    match entry {
        Value::Object(inner) => Ok(inner),
        _ => Err(Error::BadJson(format!(
            "`{key}` in signatures is not an object"
        ))),
    }
}

/// The signature `value` carries at `signatures[server_name][key_id]`, if any.
pub fn signature_of(value: &Value, server_name: &str, key_id: &str) -> Result<Option<Signature>> {
    let Some(text) = value
        .get("signatures")
        .and_then(|s| s.get(server_name))
        .and_then(|s| s.get(key_id))
    else {
        return Ok(None);
    };
    let Some(text) = text.as_str() else {
        return Err(Error::BadSignature);
    };
    Signature::from_base64(text).map(Some)
}

/// The IDs of the ed25519 keys `server_name` signed `value` with. IDs of other algorithms, and
/// malformed ones, are skipped ([spec: signing JSON](https://spec.matrix.org/v1.16/appendices/#signing-json), "Checking for a Signature" step 2).
pub fn signing_key_ids(value: &Value, server_name: &str) -> Vec<KeyId> {
    value
        .get("signatures")
        .and_then(|s| s.get(server_name))
        .and_then(Value::as_object)
        .map(|sigs| sigs.keys().filter_map(|id| id.parse().ok()).collect())
        .unwrap_or_default()
}

/// Checks that `value` carries a valid signature by `server_name` with key `key_id`.
///
/// Errors: `MissingSignature` when there is no such signature, `BadSignature` when it is not
/// base64 of 64 bytes or does not verify, and the canonical-JSON errors for unsignable input.
pub fn verify_json(
    server_name: &ServerName,
    key_id: &KeyId,
    key: &VerifyKey,
    value: &Value,
) -> Result<()> {
    let Some(signature) = signature_of(value, server_name.as_str(), key_id.as_str())? else {
        return Err(Error::MissingSignature);
    };
    key.verify(signing_bytes(value)?.as_bytes(), &signature)
}

#[cfg(test)]
mod tests;
