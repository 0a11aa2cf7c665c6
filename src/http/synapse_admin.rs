//! Synapse's admin media API, answered as Synapse answers it (paths, parameters, shapes,
//! errors), so the scripts, command-line tools and admin panels that speak it keep working
//! with `/_synapse/admin/v1/...media...` routed to mxmedia. Callers must be server admins
//! (`extract::AdminUser`). See Synapse's docs/admin_api/media_admin_api.md,
//! user_admin_api.md ("User media") and statistics.md.
//!
//! Where mxmedia differs on purpose: deleting one id also takes remote media and blocks the id
//! for good (`DELETE /media/{serverName}/{mediaId}`); delete-by-age counts from creation (local
//! media has no access time here) and refuses `keep_profiles=true`, since mxmedia cannot tell
//! which media are avatars; quarantine also quarantines the bytes, so later remote fetches of
//! them are quarantined as well.

mod params;

use actix_web::{HttpRequest, HttpResponse, web};
use serde_json::{Value, json};

use self::params::{Params, before_ts, local_user, media_key};
use super::extract::{AdminUser, app_state, parse_media_id, parse_server_name};
use crate::{
    error::Error,
    media::inventory::{MediaInfo, MediaOrder, Page, UsageFilter, UserOrder},
    model::id::MediaKey,
    state::AppState,
};

type Reply = Result<HttpResponse, Error>;

/// `GET /_synapse/admin/v1/media/{serverName}/{mediaId}`: `{"media_info": {...}}`.
pub async fn media_info(
    state: web::Data<AppState>,
    _admin: AdminUser,
    path: web::Path<(String, String)>,
) -> Reply {
    let key = media_key(&path.0, &path.1)?;
    let info = state.media.media_info(&key).await?.ok_or(Error::NotFound)?;
    let mut body = item_json(&info);
    if let Value::Object(fields) = &mut body {
        fields.insert("media_origin".into(), json!(key.server_name.as_str()));
        fields.insert(
            "user_id".into(),
            // A URL preview's image is nobody's upload.
            json!(
                (info.local && !info.meta.is_preview_image())
                    .then_some(info.meta.uploader.as_str())
            ),
        );
        fields.insert(
            "filesystem_id".into(),
            json!((!info.local).then_some(info.sha256()).flatten()),
        );
        fields.insert("url_cache".into(), Value::Null);
        fields.insert("authenticated".into(), json!(true));
        fields.insert("sha256".into(), json!(info.sha256()));
        if !info.local {
            // Synapse keeps no protection for cached remote media.
            fields.insert("safe_from_quarantine".into(), Value::Null);
        }
    }
    Ok(HttpResponse::Ok().json(json!({ "media_info": body })))
}

/// One media item as Synapse's user media list shows it.
fn item_json(info: &MediaInfo) -> Value {
    json!({
        "created_ts": info.meta.created_at,
        "last_access_ts": info.last_access_ts,
        "media_id": info.key.media_id.as_str(),
        "media_length": info.media_length(),
        "media_type": info.content_type(),
        "quarantined_by": info.quarantine.quarantined.as_ref().map(|q| q.by.as_str()),
        "safe_from_quarantine": info.quarantine.protected,
        "upload_name": info.upload_name(),
    })
}

/// `DELETE /_synapse/admin/v1/media/{serverName}/{mediaId}`: removes the media (local or
/// remote) for good and blocks the id; `{"deleted_media": [...], "total": n}`.
pub async fn delete_media(
    state: web::Data<AppState>,
    admin: AdminUser,
    path: web::Path<(String, String)>,
) -> Reply {
    let key = media_key(&path.0, &path.1)?;
    let deleted = state.media.block(&key, &admin.user.user_id).await?;
    let ids: Vec<&str> = if deleted { vec![&path.1] } else { Vec::new() };
    Ok(HttpResponse::Ok().json(json!({ "deleted_media": ids, "total": ids.len() })))
}

/// `POST /_synapse/admin/v1/media/quarantine/{serverName}/{mediaId}`: `{}`.
pub async fn quarantine_media(
    state: web::Data<AppState>,
    admin: AdminUser,
    path: web::Path<(String, String)>,
) -> Reply {
    let key = media_key(&path.0, &path.1)?;
    let target = key.to_string();
    state
        .media
        .quarantine(vec![key], &admin.user.user_id, "quarantine", &target)
        .await?;
    Ok(HttpResponse::Ok().json(json!({})))
}

/// `POST /_synapse/admin/v1/media/unquarantine/{serverName}/{mediaId}`: `{}`.
pub async fn unquarantine_media(
    state: web::Data<AppState>,
    admin: AdminUser,
    path: web::Path<(String, String)>,
) -> Reply {
    let key = media_key(&path.0, &path.1)?;
    state.media.unquarantine(&key, &admin.user.user_id).await?;
    Ok(HttpResponse::Ok().json(json!({})))
}

