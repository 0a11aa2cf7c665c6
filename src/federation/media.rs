//! Fetching remote media (spec §9): the signed federation endpoint first, the deprecated
//! `/_matrix/media/v3` one when the origin does not know it, and a `Location` part or a
//! redirect followed with a plain GET. Bytes go straight into a `Spool` (a staging file), never
//! whole into memory. A thumbnail is kept only when its bytes are an image type we would serve
//! ourselves (JPEG, PNG, GIF, WebP), whatever type the origin declares: an SVG "thumbnail" would
//! run script in clients that open it.
//!
//! This module owns the HTTP exchange and what remote answers mean. Deduplication, the failure
//! cache and storing the result belong to `media::remote`.

use std::{
    sync::Arc,
    time::{Duration, Instant},
};

use awc::http::{StatusCode, header};
use futures_util::StreamExt as _;
use mxmedia_proto::{RequestParts, sign_request};
use tokio::time::Instant as TokioInstant;

use mxmedia_proto::{
    ids::{MediaId, ServerName},
    multipart::{boundary, disposition_filename, sanitize_content_type},
};

use super::{ClientResponse, Federation, FetchError, identity::Identity, resolve::Destination};
use crate::{
    model::thumb::ThumbSpec,
    store::spool::{Spool, SpoolError},
    ttl_cache::TtlCache,
};

/// How long an origin that only speaks the deprecated media API is remembered as such.
const LEGACY_MEMORY: Duration = Duration::from_secs(3600);
/// Redirects followed from a `Location` part or a legacy answer.
const MAX_REDIRECTS: usize = 5;
/// The metadata part is `{}` today; anything near this size is not a real answer.
pub(super) const MAX_METADATA: usize = 64 * 1024;
/// Bytes of multipart framing allowed on top of the media's own size limit.
pub(super) const MULTIPART_OVERHEAD: u64 = 64 * 1024;
/// Bytes of an error answer read to find its errcode.
const MAX_ERROR_BODY: usize = 4096;

/// Why a remote fetch failed. Cloneable: every waiter of a shared fetch gets a copy.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FetchFailure {
    /// The origin says there is no such media.
    NotFound,
    /// Larger than `media.max_remote_size`.
    TooLarge,
    /// The origin did not answer (or finish answering) in time.
    Timeout,
    /// The origin has the id but not its bytes yet (async upload).
    NotYetUploaded,
    /// The origin does not know the endpoint asked.
    Unrecognized,
    /// Anything else the origin did wrong; the text is for logs.
    Remote(String),
    /// Our side failed (disk, signing); the text is for logs.
    Local(String),
    /// The data dir's disk is below its free-space floor.
    NoSpace,
}

impl From<FetchError> for FetchFailure {
    fn from(err: FetchError) -> Self {
        match err {
            FetchError::Timeout => Self::Timeout,
            FetchError::TooLarge => Self::TooLarge,
            FetchError::Status { status, body } => classify(status, &body),
            other => Self::Remote(other.to_string()),
        }
    }
}

impl From<SpoolError> for FetchFailure {
    fn from(err: SpoolError) -> Self {
        match err {
            SpoolError::TooLarge(_) => Self::TooLarge,
            SpoolError::NoSpace => Self::NoSpace,
            SpoolError::Io(e) => Self::Local(e.to_string()),
        }
    }
}

/// What to fetch.
#[derive(Debug, Clone, Copy)]
pub enum Wanted {
    Download,
    Thumbnail(ThumbSpec),
}

/// What the origin told us about fetched bytes, sanitised.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Fetched {
    pub content_type: String,
    pub filename: Option<String>,
}

/// Origins that answered `M_UNRECOGNIZED` on the federation media API, for `LEGACY_MEMORY`;
/// bounded like discovery, since clients name the servers.
pub struct ApiMemory {
    legacy: TtlCache<ServerName, ()>,
}

impl Default for ApiMemory {
    fn default() -> Self {
        Self {
            legacy: TtlCache::new(super::DISCOVERY_CAPACITY),
        }
    }
}

