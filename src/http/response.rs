//! Serving media bytes: the headers the spec asks for (Content-Type, a safe Content-Disposition,
//! CSP, CORP), caching (strong ETag, 304), and single `Range` requests, streamed in chunks.
//! Remote media still being fetched is answered by `live`.

use std::io::{Read as _, Seek as _, SeekFrom};

use actix_web::{
    HttpRequest, HttpResponse, HttpResponseBuilder,
    body::SizedStream,
    http::{Method, StatusCode, header},
};
use bytes::Bytes;
use futures_util::stream;
use percent_encoding::{AsciiSet, CONTROLS, utf8_percent_encode};

use crate::{
    error::Error,
    model::meta::Content,
    store::{BlobReader, blob::CHUNK_SIZE},
};

/// The spec's list of types that may be shown inline (MSC2702). Everything else is an attachment.
const INLINE_TYPES: &[&str] = &[
    "text/css",
    "text/plain",
    "text/csv",
    "application/json",
    "application/ld+json",
    "image/jpeg",
    "image/gif",
    "image/png",
    "image/apng",
    "image/webp",
    "image/avif",
    "video/mp4",
    "video/webm",
    "video/ogg",
    "video/quicktime",
    "audio/mp4",
    "audio/webm",
    "audio/aac",
    "audio/mpeg",
    "audio/ogg",
    "audio/wave",
    "audio/wav",
    "audio/x-wav",
    "audio/x-pn-wav",
    "audio/flac",
    "audio/x-flac",
];

/// Types that get `; charset=UTF-8` when stored without parameters, so browsers do not guess.
const CHARSET_TYPES: &[&str] = &[
    "text/css",
    "text/csv",
    "text/html",
    "text/calendar",
    "text/plain",
    "text/javascript",
    "application/json",
    "application/ld+json",
    "application/rtf",
    "image/svg+xml",
    "text/xml",
];

const CSP: &str = "sandbox; default-src 'none'; script-src 'none'; plugin-types application/pdf; \
                   style-src 'unsafe-inline'; media-src 'self'; object-src 'self';";

/// Characters outside RFC 8187's attr-char, percent-encoded in `filename*`.
const NOT_ATTR_CHAR: &AsciiSet = &CONTROLS
    .add(b' ')
    .add(b'"')
    .add(b'%')
    .add(b'\'')
    .add(b'(')
    .add(b')')
    .add(b'*')
    .add(b',')
    .add(b'/')
    .add(b':')
    .add(b';')
    .add(b'<')
    .add(b'=')
    .add(b'>')
    .add(b'?')
    .add(b'@')
    .add(b'[')
    .add(b'\\')
    .add(b']')
    .add(b'{')
    .add(b'}')
    .add(b'\x7f');

/// How the response caches: authenticated media must not be kept by shared caches.
#[derive(Clone, Copy)]
pub enum Caching {
    Private,
    Public,
}

pub fn content_type_header(stored: &str) -> String {
    let essence = stored
        .split(';')
        .next()
        .unwrap_or("")
        .trim()
        .to_ascii_lowercase();
    if !stored.contains(';') && CHARSET_TYPES.contains(&essence.as_str()) {
        format!("{stored}; charset=UTF-8")
    } else {
        stored.to_owned()
    }
}

pub fn is_inline(content_type: &str) -> bool {
    let essence = content_type
        .split(';')
        .next()
        .unwrap_or("")
        .trim()
        .to_ascii_lowercase();
    INLINE_TYPES.contains(&essence.as_str())
}

/// `inline`/`attachment` with the file name encoded per RFC 6266: a plain token when it is one,
/// otherwise `filename*=utf-8''…`. Control characters never reach the header.
pub fn content_disposition(disposition: &str, filename: Option<&str>) -> String {
    let Some(name) = filename.map(|n| n.chars().filter(|c| !c.is_control()).collect::<String>())
    else {
        return disposition.to_owned();
    };
    if name.is_empty() {
        return disposition.to_owned();
    }
    let is_token = name
        .bytes()
        .all(|b| (33..=126).contains(&b) && !b"()<>@,;:\\\"/[]?={}".contains(&b));
    if is_token {
        format!("{disposition}; filename={name}")
    } else {
        format!(
            "{disposition}; filename*=utf-8''{}",
            utf8_percent_encode(&name, NOT_ATTR_CHAR)
        )
    }
}