/// `POST /_synapse/admin/v1/media/protect/{mediaId}`: `{}`.
pub async fn protect_media(
    state: web::Data<AppState>,
    admin: AdminUser,
    path: web::Path<String>,
) -> Reply {
    protect(&state, &admin, &path, true).await
}

/// `POST /_synapse/admin/v1/media/unprotect/{mediaId}`: `{}`.
pub async fn unprotect_media(
    state: web::Data<AppState>,
    admin: AdminUser,
    path: web::Path<String>,
) -> Reply {
    protect(&state, &admin, &path, false).await
}

async fn protect(state: &AppState, admin: &AdminUser, media_id: &str, protected: bool) -> Reply {
    let key = MediaKey {
        server_name: state.media.server_name().clone(),
        media_id: parse_media_id(media_id)?,
    };
    // An unknown id changes nothing and answers `{}`, as in Synapse.
    state
        .media
        .protect(&key, protected, &admin.user.user_id)
        .await?;
    Ok(HttpResponse::Ok().json(json!({})))
}

/// `POST /_synapse/admin/v1/user/{userId}/media/quarantine`: `{"num_quarantined": n}`.
pub async fn quarantine_user_media(
    state: web::Data<AppState>,
    admin: AdminUser,
    path: web::Path<String>,
) -> Reply {
    let user = path.into_inner();
    let media = state
        .media
        .user_media(
            &user,
            MediaOrder::MediaId,
            Page {
                from: 0,
                limit: usize::MAX,
                backwards: false,
            },
        )
        .await?
        .0
        .into_iter()
        .map(|info| info.key)
        .collect();
    let count = state
        .media
        .quarantine(media, &admin.user.user_id, "quarantine_user", &user)
        .await?;
    Ok(HttpResponse::Ok().json(json!({ "num_quarantined": count })))
}

/// `POST /_synapse/admin/v1/room/{roomId}/media/quarantine` (and the legacy
/// `/quarantine_media/{roomId}`): the homeserver lists the room's media, mxmedia quarantines it.
pub async fn quarantine_room_media(
    req: HttpRequest,
    admin: AdminUser,
    path: web::Path<String>,
) -> Reply {
    let (state, worker) = app_state(&req)?;
    let room = path.into_inner();
    let media = state
        .auth
        .room_media(&worker.http, &admin.token, &room)
        .await?;
    let count = state
        .media
        .quarantine(media, &admin.user.user_id, "quarantine_room", &room)
        .await?;
    Ok(HttpResponse::Ok().json(json!({ "num_quarantined": count })))
}

fn user_media_order(params: &Params) -> Result<(MediaOrder, Page), Error> {
    let order = match params.str("order_by") {
        None => MediaOrder::CreatedTs,
        Some(raw) => MediaOrder::parse(raw).ok_or_else(|| {
            Error::InvalidParam(
                "Query parameter \"order_by\" must be one of ['media_id', 'upload_name', \
                 'created_ts', 'last_access_ts', 'media_length', 'media_type', \
                 'quarantined_by', 'safe_from_quarantine']"
                    .into(),
            )
        })?,
    };
    let mut page = params.page()?;
    // Neither given: newest first, as Synapse lists.
    if params.str("order_by").is_none() && params.str("dir").is_none() {
        page.backwards = true;
    }
    Ok((order, page))
}

/// `GET /_synapse/admin/v1/users/{userId}/media`: `{"media": [...], "next_token"?, "total"}`.
pub async fn list_user_media(
    req: HttpRequest,
    state: web::Data<AppState>,
    _admin: AdminUser,
    path: web::Path<String>,
) -> Reply {
    let user = local_user(&state, &path)?;
    let params = Params::of(&req)?;
    let (order, page) = user_media_order(&params)?;
    let (items, total) = state.media.user_media(&user, order, page).await?;
    let listed = items.iter().map(item_json).collect();
    Ok(HttpResponse::Ok().json(paged("media", listed, page, total)))
}

/// `DELETE /_synapse/admin/v1/users/{userId}/media`: deletes the page the same parameters
/// would list; `{"deleted_media": [...], "total": n}`.
pub async fn delete_user_media(
    req: HttpRequest,
    state: web::Data<AppState>,
    admin: AdminUser,
    path: web::Path<String>,
) -> Reply {
    let user = local_user(&state, &path)?;
    let params = Params::of(&req)?;
    let (order, page) = user_media_order(&params)?;
    let (items, _) = state.media.user_media(&user, order, page).await?;
    let keys = items.into_iter().map(|info| info.key).collect();
    let deleted = state
        .media
        .delete_many(keys, &admin.user.user_id, "delete_user_media", &user)
        .await?;
    Ok(deleted_reply(&deleted))
}

