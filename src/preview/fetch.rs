//! Fetching for previews: GET with redirects followed by hand (each hop re-checked by the
//! guard), bodies read up to a limit, and images streamed into the media store as preview
//! images (nobody's uploads; see `media::preview_images`).

use bytes::{Bytes, BytesMut};
use futures_util::{Stream, StreamExt as _, stream};
use url::Url;

use super::{Failure, guard::Guard};
use crate::{
    error::Error,
    media::{MediaService, preview_images::PreviewImage},
    model::id::MediaKey,
};

/// Bytes of an image kept aside to read its header (format and size) from. A JPEG's size
/// follows its EXIF block, which is at most 64 KiB.
const PROBE_PREFIX: usize = 128 * 1024;

/// Types read as HTML.
const HTML_TYPES: &[&str] = &["text/html", "application/xhtml+xml"];
/// Image types stored for previews: those the thumbnailer reads.
const IMAGE_TYPES: &[&str] = &["image/jpeg", "image/png", "image/gif", "image/webp"];

pub struct Fetcher<'a> {
    pub client: &'a awc::Client,
    pub guard: &'a Guard,
    pub max_redirects: u32,
}

/// A successful answer: where it finally came from, its media type (lower case, no
/// parameters), the full `Content-Type` and its declared length.
pub struct Answer<S> {
    pub url: Url,
    pub media_type: String,
    pub content_type: Option<String>,
    pub length: Option<u64>,
    pub body: S,
}

impl<S> Answer<S> {
    pub fn is_html(&self) -> bool {
        HTML_TYPES.contains(&self.media_type.as_str())
    }

    pub fn is_image(&self) -> bool {
        IMAGE_TYPES.contains(&self.media_type.as_str())
    }
}

impl Fetcher<'_> {
    /// GETs `url`, following redirects; every URL on the way passes `Guard::check_url`, and
    /// every connection the guard's address check.
    pub async fn get(
        &self,
        mut url: Url,
        accept: &str,
    ) -> Result<Answer<impl Stream<Item = Result<Bytes, awc::error::PayloadError>> + Unpin>, Failure>
    {
        for _ in 0..=self.max_redirects {
            self.guard.check_url(&url)?;
            let response = self
                .client
                .get(url.as_str())
                .insert_header(("accept", accept))
                .send()
                .await
                .map_err(send_failure)?;
            let status = response.status();
            if status.is_redirection()
                && let Some(location) = response
                    .headers()
                    .get(awc::http::header::LOCATION)
                    .and_then(|l| l.to_str().ok())
            {
                url = url
                    .join(location)
                    .map_err(|_| Failure::Upstream("unparsable redirect".into()))?;
                url.set_fragment(None);
                continue;
            }
            if !status.is_success() {
                return Err(Failure::Upstream(format!("answered {status}")));
            }
            let headers = response.headers();
            let content_type = headers
                .get(awc::http::header::CONTENT_TYPE)
                .and_then(|v| v.to_str().ok())
                .map(str::to_owned);
            let media_type = content_type
                .as_deref()
                .and_then(|t| t.split(';').next())
                .unwrap_or_default()
                .trim()
                .to_ascii_lowercase();
            let length = headers
                .get(awc::http::header::CONTENT_LENGTH)
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.parse().ok());
            return Ok(Answer {
                url,
                media_type,
                content_type,
                length,
                body: response,
            });
        }
        Err(Failure::Upstream("too many redirects".into()))
    }
}

/// Reads `body` until it has `limit` bytes or ends; true if more may follow. The result can
/// pass `limit` by part of one chunk (callers cut it); the rest is never downloaded. A body
/// that ended must not be polled again (awc's HTTP/1 decoder panics), hence the flag.
pub async fn read_prefix<S, E>(body: &mut S, limit: usize) -> Result<(Bytes, bool), Failure>
where
    S: Stream<Item = Result<Bytes, E>> + Unpin,
    E: std::fmt::Display,
{
    let mut buf = BytesMut::new();
    while buf.len() < limit {
        match body.next().await {
            Some(chunk) => {
                buf.extend_from_slice(&chunk.map_err(|e| Failure::Upstream(format!("body: {e}")))?);
            }
            None => return Ok((buf.freeze(), false)),
        }
    }
    Ok((buf.freeze(), true))
}