/// A requested byte range, inclusive, already checked against the length.
#[derive(Debug, PartialEq, Eq)]
pub enum RangeRequest {
    Full,
    Partial { start: u64, end: u64 },
    Unsatisfiable,
}

/// Parses a single `bytes=` range. Multiple ranges and syntax we do not know get the whole
/// body, which RFC 9110 allows.
pub fn parse_range(header: Option<&str>, len: u64) -> RangeRequest {
    let Some(spec) = header.and_then(|h| h.trim().strip_prefix("bytes=")) else {
        return RangeRequest::Full;
    };
    if spec.contains(',') {
        return RangeRequest::Full;
    }
    let Some((first, last)) = spec.trim().split_once('-') else {
        return RangeRequest::Full;
    };
    let (first, last) = (first.trim(), last.trim());
    let parsed = match (first.is_empty(), last.is_empty()) {
        (true, false) => match last.parse::<u64>() {
            Ok(0) => return RangeRequest::Unsatisfiable,
            Ok(suffix) => Some((len.saturating_sub(suffix), len.saturating_sub(1))),
            Err(_) => None,
        },
        (false, true) => first
            .parse::<u64>()
            .ok()
            .map(|s| (s, len.saturating_sub(1))),
        (false, false) => match (first.parse::<u64>(), last.parse::<u64>()) {
            (Ok(s), Ok(e)) if s <= e => Some((s, e.min(len.saturating_sub(1)))),
            _ => None,
        },
        (true, true) => None,
    };
    match parsed {
        None => RangeRequest::Full,
        Some((start, _)) if start >= len => RangeRequest::Unsatisfiable,
        Some((start, end)) => RangeRequest::Partial { start, end },
    }
}

/// A 200 with the headers every media answer carries, whatever its body.
fn media_headers(
    content_type: &str,
    disposition: &str,
    disposition_name: Option<&str>,
    caching: Caching,
) -> HttpResponseBuilder {
    let mut builder = HttpResponse::Ok();
    builder
        .insert_header((header::CONTENT_TYPE, content_type_header(content_type)))
        .insert_header((
            header::CONTENT_DISPOSITION,
            content_disposition(disposition, disposition_name),
        ))
        .insert_header((header::CONTENT_SECURITY_POLICY, CSP))
        .insert_header((header::X_CONTENT_TYPE_OPTIONS, "nosniff"))
        .insert_header(("cross-origin-resource-policy", "cross-origin"))
        .insert_header((header::REFERRER_POLICY, "no-referrer"))
        .insert_header((
            header::CACHE_CONTROL,
            match caching {
                Caching::Private => "private, max-age=31536000, immutable",
                Caching::Public => "public, max-age=31536000, immutable",
            },
        ));
    builder
}

/// Sets the status and `Content-Range` that `range` of a `len`-byte body is answered with
/// (RFC 9110 §14.4): the half-open span of bytes to send, or `None` for a 416 with no body.
fn apply_range(
    builder: &mut HttpResponseBuilder,
    range: RangeRequest,
    len: u64,
) -> Option<(u64, u64)> {
    match range {
        RangeRequest::Full => Some((0, len)),
        RangeRequest::Partial { start, end } => {
            builder
                .status(StatusCode::PARTIAL_CONTENT)
                .insert_header((header::CONTENT_RANGE, format!("bytes {start}-{end}/{len}")));
            Some((start, end + 1))
        }
        RangeRequest::Unsatisfiable => {
            builder
                .status(StatusCode::RANGE_NOT_SATISFIABLE)
                .insert_header((header::CONTENT_RANGE, format!("bytes */{len}")));
            None
        }
    }
}

