//! Key queries through a notary ([spec: querying keys through another server](https://spec.matrix.org/v1.16/server-server-api/#querying-keys-through-another-server)): the request and response bodies of
//! `/_matrix/key/v2/query`, and checking an entry of the answer. A notary's copy is only trusted
//! when the origin's self-signature holds *and* the notary, whose keys we already trust, signed it.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::{ServerKeys, check_signed_by, validate_server_keys};
use crate::error::Result;
use crate::ids::ServerName;
use crate::keys::{KeyId, VerifyKey};

/// Body of `POST /_matrix/key/v2/query`: server name → key ID → criteria. An empty inner map asks
/// for all of that server's keys.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct KeyQueryRequest {
    /// The servers and keys wanted.
    pub server_keys: BTreeMap<String, BTreeMap<String, KeyCriteria>>,
}

/// What a queried key must satisfy.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct KeyCriteria {
    /// The keys should be valid until at least this time (ms); the notary uses "now" if absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub minimum_valid_until_ts: Option<u64>,
}

/// Response of both notary endpoints: Server Keys objects, each also signed by the notary. Entries
/// stay raw JSON because their signatures cover fields we may not model.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct NotaryResponse {
    /// One object per server (possibly none, when the notary could not reach it).
    pub server_keys: Vec<Value>,
}

/// Checks one entry of a notary's answer for `expected_server`: everything
/// `validate_server_keys` checks, plus a valid signature by `notary` with one of `notary_keys`.
/// A notary may keep serving a response past its `valid_until_ts` when the origin is down; such an
/// entry fails here with `KeyExpired`, as it is useless for verifying requests.
pub fn validate_notary_server_keys(
    expected_server: &ServerName,
    entry: &Value,
    now_ms: u64,
    notary: &ServerName,
    notary_keys: &BTreeMap<KeyId, VerifyKey>,
) -> Result<ServerKeys> {
    let keys = validate_server_keys(expected_server, entry, now_ms)?;
    check_signed_by(entry, notary, notary_keys)?;
    Ok(keys)
}
