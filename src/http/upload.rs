//! Upload endpoints: direct (`POST /upload`) and asynchronous (`POST /create`, then `PUT`).

use actix_web::{HttpRequest, HttpResponse, http::header, web};
use serde::Deserialize;
use serde_json::json;

use super::extract::{AuthedUser, MediaPath};
use crate::{error::Error, media::UploadInfo, state::AppState};

#[derive(Deserialize)]
pub struct UploadQuery {
    filename: Option<String>,
}

/// # `POST /_matrix/media/v3/upload`
pub async fn create_content(
    req: HttpRequest,
    state: web::Data<AppState>,
    user: AuthedUser,
    query: web::Query<UploadQuery>,
    body: web::Payload,
) -> Result<HttpResponse, Error> {
    let user = user.not_guest()?;
    let info = upload_info(&req, query.into_inner())?;
    let key = state.media.upload(&user.user_id, info, body).await?;
    Ok(HttpResponse::Ok().json(json!({ "content_uri": key.to_string() })))
}

/// # `POST /_matrix/media/v1/create`
pub async fn create_mxc_uri(
    state: web::Data<AppState>,
    user: AuthedUser,
    body: web::Bytes,
) -> Result<HttpResponse, Error> {
    let user = user.not_guest()?;
    // The body is reserved for future use and should be `{}`; an empty body is tolerated.
    if !body.iter().all(u8::is_ascii_whitespace) {
        let value: serde_json::Value = serde_json::from_slice(&body)
            .map_err(|_| Error::NotJson("Body must be a JSON object".into()))?;
        if !value.is_object() {
            return Err(Error::NotJson("Body must be a JSON object".into()));
        }
    }
    let (key, expires_at) = state.media.create(&user.user_id).await?;
    Ok(HttpResponse::Ok()
        .json(json!({ "content_uri": key.to_string(), "unused_expires_at": expires_at })))
}

/// # `PUT /_matrix/media/v3/upload/{serverName}/{mediaId}`
pub async fn upload_content(
    req: HttpRequest,
    state: web::Data<AppState>,
    user: AuthedUser,
    path: MediaPath,
    query: web::Query<UploadQuery>,
    body: web::Payload,
) -> Result<HttpResponse, Error> {
    let user = user.not_guest()?;
    let key = path.key()?;
    let info = upload_info(&req, query.into_inner())?;
    state.media.put(&user.user_id, &key, info, body).await?;
    Ok(HttpResponse::Ok().json(json!({})))
}

fn upload_info(req: &HttpRequest, query: UploadQuery) -> Result<UploadInfo, Error> {
    let content_type = match req.headers().get(header::CONTENT_TYPE) {
        None => None,
        Some(v) => Some(
            v.to_str()
                .map_err(|_| Error::InvalidParam("Content-Type is not valid text".into()))?
                .to_owned(),
        ),
    };
    let declared_len = match req.headers().get(header::CONTENT_LENGTH) {
        None => None,
        Some(v) => Some(
            v.to_str()
                .ok()
                .and_then(|v| v.parse::<u64>().ok())
                .ok_or_else(|| Error::InvalidParam("Content-Length is not a number".into()))?,
        ),
    };
    let filename = query.filename.filter(|n| !n.is_empty());
    if filename
        .as_deref()
        .is_some_and(|n| n.chars().any(char::is_control) || n.len() > 1024)
    {
        return Err(Error::InvalidParam(
            "filename must be at most 1024 bytes without control characters".into(),
        ));
    }
    Ok(UploadInfo {
        content_type,
        filename,
        declared_len,
    })
}