/// A stored preview image.
pub struct StoredImage {
    pub key: MediaKey,
    pub content_type: String,
    pub len: u64,
    pub dims: Option<(u32, u32)>,
}

/// Limits an image must meet to be stored.
pub struct ImageLimits {
    pub max_bytes: u64,
    pub max_pixels: u64,
}

/// Where a preview's image is stored: its limits, the preview it is for, the total cap.
pub struct ImageTarget<'a> {
    pub limits: &'a ImageLimits,
    pub preview_key: Vec<u8>,
    pub ttl_ms: u64,
    pub cache_max_bytes: u64,
}

/// Streams an image answer into the media store as a preview image. `Ok(None)` when it is not
/// an image we keep: an unknown format, too many bytes or pixels, quarantined bytes.
pub async fn store_image<S>(
    media: &MediaService,
    mut answer: Answer<S>,
    target: &ImageTarget<'_>,
) -> Result<Option<StoredImage>, Failure>
where
    S: Stream<Item = Result<Bytes, awc::error::PayloadError>> + Unpin,
{
    let limits = target.limits;
    if !answer.is_image() || answer.length.is_some_and(|len| len > limits.max_bytes) {
        return Ok(None);
    }
    let (prefix, more) = read_prefix(&mut answer.body, PROBE_PREFIX).await?;
    let probe_input = prefix.clone();
    let probe = tokio::task::spawn_blocking(move || mxmedia_image::probe(&probe_input))
        .await
        .map_err(|e| Failure::Internal(e.to_string()))?;
    let (content_type, dims) = match probe {
        Ok(p) if u64::from(p.width) * u64::from(p.height) > limits.max_pixels => return Ok(None),
        Ok(p) => (
            p.format.content_type().to_owned(),
            Some((p.width, p.height)),
        ),
        // A header cut off by the prefix: the thumbnailer checks it in full when asked.
        Err(mxmedia_image::Error::Corrupt(_)) if more => (answer.media_type.clone(), None),
        Err(_) => return Ok(None),
    };
    let max = limits.max_bytes;
    let mut received = 0u64;
    let rest = more.then_some(answer.body);
    let body = stream::iter([Ok::<_, String>(prefix)])
        .chain(
            stream::iter(rest)
                .flatten()
                .map(|chunk| chunk.map_err(|e| e.to_string())),
        )
        .map(move |chunk| {
            let chunk = chunk?;
            received += u64::try_from(chunk.len()).unwrap_or(u64::MAX);
            if received > max {
                return Err("image larger than the preview limit".to_owned());
            }
            Ok(chunk)
        });
    let image = PreviewImage {
        content_type: content_type.clone(),
        declared_len: answer.length,
        preview_key: target.preview_key.clone(),
        ttl_ms: target.ttl_ms,
        cache_max_bytes: target.cache_max_bytes,
    };
    match media.store_preview_image(image, body).await {
        Ok(Some((key, len))) => Ok(Some(StoredImage {
            key,
            content_type,
            len,
            dims,
        })),
        Ok(None) => Ok(None),
        Err(Error::InvalidParam(_) | Error::TooLarge(_)) => Ok(None),
        Err(e) => Err(Failure::Internal(e.to_string())),
    }
}

/// An awc error as a preview failure; the guard's refusals stay refusals.
fn send_failure(err: awc::error::SendRequestError) -> Failure {
    use awc::error::{ConnectError, SendRequestError};
    match err {
        SendRequestError::Timeout | SendRequestError::Connect(ConnectError::Timeout) => {
            Failure::Timeout
        }
        SendRequestError::Connect(ConnectError::Resolver(e)) => {
            match e.downcast_ref::<super::guard::Refused>() {
                Some(super::guard::Refused::Denied) => Failure::Forbidden,
                Some(super::guard::Refused::Dns) | None => Failure::Upstream("DNS".into()),
            }
        }
        other => Failure::Upstream(other.to_string()),
    }
}
