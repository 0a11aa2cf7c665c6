//! Federation media endpoints (Matrix 1.11): other servers fetch our media here, proving who
//! they are with an X-Matrix signature. Also the optional `/_matrix/key/v2/server`.

use std::{future::Future, pin::Pin};

use actix_web::{
    FromRequest, HttpRequest, HttpResponse,
    body::SizedStream,
    dev::Payload,
    http::header::{self, HeaderValue},
    web,
};
use bytes::Bytes;
use futures_util::{StreamExt as _, stream};
use mxmedia_proto::{ServerName, XMatrix, build_server_keys_response, verify_request};
use serde::Deserialize;

use super::{
    client::disposition,
    response::{Caching, blob_stream, content_disposition, content_type_header, direct_answer},
    thumbnail::{ThumbnailQuery, thumbnail_content},
};
use crate::{
    clock::now_ms,
    doctor::nonce::{NonceFile, QUERY_PARAM},
    error::Error,
    federation::keyring::{BUSY_RETRY_AFTER, FetchAllowance, KeyError},
    http::extract::parse_media_id,
    model::{id::MediaKey, meta::Content},
    state::{AppState, WorkerState},
};

/// The server a federation request comes from, its X-Matrix signature checked.
pub struct FederationOrigin(pub ServerName);

impl FromRequest for FederationOrigin {
    type Error = Error;
    type Future = Pin<Box<dyn Future<Output = Result<Self, Error>>>>;

    fn from_request(req: &HttpRequest, _: &mut Payload) -> Self::Future {
        let req = req.clone();
        Box::pin(async move {
            let (state, worker) = super::extract::app_state(&req)?;
            authenticate(&req, state, worker).await.map(Self)
        })
    }
}

/// X-Matrix headers looked at per request; the rest are ignored. A server sends one per key it
/// signs with ([spec: request authentication](https://spec.matrix.org/v1.16/server-server-api/#request-authentication)); Synapse and others send one. Each header may name an origin whose
/// keys we would have to discover and fetch, so an attacker's fifty are not fifty fetches.
pub const MAX_X_MATRIX_HEADERS: usize = 4;

/// Checks the request's X-Matrix credentials
/// (<https://spec.matrix.org/v1.16/server-server-api/#request-authentication>). With several
/// headers (one per key of the origin), the first that verifies wins. Only the first
/// `MAX_X_MATRIX_HEADERS` are tried, and together they may cause one key fetch.
async fn authenticate(
    req: &HttpRequest,
    state: &AppState,
    worker: &WorkerState,
) -> Result<ServerName, Error> {
    let credentials: Vec<&HeaderValue> = req
        .headers()
        .get_all(header::AUTHORIZATION)
        .filter(|v| {
            v.to_str()
                .is_ok_and(|v| v.len() >= 8 && v[..8].eq_ignore_ascii_case("X-Matrix"))
        })
        .take(MAX_X_MATRIX_HEADERS)
        .collect();
    if credentials.is_empty() {
        return Err(Error::Unauthorized(
            "Missing X-Matrix Authorization header".into(),
        ));
    }
    let ours = state.federation_identity.server_name.clone();
    // The signature covers the request target exactly as sent.
    let uri = req
        .uri()
        .path_and_query()
        .map_or_else(|| req.uri().path(), |pq| pq.as_str());
    let mut last = Error::Unauthorized("Invalid X-Matrix Authorization header".into());
    let mut allowance = FetchAllowance::default();
    let mut busy = false;
    for value in credentials {
        let Ok(auth) = value
            .to_str()
            .map_err(|_| ())
            .and_then(|v| XMatrix::parse(v).map_err(|_| ()))
        else {
            continue;
        };
        if auth.destination.as_ref().is_some_and(|d| *d != ours) {
            last = Error::Unauthorized("Request is not for this server".into());
            continue;
        }
        if auth.origin == ours && !doctor_self_test(req, state).await {
            // Our own key never signs requests to ourselves; refusing saves a pointless fetch.
            // The one exception is `mxmedia doctor` proving remote servers accept us.
            last = Error::Unauthorized("Request claims to come from this server".into());
            continue;
        }
        let key = match state
            .key_ring
            .verify_key(
                &state.federation,
                &worker.federation,
                &auth.origin,
                &auth.key,
                &mut allowance,
            )
            .await
        {
            Ok(key) => key,
            Err(KeyError::Busy) => {
                busy = true;
                continue;
            }
            Err(e) => {
                last = Error::Unauthorized(e.to_string());
                continue;
            }
        };
        match verify_request(&auth, &ours, req.method().as_str(), uri, None, &key) {
            Ok(()) => return Ok(auth.origin),
            Err(_) => last = Error::Unauthorized("Invalid X-Matrix signature".into()),
        }
    }
    // A genuine origin refused only for want of budget retries after a 429; a 401 would tell
    // it the signature is wrong.
    if busy {
        return Err(Error::RateLimited {
            retry_after: BUSY_RETRY_AFTER,
        });
    }
    Err(last)
}

