//! Download and config endpoints, authenticated (v1.11) and deprecated (`/_matrix/media/v3`).
//!
//! `HEAD` on a download of remote media answers from the store only: a file not fetched yet is
//! 404 `M_NOT_FOUND` and its origin is not contacted.

use std::time::Duration;

use actix_web::{HttpRequest, HttpResponse, http::Method, web};
use serde::Deserialize;
use serde_json::json;

use super::{
    extract::{AuthedUser, MediaPath, parse_bool},
    response::{Caching, is_inline, live_response, media_response},
};
use crate::{
    error::Error,
    federation::media::MediaClient,
    media::remote::Download,
    model::meta::Content,
    state::{AppState, WorkerState},
};

#[derive(Deserialize)]
pub struct DownloadQuery {
    timeout_ms: Option<u64>,
    allow_remote: Option<String>,
}

/// # `GET /_matrix/client/v1/media/download/{serverName}/{mediaId}[/{fileName}]`
pub async fn get_content(
    req: HttpRequest,
    path: MediaPath,
    state: web::Data<AppState>,
    worker: web::Data<WorkerState>,
    user: AuthedUser,
    query: web::Query<DownloadQuery>,
) -> Result<HttpResponse, Error> {
    let source = Source::new(&state, &worker, true).for_user(&user.0.user_id);
    serve(&req, &state, &path, &query, source, Caching::Private).await
}

/// # `GET /_matrix/media/v3/download/{serverName}/{mediaId}[/{fileName}]` (deprecated)
pub async fn get_content_legacy(
    req: HttpRequest,
    path: MediaPath,
    state: web::Data<AppState>,
    worker: web::Data<WorkerState>,
    query: web::Query<DownloadQuery>,
) -> Result<HttpResponse, Error> {
    let allow_remote = legacy_allowed(&state, &path, query.allow_remote.as_deref()).await?;
    let source = Source::new(&state, &worker, allow_remote);
    serve(&req, &state, &path, &query, source, Caching::Public).await
}

/// The legacy download and thumbnail endpoints are frozen (Matrix v1.12): media is served there
/// only when the admin keeps the old behaviour on, or when it was imported from a server that
/// still served it there (uploaded before that server's freeze). Returns `allow_remote`
/// (default true).
pub(super) async fn legacy_allowed(
    state: &AppState,
    path: &MediaPath,
    allow_remote: Option<&str>,
) -> Result<bool, Error> {
    let allow_remote = parse_bool("allow_remote", allow_remote)?.unwrap_or(true);
    if state.config.media.legacy_unauthenticated_downloads {
        return Ok(allow_remote);
    }
    // A malformed id is frozen like any other: 404, as before.
    let imported = match path.key() {
        Ok(key) => state.media.served_unauthenticated(&key).await?,
        Err(_) => false,
    };
    if imported {
        Ok(allow_remote)
    } else {
        Err(Error::NotFound)
    }
}

/// Where media that is not ours may come from: its origin, unless the request forbids it.
pub(super) struct Source<'a> {
    state: &'a AppState,
    worker: &'a WorkerState,
    allow_remote: bool,
    /// Who asks, charged for the remote fetches the request starts; `None` on the legacy
    /// unauthenticated endpoints.
    requester: Option<&'a str>,
}

impl<'a> Source<'a> {
    pub(super) fn new(state: &'a AppState, worker: &'a WorkerState, allow_remote: bool) -> Self {
        Self {
            state,
            worker,
            allow_remote,
            requester: None,
        }
    }

    pub(super) fn for_user(self, user_id: &'a str) -> Self {
        Self {
            requester: Some(user_id),
            ..self
        }
    }

    pub(super) fn requester(&self) -> Option<&'a str> {
        self.requester
    }

    /// The client to fetch remote media with; `allow_remote=false` makes remote media unknown.
    pub(super) fn remote(&self) -> Result<MediaClient, Error> {
        if !self.allow_remote {
            return Err(Error::NotFound);
        }
        Ok(MediaClient {
            federation: self.state.federation.clone(),
            client: self.worker.federation.clone(),
            identity: self.state.federation_identity.clone(),
        })
    }
}

