//! Answering a download with a redirect to the blob backend (`307` + `Location`) instead of
//! the bytes, when the client allows it
//! ([spec: `allow_redirect`](https://spec.matrix.org/v1.16/client-server-api/#get_matrixmediav3downloadservernamemediaid)).
//! The far end must answer with the headers a stream would carry, so they are worked out here,
//! from the same functions, and handed to the backend to sign into the URL.

use actix_web::{
    HttpRequest, HttpResponse,
    http::{Method, header},
};

use super::{
    Caching, cache_control, content_disposition, content_type_header, etag_matches, is_inline,
};
use crate::{
    error::Error,
    media::MediaService,
    model::meta::Content,
    store::direct::{DirectAnswer, DirectUrl},
};

/// What a direct fetch of `content` must answer with: what `media_response` would send.
pub fn direct_answer(
    content: &Content,
    disposition: &str,
    disposition_name: Option<&str>,
    caching: Caching,
) -> DirectAnswer {
    DirectAnswer {
        content_type: content_type_header(&content.content_type),
        content_disposition: content_disposition(disposition, disposition_name),
        cache_control: cache_control(caching).to_owned(),
        plain_ok: disposition == "inline" && is_inline(&content.content_type),
    }
}

/// A `307` to `url`, cached no longer than the URL stays valid.
pub(super) fn redirect_response(url: &DirectUrl, caching: Caching) -> HttpResponse {
    let scope = match caching {
        Caching::Private => "private",
        Caching::Public => "public",
    };
    HttpResponse::TemporaryRedirect()
        .insert_header((header::LOCATION, url.url.as_str()))
        .insert_header((
            header::CACHE_CONTROL,
            format!("{scope}, max-age={}", url.keep_for.as_secs()),
        ))
        // The URL may carry a signature: it is nobody else's business where it leads.
        .insert_header((header::REFERRER_POLICY, "no-referrer"))
        .finish()
}

/// The redirect answering `req` for stored `content`, when the client allowed one and the
/// backend can serve it; `None` means stream it. Every access check has passed by now.
/// `HEAD` is never redirected (a presigned URL is signed for `GET` only), nor a request the
/// client can answer from its own copy (`If-None-Match`): a `304` is cheaper than both.
pub async fn redirect(
    req: &HttpRequest,
    allowed: bool,
    media: &MediaService,
    content: &Content,
    disposition: &str,
    disposition_name: Option<&str>,
    caching: Caching,
) -> Result<Option<HttpResponse>, Error> {
    if !allowed || !media.redirects() || req.method() != Method::GET {
        return Ok(None);
    }
    let etag = format!("\"{}\"", content.sha256);
    if etag_matches(req.headers().get(header::IF_NONE_MATCH), &etag) {
        return Ok(None);
    }
    let answer = direct_answer(content, disposition, disposition_name, caching);
    Ok(media
        .direct_url(content, answer)
        .await?
        .map(|url| redirect_response(&url, caching)))
}

#[cfg(test)]
mod tests;
