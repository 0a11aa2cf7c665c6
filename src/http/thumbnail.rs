//! Thumbnail endpoints, authenticated (v1.11) and deprecated (`/_matrix/media/v3`).
//!
//! `HEAD` answers from what is stored and never renders nor fetches: the headers `GET` would
//! send for a thumbnail (or original) already here, else 404 `M_NOT_FOUND`.

use std::time::Duration;

use actix_web::{HttpRequest, HttpResponse, http::Method as HttpMethod, web};
use mxmedia_image::{Method, UnknownMethod};
use serde::Deserialize;

use super::{
    client::Source,
    extract::{AuthedUser, MediaPath, parse_bool},
    response::{Caching, media_response, redirect},
};
use crate::{
    error::Error,
    model::{id::MediaKey, meta::Content, thumb::ThumbSpec},
    state::{AppState, WorkerState},
    thumbnail::Served,
};

#[derive(Deserialize)]
pub struct ThumbnailQuery {
    pub(super) width: Option<String>,
    pub(super) height: Option<String>,
    pub(super) method: Option<String>,
    pub(super) animated: Option<String>,
    pub(super) timeout_ms: Option<u64>,
    pub(super) allow_remote: Option<String>,
    /// Whether the client follows a `307` to the object store (MSC3860, Matrix v1.7).
    #[serde(alias = "com.beeper.msc3860.allow_redirect")]
    pub(super) allow_redirect: Option<String>,
}

impl ThumbnailQuery {
    pub(super) fn spec(&self) -> Result<ThumbSpec, Error> {
        let dimension = |name: &str, raw: &Option<String>| -> Result<u32, Error> {
            let raw = raw
                .as_deref()
                .ok_or_else(|| Error::MissingParam(format!("Missing {name}")))?;
            match raw.parse::<u32>() {
                Ok(n) if n > 0 => Ok(n),
                _ => Err(Error::InvalidParam(format!(
                    "{name} must be a positive integer"
                ))),
            }
        };
        let method = match self.method.as_deref() {
            None => Method::Scale,
            Some(name) => name
                .parse()
                .map_err(|e: UnknownMethod| Error::InvalidParam(e.to_string()))?,
        };
        Ok(ThumbSpec {
            width: dimension("width", &self.width)?,
            height: dimension("height", &self.height)?,
            method,
            animated: parse_bool("animated", self.animated.as_deref())?.unwrap_or(false),
        })
    }
}

/// # `GET /_matrix/client/v1/media/thumbnail/{serverName}/{mediaId}`
pub async fn get_content_thumbnail(
    req: HttpRequest,
    path: MediaPath,
    state: web::Data<AppState>,
    worker: web::Data<WorkerState>,
    user: AuthedUser,
    query: web::Query<ThumbnailQuery>,
) -> Result<HttpResponse, Error> {
    let source = Source::new(&state, &worker, true).for_user(&user.0.user_id);
    serve(&req, &state, &path, &query, source, Caching::Private).await
}

/// # `GET /_matrix/media/v3/thumbnail/{serverName}/{mediaId}` (deprecated, unauthenticated)
pub async fn get_content_thumbnail_legacy(
    req: HttpRequest,
    path: MediaPath,
    state: web::Data<AppState>,
    worker: web::Data<WorkerState>,
    query: web::Query<ThumbnailQuery>,
) -> Result<HttpResponse, Error> {
    let allow_remote =
        super::client::legacy_allowed(&state, &path, query.allow_remote.as_deref()).await?;
    let source = Source::new(&state, &worker, allow_remote);
    serve(&req, &state, &path, &query, source, Caching::Public).await
}

async fn serve(
    req: &HttpRequest,
    state: &AppState,
    path: &MediaPath,
    query: &ThumbnailQuery,
    source: Source<'_>,
    caching: Caching,
) -> Result<HttpResponse, Error> {
    if path.file_name().is_some() {
        return Err(Error::Unrecognized);
    }
    let key = path.key()?;
    let spec = query.spec()?;
    let allow_redirect =
        parse_bool("allow_redirect", query.allow_redirect.as_deref())?.unwrap_or(false);
    let (content, name) = if req.method() == HttpMethod::HEAD {
        stored_content(state, &key, spec, query.timeout_ms, &source).await?
    } else if state.media.is_local(&key.server_name) {
        thumbnail_content(state, &key, spec, query.timeout_ms).await?
    } else {
        let timeout = query.timeout_ms.map(Duration::from_millis);
        let (original, served) = state
            .media
            .remote_thumbnail(&key, spec, &source.remote()?, timeout, source.requester())
            .await?;
        served_content(original, served)
    };
    if let Some(redirected) = redirect(
        req,
        allow_redirect,
        &state.media,
        &content,
        "inline",
        Some(&name),
        caching,
    )
    .await?
    {
        return Ok(redirected);
    }
    let reader = state.media.open(&content).await?;
    media_response(req, &content, reader, "inline", Some(&name), caching)
}

/// The stored media to answer a thumbnail request of our own media with (a rendered thumbnail
/// or the original), and the file name to announce for it.
pub(super) async fn thumbnail_content(
    state: &AppState,
    key: &MediaKey,
    spec: ThumbSpec,
    timeout_ms: Option<u64>,
) -> Result<(Content, String), Error> {
    let timeout = timeout_ms.map(Duration::from_millis);
    let (original, served) = state.media.thumbnail(key, spec, timeout).await?;
    Ok(served_content(original, served))
}

/// What answers a `HEAD`: only what is stored, for local and remote media alike.
async fn stored_content(
    state: &AppState,
    key: &MediaKey,
    spec: ThumbSpec,
    timeout_ms: Option<u64>,
    source: &Source<'_>,
) -> Result<(Content, String), Error> {
    let stored = if state.media.is_local(&key.server_name) {
        let timeout = timeout_ms.map(Duration::from_millis);
        state.media.stored_thumbnail(key, spec, timeout).await?
    } else {
        // `allow_remote=false` makes remote media unknown, stored or not.
        source.remote()?;
        state.media.stored_remote_thumbnail(key, spec).await?
    };
    let (original, served) = stored.ok_or(Error::NotFound)?;
    Ok(served_content(original, served))
}

/// The stored media that answers a thumbnail request, and the file name to announce for it.
fn served_content(original: Content, served: Served) -> (Content, String) {
    let content = match served {
        Served::Original { content_type } => Content {
            content_type: content_type.to_owned(),
            ..original
        },
        Served::Thumbnail(record) => Content {
            content_type: record.content_type,
            filename: None,
            len: record.len,
            sha256: record.sha256,
        },
    };
    let name = format!("thumbnail.{}", extension(&content.content_type));
    (content, name)
}

fn extension(content_type: &str) -> &'static str {
    match content_type {
        "image/jpeg" => "jpg",
        "image/png" => "png",
        "image/gif" => "gif",
        "image/webp" => "webp",
        _ => "bin",
    }
}
