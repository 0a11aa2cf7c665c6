//! What remote answers mean: the paths asked, error answers classified, a plain body read,
//! redirect targets checked.

use awc::http::{StatusCode, header};
use mxmedia_proto::{
    ids::{MediaId, ServerName},
    multipart::{disposition_filename, sanitize_content_type},
};
use tokio::time::Instant as TokioInstant;

use super::{FetchFailure, Fetched, MAX_ERROR_BODY, Wanted, sink::Sink};
use crate::{federation::ClientResponse, model::thumb::ThumbSpec};

pub(super) fn federation_path(media_id: &MediaId, wanted: Wanted, timeout_ms: u64) -> String {
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

pub(super) fn legacy_path(
    server: &ServerName,
    media_id: &MediaId,
    wanted: Wanted,
    timeout_ms: u64,
) -> String {
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

/// What a non-2xx answer means: the errors of
/// https://spec.matrix.org/v1.16/server-server-api/#get_matrixfederationv1mediadownloadmediaid
/// ("unrecognized" as Synapse decides it).
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

pub(super) async fn failure(mut response: ClientResponse, deadline: TokioInstant) -> FetchFailure {
    let status = response.status().as_u16();
    let body = tokio::time::timeout_at(deadline, response.body().limit(MAX_ERROR_BODY))
        .await
        .ok()
        .and_then(Result::ok)
        .unwrap_or_default();
    classify(status, &body)
}

/// Streams a plain answer's body into the sink.
pub(super) async fn read_body(
    mut response: ClientResponse,
    deadline: TokioInstant,
    sink: &mut Sink<'_>,
) -> Result<Fetched, FetchFailure> {
    let fetched = Fetched {
        content_type: sanitize_content_type(header_str(&response, header::CONTENT_TYPE).as_deref()),
        filename: header_str(&response, header::CONTENT_DISPOSITION)
            .as_deref()
            .and_then(disposition_filename),
    };
    sink.begin(&fetched, declared_len(&response))?;
    loop {
        match tokio::time::timeout_at(deadline, sink.next(&mut response)).await {
            Err(_) => return Err(FetchFailure::Timeout),
            Ok(Err(failure)) => return Err(failure),
            Ok(Ok(None)) => return sink.end().map(|()| fetched),
            Ok(Ok(Some(Err(e)))) => {
                return Err(FetchFailure::Remote(format!("body interrupted: {e}")));
            }
            Ok(Ok(Some(Ok(chunk)))) => sink.write(&chunk).await?,
        }
    }
}

pub(super) fn header_str(response: &ClientResponse, name: header::HeaderName) -> Option<String> {
    response
        .headers()
        .get(name)
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned)
}

pub(super) fn declared_len(response: &ClientResponse) -> Option<u64> {
    header_str(response, header::CONTENT_LENGTH)?
        .trim()
        .parse()
        .ok()
}

/// A redirect target as an absolute https URL; relative ones are resolved against `base`.
pub(super) fn absolute_url(location: &str, base: &str) -> Result<String, FetchFailure> {
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

pub(super) fn is_redirect(status: StatusCode) -> bool {
    matches!(status.as_u16(), 301 | 302 | 303 | 307 | 308)
}