/// Whether the request is `mxmedia doctor`'s signed request to our own public federation
/// path: its signed target carries the doctor nonce of this data dir. Only someone who can
/// write the data dir can make one, and the signature (checked next, with the keys our public
/// key endpoint serves) binds the nonce to this one request, so it lets nobody else in.
async fn doctor_self_test(req: &HttpRequest, state: &AppState) -> bool {
    let nonce = url::form_urlencoded::parse(req.query_string().as_bytes())
        .find(|(name, _)| name == QUERY_PARAM)
        .map(|(_, value)| value.into_owned());
    match nonce {
        Some(nonce) => {
            NonceFile::in_data_dir(&state.config.data_dir)
                .holds(&nonce, now_ms())
                .await
        }
        None => false,
    }
}

#[derive(Deserialize)]
pub struct DownloadQuery {
    timeout_ms: Option<u64>,
}

/// # `GET /_matrix/federation/v1/media/download/{mediaId}`
pub async fn get_content(
    state: web::Data<AppState>,
    origin: FederationOrigin,
    media_id: web::Path<String>,
    query: web::Query<DownloadQuery>,
) -> Result<HttpResponse, Error> {
    let key = local_key(&state, &media_id)?;
    let content = state
        .media
        .content(&key, query.timeout_ms.map(std::time::Duration::from_millis))
        .await?;
    tracing::debug!(origin = %origin.0, media = %key, "serving media over federation");
    let name = content.filename.clone();
    multipart(&state, &content, disposition(&content), name.as_deref()).await
}

/// # `GET /_matrix/federation/v1/media/thumbnail/{mediaId}`
pub async fn get_content_thumbnail(
    state: web::Data<AppState>,
    origin: FederationOrigin,
    media_id: web::Path<String>,
    query: web::Query<ThumbnailQuery>,
) -> Result<HttpResponse, Error> {
    let key = local_key(&state, &media_id)?;
    let spec = query.spec()?;
    let (content, name) = thumbnail_content(&state, &key, spec, query.timeout_ms).await?;
    tracing::debug!(origin = %origin.0, media = %key, "serving a thumbnail over federation");
    multipart(&state, &content, "inline", Some(&name)).await
}

/// Only our own media is served over federation; anything else is unknown here.
fn local_key(state: &AppState, media_id: &str) -> Result<MediaKey, Error> {
    Ok(MediaKey {
        server_name: state.federation_identity.server_name.clone(),
        media_id: parse_media_id(media_id)?,
    })
}

/// The two-part `multipart/mixed` answer ([spec: federation media download](https://spec.matrix.org/v1.16/server-server-api/#get_matrixfederationv1mediadownloadmediaid)): `{}` metadata, then the bytes, streamed
/// from the store with the total length declared up front; or, when the blob backend can serve
/// the bytes itself, the spec's second form: a `Location` to fetch them from, with the headers
/// we would have sent signed into it.
async fn multipart(
    state: &AppState,
    content: &Content,
    disposition: &str,
    disposition_name: Option<&str>,
) -> Result<HttpResponse, Error> {
    let boundary = mxmedia_proto::ids::MediaId::generate();
    let boundary = boundary.as_str();
    let metadata = format!(
        "\r\n--{boundary}\r\nContent-Type: application/json\r\n\r\n{{}}\r\n--{boundary}\r\n"
    );
    let tail = format!("\r\n--{boundary}--\r\n");
    let content_type = format!("multipart/mixed; boundary={boundary}");
    if state.media.redirects() {
        let answer = direct_answer(content, disposition, disposition_name, Caching::Private);
        if let Some(direct) = state.media.direct_url(content, answer).await? {
            return Ok(HttpResponse::Ok()
                .insert_header((header::CONTENT_TYPE, content_type))
                .body(format!("{metadata}Location: {}\r\n\r\n{tail}", direct.url)));
        }
    }
    let head = format!(
        "{metadata}Content-Type: {}\r\nContent-Disposition: {}\r\n\r\n",
        content_type_header(&content.content_type),
        content_disposition(disposition, disposition_name),
    );
    let total = content
        .len
        .saturating_add(u64::try_from(head.len() + tail.len()).unwrap_or(u64::MAX));
    let reader = state.media.open(content).await?;
    let body = stream::once(async move { Ok::<_, Error>(Bytes::from(head)) })
        .chain(blob_stream(reader, content.len))
        .chain(stream::once(async move { Ok(Bytes::from(tail)) }));
    Ok(HttpResponse::Ok()
        .insert_header((header::CONTENT_TYPE, content_type))
        .body(SizedStream::new(total, body)))
}

/// # `GET /_matrix/key/v2/server` (only with `federation.serve_server_keys`)
pub async fn server_keys(state: web::Data<AppState>) -> Result<HttpResponse, Error> {
    if !state.config.federation.serve_server_keys {
        return Err(Error::Unrecognized);
    }
    let identity = &state.federation_identity;
    // Published for a day, refreshed on every request: well past the spec's one-hour minimum.
    let valid_until = now_ms() + 24 * 3600 * 1000;
    let body = build_server_keys_response(
        &identity.server_name,
        std::slice::from_ref(&identity.key),
        Default::default(),
        valid_until,
    )
    .map_err(Error::internal)?;
    Ok(HttpResponse::Ok().json(body))
}