async fn serve(
    req: &HttpRequest,
    state: &AppState,
    path: &MediaPath,
    query: &DownloadQuery,
    source: Source<'_>,
    caching: Caching,
) -> Result<HttpResponse, Error> {
    let key = path.key()?;
    let timeout = query.timeout_ms.map(Duration::from_millis);
    let content = if state.media.is_local(&key.server_name) {
        state.media.content(&key, timeout).await?
    } else {
        let client = source.remote()?;
        if req.method() == Method::HEAD {
            state
                .media
                .stored_remote_content(&key)
                .await?
                .ok_or(Error::NotFound)?
        } else {
            match state
                .media
                .remote_download(&key, &client, timeout, source.requester())
                .await?
            {
                Download::Stored(content) => content,
                Download::Live(live) => {
                    let disposition = disposition_of(live.content_type());
                    let name = path.file_name().map(str::to_owned);
                    return Ok(live_response(req, live, disposition, name, caching));
                }
            }
        }
    };
    let reader = state.media.open(&content).await?;
    let name = path.file_name().or(content.filename.as_deref());
    media_response(req, &content, reader, disposition(&content), name, caching)
}

/// Inline for types browsers render safely, an attachment for everything else
/// (https://spec.matrix.org/v1.16/client-server-api/#serving-inline-content).
pub(super) fn disposition(content: &Content) -> &'static str {
    disposition_of(&content.content_type)
}

fn disposition_of(content_type: &str) -> &'static str {
    if is_inline(content_type) {
        "inline"
    } else {
        "attachment"
    }
}

/// # `GET /_matrix/client/v1/media/config`
///
/// With a quota on the caller, also its limits under MSC4034's unstable names
/// (<https://github.com/matrix-org/matrix-spec-proposals/pull/4034>, "Unstable prefix": the
/// new `/config` fields in the `org.matrix.msc4034` namespace); an unlimited one is left out,
/// as the MSC leaves a limit it does not know.
pub async fn get_media_config(
    state: web::Data<AppState>,
    user: AuthedUser,
) -> Result<HttpResponse, Error> {
    let user = user.not_guest()?;
    let (limits, _, _) = state.media.quota(&user.user_id).await?;
    let mut body = json!({ "m.upload.size": state.media.max_upload_size() });
    if let serde_json::Value::Object(fields) = &mut body {
        if limits.max_bytes > 0 {
            fields.insert(
                "org.matrix.msc4034.storage.size".into(),
                limits.max_bytes.into(),
            );
        }
        if limits.max_files > 0 {
            fields.insert(
                "org.matrix.msc4034.storage.max_files".into(),
                limits.max_files.into(),
            );
        }
    }
    Ok(HttpResponse::Ok().json(body))
}

/// # `GET /_matrix/media/unstable/org.matrix.msc4034/usage`
///
/// What the caller stores: bytes and files of their complete local media, from the counters the
/// quotas use (preview images and remote media are nobody's). MSC4034 only (no spec version
/// has it yet): its unstable path and field names,
/// <https://github.com/matrix-org/matrix-spec-proposals/pull/4034>.
pub async fn get_media_usage(
    state: web::Data<AppState>,
    user: AuthedUser,
) -> Result<HttpResponse, Error> {
    let user = user.not_guest()?;
    let (_, usage, _) = state.media.quota(&user.user_id).await?;
    Ok(HttpResponse::Ok().json(json!({
        "org.matrix.msc4034.storage.used": usage.bytes,
        "org.matrix.msc4034.storage.files": usage.files,
    })))
}

/// # `GET /_mxmedia/health`
pub async fn health(state: web::Data<AppState>) -> Result<HttpResponse, Error> {
    let size = state.media.store().blocking(|s| s.size_on_disk()).await?;
    Ok(HttpResponse::Ok().json(json!({
        "status": "ok",
        "version": env!("CARGO_PKG_VERSION"),
        "db_bytes": size,
        "thumbnails_generated": state.media.thumbnails_generated(),
    })))
}
