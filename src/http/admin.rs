//! mxmedia's own admin API, for what Synapse's has no room for (callers must be server admins,
//! see `extract::AdminUser`):
//! - `DELETE /_mxmedia/admin/v1/media/{serverName}/{mediaId}`: removes media (local or remote)
//!   with its thumbnails and blocks the id: it answers 404 from then on and a remote id is never
//!   fetched again. `{"deleted": bool}`.
//! - `POST|GET|DELETE /_mxmedia/admin/v1/quarantine/hash/{sha256}`: quarantine bytes by hash
//!   (every copy stored, uploaded or fetched), show, or release them.
//! - `GET|POST /_mxmedia/admin/v1/quarantine/hashes`: export or import the hash list as plain
//!   text, one lowercase hex sha256 per line: a block list servers can share.
//! - `GET|PUT|DELETE /_mxmedia/admin/v1/users/{userId}/quota`: a user's limits and usage; an
//!   admin's limits for them (`{"max_bytes": n|null, "max_files": n|null}`, 0 = unlimited,
//!   null = the configured default); back to the defaults.

use actix_web::{HttpResponse, web};
use futures_util::StreamExt as _;
use serde_json::json;

use super::extract::AdminUser;
use crate::{
    error::Error,
    http::extract::{parse_media_id, parse_server_name},
    model::id::MediaKey,
    state::AppState,
    store::usage::QuotaOverride,
};

/// An imported hash list: 65 bytes a line, about 250 000 hashes.
const MAX_IMPORT_BYTES: usize = 16 * 1024 * 1024;
/// Hashes exported per store read.
const EXPORT_PAGE: usize = 10_000;

type Reply = Result<HttpResponse, Error>;

/// `DELETE /_mxmedia/admin/v1/media/{serverName}/{mediaId}`: `{"deleted": bool}`, whether
/// anything was stored under that id. Blocked either way.
pub async fn delete_media(
    state: web::Data<AppState>,
    admin: AdminUser,
    path: web::Path<(String, String)>,
) -> Reply {
    let key = MediaKey {
        server_name: parse_server_name(&path.0)?,
        media_id: parse_media_id(&path.1)?,
    };
    let deleted = state.media.block(&key, &admin.user.user_id).await?;
    Ok(HttpResponse::Ok().json(json!({ "deleted": deleted })))
}

/// A sha256 as lowercase hex, or 400.
fn parse_sha256(raw: &str) -> Result<String, Error> {
    let trimmed = raw.trim();
    if trimmed.len() == 64 && trimmed.bytes().all(|b| b.is_ascii_hexdigit()) {
        Ok(trimmed.to_ascii_lowercase())
    } else {
        Err(Error::InvalidParam(
            "A sha256 is 64 hexadecimal characters".into(),
        ))
    }
}

/// `POST /_mxmedia/admin/v1/quarantine/hash/{sha256}`: `{"added": bool, "quarantined_media": n}`.
pub async fn add_hash(
    state: web::Data<AppState>,
    admin: AdminUser,
    path: web::Path<String>,
) -> Reply {
    let sha256 = parse_sha256(&path)?;
    let (added, items) = state
        .media
        .quarantine_hashes(vec![sha256], &admin.user.user_id)
        .await?;
    Ok(HttpResponse::Ok().json(json!({ "added": added > 0, "quarantined_media": items })))
}

/// `GET /_mxmedia/admin/v1/quarantine/hash/{sha256}`: who quarantined these bytes, and when.
pub async fn get_hash(
    state: web::Data<AppState>,
    _admin: AdminUser,
    path: web::Path<String>,
) -> Reply {
    let sha256 = parse_sha256(&path)?;
    let record = state
        .media
        .hash_quarantine(sha256.clone())
        .await?
        .ok_or(Error::NotFound)?;
    Ok(HttpResponse::Ok().json(json!({
        "sha256": sha256,
        "quarantined_by": record.by,
        "quarantined_ts": record.at,
    })))
}

/// `DELETE /_mxmedia/admin/v1/quarantine/hash/{sha256}`: `{"removed": bool, "released_media": n}`.
pub async fn remove_hash(
    state: web::Data<AppState>,
    admin: AdminUser,
    path: web::Path<String>,
) -> Reply {
    let sha256 = parse_sha256(&path)?;
    let (removed, items) = state
        .media
        .unquarantine_hashes(vec![sha256], &admin.user.user_id)
        .await?;
    Ok(HttpResponse::Ok().json(json!({ "removed": removed > 0, "released_media": items })))
}

