//! Fetching a server's keys over the network: from the server itself
//! (<https://spec.matrix.org/v1.16/server-server-api/#retrieving-server-keys>), or through a
//! notary (<https://spec.matrix.org/v1.16/server-server-api/#querying-keys-through-another-server>),
//! validated before anything is kept.

use mxmedia_proto::{
    ServerKeys, ServerName, server_keys::MAX_KEY_VALIDITY_MS,
    server_keys::validate_notary_server_keys, validate_server_keys,
};
use serde::{Deserialize, Serialize};

use crate::{
    config::TrustedKeyServer,
    federation::{Federation, FetchError},
};

/// What sled keeps: the response exactly as signed, so it can be validated again on load.
#[derive(Serialize, Deserialize)]
pub(super) struct Record {
    pub(super) response: serde_json::Value,
    pub(super) fetched_at_ms: u64,
    /// The notary it came through, if not from the server itself.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(super) notary: Option<String>,
}

impl Record {
    /// `(keep_until, fetched_at)` of a record kept before the store stamped them:
    /// `min(valid_until_ts, fetched_at + 7 days)`, as when it was fetched. `None` if it does not
    /// parse or has no expiry: it could not be used anyway.
    pub(super) fn stamps(bytes: &[u8]) -> Option<(u64, u64)> {
        let record: Self = serde_json::from_slice(bytes).ok()?;
        let valid_until = record.response.get("valid_until_ts")?.as_u64()?;
        let ceiling = record.fetched_at_ms.saturating_add(MAX_KEY_VALIDITY_MS);
        Some((valid_until.min(ceiling), record.fetched_at_ms))
    }
}

pub(super) async fn direct(
    federation: &Federation,
    client: &awc::Client,
    origin: &ServerName,
    now: u64,
) -> Result<(ServerKeys, Record), FetchError> {
    let response = federation
        .get_json(client, origin, "/_matrix/key/v2/server")
        .await?;
    let keys = validate_server_keys(origin, &response, now)
        .map_err(|e| FetchError::BadResponse(e.to_string()))?;
    Ok((
        keys,
        Record {
            response,
            fetched_at_ms: now,
            notary: None,
        },
    ))
}

pub(super) async fn via_notary(
    federation: &Federation,
    client: &awc::Client,
    notary: &TrustedKeyServer,
    origin: &ServerName,
    now: u64,
) -> Result<(ServerKeys, Record), FetchError> {
    let notary_keys = if notary.verify_keys.is_empty() {
        // Trust on first use: the notary's own keys, fetched from it and validated.
        let (keys, _) = direct(federation, client, &notary.server_name, now).await?;
        keys.verify_keys
    } else {
        notary.verify_keys.clone()
    };
    let path = format!("/_matrix/key/v2/query/{}", origin.as_str());
    let answer = federation
        .get_json(client, &notary.server_name, &path)
        .await?;
    let entries = answer
        .get("server_keys")
        .and_then(serde_json::Value::as_array)
        .ok_or_else(|| FetchError::BadResponse("no server_keys array".into()))?;
    let mut last = FetchError::BadResponse("the notary returned no keys".into());
    for entry in entries {
        match validate_notary_server_keys(origin, entry, now, &notary.server_name, &notary_keys) {
            Ok(keys) => {
                return Ok((
                    keys,
                    Record {
                        response: entry.clone(),
                        fetched_at_ms: now,
                        notary: Some(notary.server_name.to_string()),
                    },
                ));
            }
            Err(e) => last = FetchError::BadResponse(e.to_string()),
        }
    }
    Err(last)
}