impl ApiMemory {
    fn is_legacy(&self, server: &ServerName) -> bool {
        self.legacy.get(server).is_some()
    }

    fn remember_legacy(&self, server: &ServerName) {
        self.legacy
            .insert(server.clone(), (), Instant::now() + LEGACY_MEMORY);
    }
}

/// Everything an outgoing media request needs, owned, so a fetch running as its own task
/// keeps it. The awc client ties it to the worker thread that made it.
#[derive(Clone)]
pub struct MediaClient {
    pub federation: Federation,
    pub client: awc::Client,
    pub identity: Arc<Identity>,
}

impl MediaClient {
    /// Fetches `media_id` from `server` into `spool`.
    pub async fn fetch(
        &self,
        apis: &ApiMemory,
        server: &ServerName,
        media_id: &MediaId,
        wanted: Wanted,
        timeout_ms: u64,
        spool: &mut Spool,
    ) -> Result<Fetched, FetchFailure> {
        let mut sink = Sink::new(spool);
        let fetched = self
            .fetch_into(apis, server, media_id, wanted, timeout_ms, &mut sink)
            .await?;
        match wanted {
            Wanted::Download => Ok(fetched),
            Wanted::Thumbnail(_) => sink.as_thumbnail(fetched),
        }
    }

    async fn fetch_into(
        &self,
        apis: &ApiMemory,
        server: &ServerName,
        media_id: &MediaId,
        wanted: Wanted,
        timeout_ms: u64,
        sink: &mut Sink<'_>,
    ) -> Result<Fetched, FetchFailure> {
        let destination = self.federation.destination(&self.client, server).await?;
        if !apis.is_legacy(server) {
            let path = federation_path(media_id, wanted, timeout_ms);
            match self
                .fetch_federation(&destination, server, &path, sink)
                .await
            {
                Err(FetchFailure::Unrecognized) => {
                    tracing::info!(%server, "no federation media API; using /_matrix/media/v3");
                    apis.remember_legacy(server);
                }
                other => return other,
            }
        }
        let path = legacy_path(server, media_id, wanted, timeout_ms);
        let response = self.signed_get(&destination, server, &path).await?;
        match self.answer(response, destination.url(&path), sink).await {
            Err(FetchFailure::Unrecognized) => Err(FetchFailure::Remote(
                "the origin has no media API we know".into(),
            )),
            other => other,
        }
    }

    async fn fetch_federation(
        &self,
        destination: &Destination,
        server: &ServerName,
        path: &str,
        sink: &mut Sink<'_>,
    ) -> Result<Fetched, FetchFailure> {
        let deadline = self.deadline();
        let response = self.signed_get(destination, server, path).await?;
        if !response.status().is_success() {
            return Err(failure(response, deadline).await);
        }
        let content_type = header_str(&response, header::CONTENT_TYPE).unwrap_or_default();
        let Some(boundary) = boundary(&content_type) else {
            return Err(FetchFailure::Remote(format!(
                "federation answer is not multipart but {content_type:?}"
            )));
        };
        if declared_len(&response).is_some_and(|len| len > sink.limit() + MULTIPART_OVERHEAD) {
            return Err(FetchFailure::TooLarge);
        }
        match body::read_multipart(response, &boundary, deadline, sink).await? {
            body::MediaPart::Bytes(fetched) => Ok(fetched),
            body::MediaPart::Location(url) => self.fetch_plain(url, sink).await,
        }
    }

    /// A plain GET (no signature), following redirects: for `Location` parts and CDNs.
    async fn fetch_plain(&self, url: String, sink: &mut Sink<'_>) -> Result<Fetched, FetchFailure> {
        let response = self.federation.send_get(&self.client, &url, &[]).await?;
        self.answer(response, url, sink).await
    }

