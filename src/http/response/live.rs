//! Answering with remote media while it is fetched: the origin's length when it gave one (so a
//! cut-off transfer shows as one), else chunked; a single `Range` served once its bytes have
//! arrived. No `ETag` yet: the hash is known only when the fetch completes.

use actix_web::{
    HttpRequest, HttpResponse,
    body::{BodyStream, SizedStream},
    http::header,
};

use super::{Caching, RangeRequest, apply_range, media_headers, parse_range};
use crate::media::remote::live::LiveMedia;

/// The response for `live`, streamed as its bytes arrive.
pub fn live_response(
    req: &HttpRequest,
    live: LiveMedia,
    disposition: &str,
    disposition_name: Option<String>,
    caching: Caching,
) -> HttpResponse {
    let name = disposition_name.or_else(|| live.filename().map(str::to_owned));
    let mut builder = media_headers(live.content_type(), disposition, name.as_deref(), caching);
    let Some(len) = live.declared_len() else {
        // Without a length there are no ranges, and chunked framing marks a complete body.
        return builder.body(BodyStream::new(live.stream(0, None)));
    };
    builder.insert_header((header::ACCEPT_RANGES, "bytes"));
    // No `If-Range` validator can match yet: such a request gets the whole file (RFC 9110).
    let range = if req.headers().contains_key(header::IF_RANGE) {
        RangeRequest::Full
    } else {
        parse_range(
            req.headers()
                .get(header::RANGE)
                .and_then(|v| v.to_str().ok()),
            len,
        )
    };
    let Some((start, end)) = apply_range(&mut builder, range, len) else {
        return builder.finish();
    };
    builder.body(SizedStream::new(end - start, live.stream(start, Some(end))))
}
