//! Upload endpoints: direct (`POST /upload`) and asynchronous (`POST /create`, then `PUT`).

use std::{
    cell::Cell,
    pin::Pin,
    rc::Rc,
    task::{Context, Poll},
    time::Duration,
};

use actix_web::{HttpRequest, HttpResponse, http::header, web};
use futures_util::Stream;
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
    let body = IdleLimited::new(body, &state);
    let stalled = body.stalled();
    let key = match state.media.upload(&user.user_id, info, body).await {
        Ok(key) => key,
        Err(_) if stalled.get() => return Ok(stalled_response(&state)),
        Err(e) => return Err(e),
    };
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
    let body = IdleLimited::new(body, &state);
    let stalled = body.stalled();
    match state.media.put(&user.user_id, &key, info, body).await {
        Ok(()) => {}
        Err(_) if stalled.get() => return Ok(stalled_response(&state)),
        Err(e) => return Err(e),
    }
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

/// An upload body that ends in an error once no byte has arrived for
/// `http.body_idle_timeout_secs`, so a client trickling nothing cannot hold a connection and a
/// temp file for ever: the upload fails like any interrupted one, removing its temp file.
struct IdleLimited {
    body: web::Payload,
    idle: Duration,
    timer: Pin<Box<tokio::time::Sleep>>,
    /// `http.body_min_rate`, checked at every chunk once `idle` has passed since `started`.
    min_rate: u64,
    started: tokio::time::Instant,
    received: u64,
    stalled: Rc<Cell<bool>>,
}

#[derive(Debug, thiserror::Error)]
enum BodyError {
    #[error("no body bytes for {0:?}")]
    Idle(Duration),
    #[error("body arriving at under {0} bytes/s")]
    TooSlow(u64),
    #[error(transparent)]
    Payload(#[from] actix_web::error::PayloadError),
}

impl IdleLimited {
    fn new(body: web::Payload, state: &AppState) -> Self {
        let idle = Duration::from_secs(state.config.http.body_idle_timeout_secs);
        Self {
            body,
            idle,
            timer: Box::pin(tokio::time::sleep(idle)),
            min_rate: state.config.http.body_min_rate.as_u64(),
            started: tokio::time::Instant::now(),
            received: 0,
            stalled: Rc::default(),
        }
    }

    /// Set once the body stalled: the upload's failure is then the client's silence.
    fn stalled(&self) -> Rc<Cell<bool>> {
        Rc::clone(&self.stalled)
    }
}

impl Stream for IdleLimited {
    type Item = Result<web::Bytes, BodyError>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let this = &mut *self;
        if this.stalled.get() {
            return Poll::Ready(None);
        }
        match Pin::new(&mut this.body).poll_next(cx) {
            Poll::Ready(Some(Ok(chunk))) => {
                let now = tokio::time::Instant::now();
                this.received += u64::try_from(chunk.len()).unwrap_or(u64::MAX);
                let elapsed = now.duration_since(this.started);
                if elapsed > this.idle
                    && u128::from(this.received) * 1000
                        < u128::from(this.min_rate) * elapsed.as_millis()
                {
                    this.stalled.set(true);
                    return Poll::Ready(Some(Err(BodyError::TooSlow(this.min_rate))));
                }
                this.timer.as_mut().reset(now + this.idle);
                Poll::Ready(Some(Ok(chunk)))
            }
            Poll::Ready(item) => Poll::Ready(item.map(|chunk| chunk.map_err(BodyError::from))),
            Poll::Pending if this.timer.as_mut().poll(cx).is_ready() => {
                this.stalled.set(true);
                Poll::Ready(Some(Err(BodyError::Idle(this.idle))))
            }
            Poll::Pending => Poll::Pending,
        }
    }
}

/// 408 and a closed connection: the rest of the body is never read.
fn stalled_response(state: &AppState) -> HttpResponse {
    let http = &state.config.http;
    HttpResponse::RequestTimeout().force_close().json(json!({
        "errcode": "M_UNKNOWN",
        "error": format!(
            "The upload body stalled: nothing for {} s, or under {} bytes/s",
            http.body_idle_timeout_secs,
            http.body_min_rate.as_u64()
        ),
    }))
}