    /// Reads a plain media answer, following up to `MAX_REDIRECTS` redirects.
    async fn answer(
        &self,
        mut response: ClientResponse,
        mut url: String,
        sink: &mut Sink<'_>,
    ) -> Result<Fetched, FetchFailure> {
        for _ in 0..=MAX_REDIRECTS {
            let status = response.status();
            if !is_redirect(status) {
                let deadline = self.deadline();
                if !status.is_success() {
                    return Err(failure(response, deadline).await);
                }
                return read_body(response, deadline, sink).await;
            }
            let location = header_str(&response, header::LOCATION)
                .ok_or_else(|| FetchFailure::Remote("redirect without Location".into()))?;
            url = absolute_url(&location, &url)?;
            response = self.federation.send_get(&self.client, &url, &[]).await?;
        }
        Err(FetchFailure::Remote("too many redirects".into()))
    }

    async fn signed_get(
        &self,
        destination: &Destination,
        server: &ServerName,
        path: &str,
    ) -> Result<ClientResponse, FetchFailure> {
        let request = RequestParts {
            method: "GET",
            uri: path,
            origin: &self.identity.server_name,
            destination: server,
            content: None,
        };
        let authorization = sign_request(&request, &self.identity.key)
            .map_err(|e| FetchFailure::Local(format!("signing: {e}")))?
            .to_string();
        let headers = [
            ("host", destination.host_header.clone()),
            ("authorization", authorization),
        ];
        Ok(self
            .federation
            .send_get(&self.client, &destination.url(path), &headers)
            .await?)
    }

    fn deadline(&self) -> TokioInstant {
        TokioInstant::now() + self.federation.request_timeout()
    }
}

fn federation_path(media_id: &MediaId, wanted: Wanted, timeout_ms: u64) -> String {
    let id = media_id.as_str();
    match wanted {
        Wanted::Download => {
            format!("/_matrix/federation/v1/media/download/{id}?timeout_ms={timeout_ms}")
        }
        Wanted::Thumbnail(spec) => format!(
            "/_matrix/federation/v1/media/thumbnail/{id}?{}&animated={}&timeout_ms={timeout_ms}",
            thumbnail_query(spec),
            spec.animated
        ),
    }
}

fn legacy_path(server: &ServerName, media_id: &MediaId, wanted: Wanted, timeout_ms: u64) -> String {
    // IPv6 literals are the only server names with characters a path may not hold.
    let server = server.as_str().replace('[', "%5B").replace(']', "%5D");
    let id = media_id.as_str();
    let tail = format!("allow_remote=false&timeout_ms={timeout_ms}&allow_redirect=true");
    match wanted {
        Wanted::Download => format!("/_matrix/media/v3/download/{server}/{id}?{tail}"),
        Wanted::Thumbnail(spec) => format!(
            "/_matrix/media/v3/thumbnail/{server}/{id}?{}&{tail}",
            thumbnail_query(spec)
        ),
    }
}

fn thumbnail_query(spec: ThumbSpec) -> String {
    let method = spec.method.as_str();
    format!(
        "width={}&height={}&method={method}",
        spec.width, spec.height
    )
}

/// What a non-2xx answer means (spec §9 item 3 and 7; "unrecognized" as Synapse decides it).
pub fn classify(status: u16, body: &[u8]) -> FetchFailure {
    let json = serde_json::from_slice::<serde_json::Value>(body).ok();
    let errcode = json
        .as_ref()
        .and_then(|v| v.get("errcode"))
        .and_then(|v| v.as_str());
    match (status, errcode) {
        (400 | 404 | 405, Some("M_UNRECOGNIZED")) => FetchFailure::Unrecognized,
        // An empty or non-JSON 404/405 comes from something that is not a Matrix endpoint.
        (404 | 405, _) if json.is_none() => FetchFailure::Unrecognized,
        (404, _) => FetchFailure::NotFound,
        (504, Some("M_NOT_YET_UPLOADED")) => FetchFailure::NotYetUploaded,
        (413 | 502, Some("M_TOO_LARGE")) => FetchFailure::TooLarge,
        _ => FetchFailure::Remote(format!("origin answered {status}")),
    }
}