/// `GET /_mxmedia/admin/v1/quarantine/hashes`: the whole list, `text/plain`, one hash a line.
pub async fn export_hashes(state: web::Data<AppState>, _admin: AdminUser) -> Reply {
    let mut out = String::new();
    let mut after: Option<String> = None;
    loop {
        let page = state
            .media
            .quarantined_hashes(after.clone(), EXPORT_PAGE)
            .await?;
        for sha256 in &page {
            out.push_str(sha256);
            out.push('\n');
        }
        match page.last() {
            Some(last) if page.len() == EXPORT_PAGE => after = Some(last.clone()),
            _ => break,
        }
    }
    Ok(HttpResponse::Ok()
        .content_type("text/plain; charset=utf-8")
        .body(out))
}

/// `POST /_mxmedia/admin/v1/quarantine/hashes`: adds every hash of a plain-text list (one per
/// line; blank lines and `#` comments skipped). A malformed line refuses the whole list, so an
/// import is all or nothing. `{"added": n, "quarantined_media": m}`.
pub async fn import_hashes(
    state: web::Data<AppState>,
    admin: AdminUser,
    mut body: web::Payload,
) -> Reply {
    let mut raw = Vec::new();
    while let Some(chunk) = body.next().await {
        let chunk = chunk.map_err(|_| {
            Error::InvalidParam("The hash list could not be read to the end".into())
        })?;
        if raw.len() + chunk.len() > MAX_IMPORT_BYTES {
            return Err(Error::TooLarge(format!(
                "A hash list may hold at most {MAX_IMPORT_BYTES} bytes"
            )));
        }
        raw.extend_from_slice(&chunk);
    }
    let text = std::str::from_utf8(&raw)
        .map_err(|_| Error::InvalidParam("The hash list is not UTF-8 text".into()))?;
    let mut hashes = Vec::new();
    for (number, line) in (1u64..).zip(text.lines()) {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        hashes.push(
            parse_sha256(line)
                .map_err(|_| Error::InvalidParam(format!("Line {number} is not a hex sha256")))?,
        );
    }
    let (added, items) = state
        .media
        .quarantine_hashes(hashes, &admin.user.user_id)
        .await?;
    Ok(HttpResponse::Ok().json(json!({ "added": added, "quarantined_media": items })))
}

/// `GET /_mxmedia/admin/v1/users/{userId}/quota`.
pub async fn get_quota(
    state: web::Data<AppState>,
    _admin: AdminUser,
    path: web::Path<String>,
) -> Reply {
    quota_reply(&state, &path).await
}

/// `PUT /_mxmedia/admin/v1/users/{userId}/quota` with `{"max_bytes": n|null, "max_files": n|null}`.
pub async fn set_quota(
    state: web::Data<AppState>,
    admin: AdminUser,
    path: web::Path<String>,
    body: web::Bytes,
) -> Reply {
    let limits: QuotaOverride = serde_json::from_slice(&body).map_err(|_| {
        Error::NotJson(
            "Expected {\"max_bytes\": integer or null, \"max_files\": integer or null}".into(),
        )
    })?;
    state
        .media
        .set_quota(&path, Some(limits), &admin.user.user_id)
        .await?;
    quota_reply(&state, &path).await
}

/// `DELETE /_mxmedia/admin/v1/users/{userId}/quota`: back to the configured limits.
pub async fn reset_quota(
    state: web::Data<AppState>,
    admin: AdminUser,
    path: web::Path<String>,
) -> Reply {
    state
        .media
        .set_quota(&path, None, &admin.user.user_id)
        .await?;
    quota_reply(&state, &path).await
}

async fn quota_reply(state: &AppState, user: &str) -> Reply {
    let (limits, usage, admin) = state.media.quota(user).await?;
    Ok(HttpResponse::Ok().json(json!({
        "user_id": user,
        "max_bytes": limits.max_bytes,
        "max_files": limits.max_files,
        "bytes": usage.bytes,
        "files": usage.files,
        "override": admin,
    })))
}
