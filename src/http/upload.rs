//! Upload endpoints: direct (`POST /upload`) and asynchronous (`POST /create`, then `PUT`).
//!
//! An upload refused before its body is read to the end (too large, over quota, rate limited)
//! still has its client sending. Closing the connection then would make the client's kernel
//! see a reset, which discards the error reply it has not read yet: the user sees a broken
//! pipe instead of `M_TOO_LARGE`. So the rest of a refused body is read and thrown away first,
//! bounded in bytes and time and under the same idle and minimum-rate limits as any body
//! (`drain_refused`); a body beyond those bounds is answered and the connection closed after
//! actix's short linger (`client_disconnect_timeout`, 1 s), never drained without end.

use std::{
    pin::Pin,
    task::{Context, Poll},
    time::Duration,
};

use actix_web::{
    HttpRequest, HttpResponse, ResponseError as _,
    body::{BodySize, BoxBody, MessageBody},
    http::{ConnectionType, header},
    web,
};
use futures_util::{Stream, StreamExt as _};
use serde::Deserialize;
use serde_json::json;

use super::extract::{AuthedUser, MediaPath};
use crate::{error::Error, media::UploadInfo, state::AppState};

/// Most body bytes read and thrown away after an upload is refused: a client announcing more
/// than this beyond what was read gets its answer at once and a closed connection.
const DRAIN_MAX_BYTES: u64 = 64 * 1024 * 1024;
/// Longest a refused body is read for before the answer goes out anyway.
const DRAIN_MAX_TIME: Duration = Duration::from_secs(10);

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
    let declared_len = info.declared_len;
    let mut body = IdleLimited::new(body, &state);
    let key = match state.media.upload(&user.user_id, info, &mut body).await {
        Ok(key) => key,
        Err(e) => return Ok(refused(e, body, declared_len, &state).await),
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
    let declared_len = info.declared_len;
    let mut body = IdleLimited::new(body, &state);
    if let Err(e) = state.media.put(&user.user_id, &key, info, &mut body).await {
        return Ok(refused(e, body, declared_len, &state).await);
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
    /// Set once the whole body has arrived.
    ended: bool,
    /// Set once the body stalled: the upload's failure is then the client's silence.
    stalled: bool,
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
            ended: false,
            stalled: false,
        }
    }
}

impl Stream for IdleLimited {
    type Item = Result<web::Bytes, BodyError>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let this = &mut *self;
        if this.stalled {
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
                    this.stalled = true;
                    return Poll::Ready(Some(Err(BodyError::TooSlow(this.min_rate))));
                }
                this.timer.as_mut().reset(now + this.idle);
                Poll::Ready(Some(Ok(chunk)))
            }
            Poll::Ready(None) => {
                this.ended = true;
                Poll::Ready(None)
            }
            Poll::Ready(Some(Err(e))) => Poll::Ready(Some(Err(BodyError::from(e)))),
            Poll::Pending if this.timer.as_mut().poll(cx).is_ready() => {
                this.stalled = true;
                Poll::Ready(Some(Err(BodyError::Idle(this.idle))))
            }
            Poll::Pending => Poll::Pending,
        }
    }
}

/// The answer to an upload that failed with `error`: 408 if the body stalled, else `error`,
/// given once what is left of the body is drained (`drain_refused`). A body not read to its end
/// is kept alive by the answer's body (`HoldingBody`), so actix, once the answer is sent, sees
/// it unread and closes the connection after its linger, instead of reading the rest (which
/// it would do for a chunked body, without end).
async fn refused(
    error: Error,
    mut body: IdleLimited,
    declared_len: Option<u64>,
    state: &AppState,
) -> HttpResponse {
    if !body.stalled {
        drain_refused(&mut body, declared_len).await;
    }
    let mut response = if body.stalled {
        stalled_response(state)
    } else {
        error.error_response()
    };
    if body.ended {
        return response;
    }
    response
        .head_mut()
        .set_connection_type(ConnectionType::Close);
    response
        .map_body(|_, answer| HoldingBody {
            answer,
            _unread: body,
        })
        .map_into_boxed_body()
}

/// An answer that keeps the request body it refused alive until the answer is sent; see
/// `refused`.
struct HoldingBody {
    answer: BoxBody,
    _unread: IdleLimited,
}

impl MessageBody for HoldingBody {
    type Error = <BoxBody as MessageBody>::Error;

    fn size(&self) -> BodySize {
        self.answer.size()
    }

    fn poll_next(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<web::Bytes, Self::Error>>> {
        Pin::new(&mut self.get_mut().answer).poll_next(cx)
    }
}

/// Reads and throws away the rest of a refused body, so that the client, still sending, reads
/// the answer instead of a reset: at most `DRAIN_MAX_BYTES` for at most `DRAIN_MAX_TIME`,
/// nothing when the declared length says it would be more. Bytes arriving too slowly end it as
/// they would end an upload (`IdleLimited`).
async fn drain_refused(body: &mut IdleLimited, declared_len: Option<u64>) {
    if body.ended
        || declared_len.is_some_and(|len| len.saturating_sub(body.received) > DRAIN_MAX_BYTES)
    {
        return;
    }
    let limit = body.received.saturating_add(DRAIN_MAX_BYTES);
    let drained = tokio::time::timeout(DRAIN_MAX_TIME, async {
        while let Some(Ok(_)) = body.next().await {
            if body.received > limit {
                return;
            }
        }
    })
    .await;
    if drained.is_err() {
        tracing::debug!(
            received = body.received,
            "a refused upload body was still arriving after the drain time"
        );
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