async fn failure(mut response: ClientResponse, deadline: TokioInstant) -> FetchFailure {
    let status = response.status().as_u16();
    let body = tokio::time::timeout_at(deadline, response.body().limit(MAX_ERROR_BODY))
        .await
        .ok()
        .and_then(Result::ok)
        .unwrap_or_default();
    classify(status, &body)
}

/// Streams a plain answer's body into `spool`.
async fn read_body(
    mut response: ClientResponse,
    deadline: TokioInstant,
    sink: &mut Sink<'_>,
) -> Result<Fetched, FetchFailure> {
    if declared_len(&response).is_some_and(|len| len > sink.limit()) {
        return Err(FetchFailure::TooLarge);
    }
    let fetched = Fetched {
        content_type: sanitize_content_type(header_str(&response, header::CONTENT_TYPE).as_deref()),
        filename: header_str(&response, header::CONTENT_DISPOSITION)
            .as_deref()
            .and_then(disposition_filename),
    };
    loop {
        match tokio::time::timeout_at(deadline, response.next()).await {
            Err(_) => return Err(FetchFailure::Timeout),
            Ok(None) => return Ok(fetched),
            Ok(Some(Err(e))) => {
                return Err(FetchFailure::Remote(format!("body interrupted: {e}")));
            }
            Ok(Some(Ok(chunk))) => sink.write(&chunk).await?,
        }
    }
}

/// Bytes of a file kept aside to tell its type by.
const SNIFF_LEN: usize = 16;

/// Where fetched bytes go: the spool, with the first few kept to tell the type by.
pub(super) struct Sink<'a> {
    spool: &'a mut Spool,
    head: Vec<u8>,
}

impl<'a> Sink<'a> {
    fn new(spool: &'a mut Spool) -> Self {
        Self {
            spool,
            head: Vec::with_capacity(SNIFF_LEN),
        }
    }

    pub(super) fn limit(&self) -> u64 {
        self.spool.limit()
    }

    pub(super) async fn write(&mut self, chunk: &[u8]) -> Result<(), FetchFailure> {
        let room = SNIFF_LEN.saturating_sub(self.head.len());
        self.head
            .extend_from_slice(chunk.get(..room.min(chunk.len())).unwrap_or_default());
        Ok(self.spool.write(chunk).await?)
    }

    /// `fetched` as a thumbnail: its type as its bytes say, when it is one we serve; an SVG,
    /// HTML or anything else is a failed fetch, whatever the origin declared.
    fn as_thumbnail(&self, fetched: Fetched) -> Result<Fetched, FetchFailure> {
        let Some(format) = mxmedia_image::sniff(&self.head) else {
            return Err(FetchFailure::Remote(format!(
                "thumbnail declared {} is not an image type we serve",
                fetched.content_type
            )));
        };
        Ok(Fetched {
            content_type: format.content_type().to_owned(),
            ..fetched
        })
    }
}

fn header_str(response: &ClientResponse, name: header::HeaderName) -> Option<String> {
    response
        .headers()
        .get(name)
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned)
}

fn declared_len(response: &ClientResponse) -> Option<u64> {
    header_str(response, header::CONTENT_LENGTH)?
        .trim()
        .parse()
        .ok()
}

/// A redirect target as an absolute https URL; relative ones are resolved against `base`.
fn absolute_url(location: &str, base: &str) -> Result<String, FetchFailure> {
    if location.starts_with("https://") {
        return Ok(location.to_owned());
    }
    if let Some(path) = location.strip_prefix('/')
        && !path.starts_with('/')
        && let Some(origin_end) = base
            .strip_prefix("https://")
            .map(|rest| rest.find('/').map_or(base.len(), |i| i + "https://".len()))
    {
        return Ok(format!("{}/{path}", base.get(..origin_end).unwrap_or(base)));
    }
    Err(FetchFailure::Remote(format!(
        "redirect to a non-https URL: {location}"
    )))
}

fn is_redirect(status: StatusCode) -> bool {
    matches!(status.as_u16(), 301 | 302 | 303 | 307 | 308)
}

mod body;
#[cfg(test)]
mod tests;
