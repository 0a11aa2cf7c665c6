//! Fetching remote media
//! (https://spec.matrix.org/v1.16/server-server-api/#content-repository): the signed federation
//! endpoint first, the deprecated `/_matrix/media/v3` one when the origin does not know it
//! (https://spec.matrix.org/v1.16/client-server-api/#get_matrixmediav3downloadservernamemediaid),
//! and a `Location` part or a redirect followed with a plain GET. Bytes go straight into a
//! `Spool` (a staging file), never whole into memory, and the caller is told when the media's
//! own bytes begin, so it can let readers follow the spool while it fills. A thumbnail is kept
//! only when its bytes are an image type we would serve ourselves (JPEG, PNG, GIF, WebP),
//! whatever type the origin declares: an SVG "thumbnail" would run script in clients that open
//! it.
//!
//! This module owns the HTTP exchange; what remote answers mean is `answer`'s. Deduplication,
//! the failure cache, readers and storing the result belong to `media::remote`.

use std::{
    sync::Arc,
    time::{Duration, Instant},
};

use awc::http::header;
use mxmedia_proto::{
    RequestParts,
    ids::{MediaId, ServerName},
    multipart::boundary,
    sign_request,
};
use tokio::time::Instant as TokioInstant;

pub use self::answer::classify;
use self::{
    answer::{
        absolute_url, declared_len, failure, federation_path, header_str, is_redirect, legacy_path,
        read_body,
    },
    sink::Sink,
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

/// Told once, when the media's own bytes begin: what they are, and their length when the origin
/// declared one.
pub type Announce = Box<dyn FnOnce(&Fetched, Option<u64>)>;

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
    /// Fetches `media_id` from `server` into `spool`, calling `announce` when its bytes begin.
    #[allow(clippy::too_many_arguments)]
    pub async fn fetch(
        &self,
        apis: &ApiMemory,
        server: &ServerName,
        media_id: &MediaId,
        wanted: Wanted,
        timeout_ms: u64,
        spool: &mut Spool,
        announce: Option<Announce>,
    ) -> Result<Fetched, FetchFailure> {
        let mut sink = Sink::new(spool, announce);
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

mod answer;
mod body;
mod sink;
#[cfg(test)]
mod tests;