/// Builds the response for stored media. `disposition_name` is the file name to announce.
pub fn media_response(
    req: &HttpRequest,
    content: &Content,
    reader: BlobReader,
    disposition: &str,
    disposition_name: Option<&str>,
    caching: Caching,
) -> Result<HttpResponse, Error> {
    let etag = format!("\"{}\"", content.sha256);
    let mut builder = media_headers(
        &content.content_type,
        disposition,
        disposition_name,
        caching,
    );
    builder
        .insert_header((header::ETAG, etag.as_str()))
        .insert_header((header::ACCEPT_RANGES, "bytes"));
    if etag_matches(req.headers().get(header::IF_NONE_MATCH), &etag) {
        return Ok(builder.status(StatusCode::NOT_MODIFIED).finish());
    }
    let len = content.len;
    let if_range_ok = req
        .headers()
        .get(header::IF_RANGE)
        .is_none_or(|v| v.to_str().is_ok_and(|v| v == etag));
    let range = if if_range_ok {
        parse_range(
            req.headers()
                .get(header::RANGE)
                .and_then(|v| v.to_str().ok()),
            len,
        )
    } else {
        RangeRequest::Full
    };
    let Some((start, end)) = apply_range(&mut builder, range, len) else {
        return Ok(builder.finish());
    };
    let body_len = end - start;
    if req.method() == Method::HEAD {
        // actix writes Content-Length from the body's declared size and never sends a HEAD
        // body, so an empty stream of the right declared size is all HEAD needs.
        return Ok(builder.body(SizedStream::new(
            body_len,
            stream::empty::<Result<Bytes, Error>>(),
        )));
    }
    Ok(match reader {
        BlobReader::Inline(bytes) => {
            let from = usize::try_from(start).unwrap_or(usize::MAX);
            let to = usize::try_from(end).unwrap_or(usize::MAX);
            let slice = bytes
                .get(from..to)
                .map(|_| bytes.slice(from..to))
                .unwrap_or_default();
            builder.body(slice)
        }
        BlobReader::Stream(reader) => builder.body(SizedStream::new(
            body_len,
            file_stream(reader, start, body_len),
        )),
    })
}

/// The whole blob as a stream of chunks, whichever way it is stored.
pub fn blob_stream(
    reader: BlobReader,
    len: u64,
) -> futures_util::stream::BoxStream<'static, Result<Bytes, Error>> {
    use futures_util::StreamExt as _;
    match reader {
        BlobReader::Inline(bytes) => stream::once(async move { Ok(bytes) }).boxed(),
        BlobReader::Stream(reader) => file_stream(reader, 0, len).boxed(),
    }
}

fn etag_matches(header: Option<&header::HeaderValue>, etag: &str) -> bool {
    header.and_then(|v| v.to_str().ok()).is_some_and(|v| {
        v.split(',')
            .map(str::trim)
            .any(|candidate| candidate == "*" || candidate.trim_start_matches("W/") == etag)
    })
}

/// Streams `len` bytes from `start`, one blocking read of at most `CHUNK_SIZE` at a time, so
/// memory per download stays bounded whatever the file size.
fn file_stream(
    reader: Box<dyn crate::store::blob::BlobRead>,
    start: u64,
    len: u64,
) -> impl futures_util::Stream<Item = Result<Bytes, Error>> {
    stream::try_unfold(
        (Some(reader), start, len, false),
        |(reader, offset, remaining, seeked)| async move {
            if remaining == 0 {
                return Ok(None);
            }
            let Some(mut reader) = reader else {
                return Ok(None);
            };
            let want = usize::try_from(remaining).map_or(CHUNK_SIZE, |r| r.min(CHUNK_SIZE));
            let (reader, buf) = tokio::task::spawn_blocking(move || {
                if !seeked {
                    reader.seek(SeekFrom::Start(offset))?;
                }
                let mut buf = vec![0; want];
                reader.read_exact(&mut buf)?;
                Ok::<_, std::io::Error>((reader, buf))
            })
            .await
            .map_err(Error::internal)??;
            let got = u64::try_from(buf.len()).unwrap_or(0);
            Ok(Some((
                Bytes::from(buf),
                (Some(reader), offset + got, remaining - got, true),
            )))
        },
    )
}

mod live;
#[cfg(test)]
mod tests;

pub use self::live::live_response;
