//! The media admin API: removing media for good. Only users listed in `auth.admins` may call it.
//!
//! Our own paths, and the two Synapse admin paths moderation tools call, so that pointing
//! `/_synapse/admin/v1/media/` at mxmedia keeps them working:
//! - `DELETE /_mxmedia/admin/v1/media/{serverName}/{mediaId}`
//! - `DELETE /_synapse/admin/v1/media/{serverName}/{mediaId}`
//! - `POST /_synapse/admin/v1/media/quarantine/{serverName}/{mediaId}`
//!
//! Each deletes the media (local or remote) with its thumbnails and blocks the id: it answers
//! 404 from then on and a remote id is never fetched again. Synapse's quarantine keeps the bytes;
//! here they go, which is what a takedown needs.

use actix_web::{HttpResponse, web};
use serde_json::json;

use super::extract::AuthedUser;
use crate::{
    error::Error,
    http::extract::{parse_media_id, parse_server_name},
    model::id::MediaKey,
    state::AppState,
};

/// `DELETE /_mxmedia/admin/v1/media/{serverName}/{mediaId}`: `{"deleted": bool}`, whether
/// anything was stored under that id. Blocked either way.
pub async fn delete_media(
    state: web::Data<AppState>,
    user: AuthedUser,
    path: web::Path<(String, String)>,
) -> Result<HttpResponse, Error> {
    let deleted = block(&state, user, &path).await?;
    Ok(HttpResponse::Ok().json(json!({ "deleted": deleted })))
}

/// `DELETE /_synapse/admin/v1/media/{serverName}/{mediaId}`, answered as Synapse does.
pub async fn synapse_delete_media(
    state: web::Data<AppState>,
    user: AuthedUser,
    path: web::Path<(String, String)>,
) -> Result<HttpResponse, Error> {
    let deleted = block(&state, user, &path).await?;
    let ids: Vec<&str> = if deleted { vec![&path.1] } else { Vec::new() };
    Ok(HttpResponse::Ok().json(json!({ "deleted_media": ids, "total": ids.len() })))
}

/// `POST /_synapse/admin/v1/media/quarantine/{serverName}/{mediaId}`: `{}`.
pub async fn synapse_quarantine_media(
    state: web::Data<AppState>,
    user: AuthedUser,
    path: web::Path<(String, String)>,
) -> Result<HttpResponse, Error> {
    block(&state, user, &path).await?;
    Ok(HttpResponse::Ok().json(json!({})))
}

async fn block(state: &AppState, user: AuthedUser, path: &(String, String)) -> Result<bool, Error> {
    let user = user.not_guest()?;
    if !state.config.auth.admins.contains(&user.user_id) {
        return Err(Error::Forbidden("You are not a media admin".into()));
    }
    let key = MediaKey {
        server_name: parse_server_name(&path.0)?,
        media_id: parse_media_id(&path.1)?,
    };
    state.media.block(&key, &user.user_id).await
}
