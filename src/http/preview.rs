//! The URL preview endpoint, authenticated (v1.11) and deprecated (`/_matrix/media/v3`) alike.

use actix_web::{FromRequest as _, HttpRequest, HttpResponse, http::header, web};
use serde::Deserialize;

use super::extract::{AuthedUser, app_state};
use crate::error::Error;

#[derive(Deserialize)]
pub struct PreviewQuery {
    url: Option<String>,
    ts: Option<i64>,
}

/// # `GET /_matrix/client/v1/media/preview_url`
///
/// With previews off this answers 404 `M_UNRECOGNIZED` before authentication, as if the
/// endpoint did not exist (Synapse's answer too).
pub async fn preview_url(req: HttpRequest) -> Result<HttpResponse, Error> {
    let (state, worker) = app_state(&req)?;
    if !state.preview.enabled() {
        return Err(Error::Unrecognized);
    }
    let user = AuthedUser::extract(&req).await?.not_guest()?;
    let query = web::Query::<PreviewQuery>::from_query(req.query_string())
        .map_err(|e| Error::InvalidParam(format!("Invalid query parameter: {e}")))?;
    let url = query
        .url
        .as_deref()
        .ok_or_else(|| Error::MissingParam("Missing url parameter".into()))?;
    let json = state
        .preview
        .preview(worker.preview.as_ref(), &user.user_id, url, query.ts)
        .await?;
    Ok(HttpResponse::Ok()
        .insert_header((header::CONTENT_TYPE, "application/json"))
        .body(json))
}