/// A page in Synapse's shape: the items under `name`, `total`, and `next_token` (the offset of
/// the next page) unless this is the last.
fn paged(name: &str, items: Vec<Value>, page: Page, total: usize) -> Value {
    let next = page.from.saturating_add(items.len());
    let mut body = serde_json::Map::new();
    body.insert(name.to_owned(), Value::Array(items));
    body.insert("total".into(), json!(total));
    if next < total {
        body.insert("next_token".into(), json!(next));
    }
    Value::Object(body)
}

fn deleted_reply(deleted: &[MediaKey]) -> HttpResponse {
    let ids: Vec<&str> = deleted.iter().map(|k| k.media_id.as_str()).collect();
    HttpResponse::Ok().json(json!({ "deleted_media": ids, "total": ids.len() }))
}

/// `POST /_synapse/admin/v1/media/delete?before_ts=&size_gt=&keep_profiles=`.
pub async fn delete_old_media(
    req: HttpRequest,
    state: web::Data<AppState>,
    admin: AdminUser,
) -> Reply {
    delete_old(&req, &state, &admin).await
}

/// `POST /_synapse/admin/v1/media/{serverName}/delete`, the path before Synapse 1.78.
pub async fn delete_old_media_legacy(
    req: HttpRequest,
    state: web::Data<AppState>,
    admin: AdminUser,
    path: web::Path<String>,
) -> Reply {
    if parse_server_name(&path)? != *state.media.server_name() {
        return Err(Error::InvalidParam("Can only delete local media".into()));
    }
    delete_old(&req, &state, &admin).await
}

async fn delete_old(req: &HttpRequest, state: &AppState, admin: &AdminUser) -> Reply {
    let params = Params::of(req)?;
    let before = before_ts(&params)?;
    let size_gt = params.uint("size_gt")?.unwrap_or(0);
    if params.bool("keep_profiles", true)? {
        return Err(Error::InvalidParam(
            "mxmedia cannot tell which media are profile pictures or room avatars, so it \
             cannot keep them: pass keep_profiles=false to delete those too"
                .into(),
        ));
    }
    let old = state.media.old_local_media(before, size_gt).await?;
    let target = format!("before_ts={before} size_gt={size_gt}");
    let deleted = state
        .media
        .delete_many(old, &admin.user.user_id, "delete_old_media", &target)
        .await?;
    Ok(deleted_reply(&deleted))
}

/// `POST /_synapse/admin/v1/purge_media_cache?before_ts=`: `{"deleted": n}`.
pub async fn purge_media_cache(
    req: HttpRequest,
    state: web::Data<AppState>,
    admin: AdminUser,
) -> Reply {
    let params = Params::of(&req)?;
    let before = before_ts(&params)?;
    let deleted = state
        .media
        .purge_remote(before, &admin.user.user_id)
        .await?;
    Ok(HttpResponse::Ok().json(json!({ "deleted": deleted })))
}

/// `GET /_synapse/admin/v1/statistics/users/media`: `{"users": [...], "next_token"?, "total"}`.
pub async fn user_media_statistics(
    req: HttpRequest,
    state: web::Data<AppState>,
    _admin: AdminUser,
) -> Reply {
    let params = Params::of(&req)?;
    let page = params.page()?;
    let order = match params.str("order_by") {
        None => UserOrder::UserId,
        Some(raw) => UserOrder::parse(raw).ok_or_else(|| {
            Error::InvalidParam(
                "Query parameter \"order_by\" must be one of ['user_id', 'displayname', \
                 'media_length', 'media_count']"
                    .into(),
            )
        })?,
    };
    let filter = UsageFilter {
        from_ts: params.uint("from_ts")?,
        until_ts: params.uint("until_ts")?,
        search_term: params.str("search_term").map(str::to_owned),
    };
    if let (Some(from), Some(until)) = (filter.from_ts, filter.until_ts)
        && until < from
    {
        return Err(Error::InvalidParam(
            "Query parameter until_ts must be greater than from_ts.".into(),
        ));
    }
    if filter.search_term.as_deref() == Some("") {
        return Err(Error::InvalidParam(
            "Query parameter search_term cannot be empty.".into(),
        ));
    }
    let (users, total) = state.media.usage(filter, order, page).await?;
    let listed = users
        .iter()
        .map(|u| {
            json!({
                // No display names here; the user id is what an admin can act on.
                "displayname": u.user_id,
                "media_count": u.media_count,
                "media_length": u.media_length,
                "user_id": u.user_id,
            })
        })
        .collect();
    Ok(HttpResponse::Ok().json(paged("users", listed, page, total)))
}
