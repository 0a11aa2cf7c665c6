use std::time::Duration;

use super::{direct_answer, redirect_response};
use crate::{http::response::Caching, model::meta::Content, store::direct::DirectUrl};

fn content(content_type: &str) -> Content {
    Content {
        content_type: content_type.to_owned(),
        filename: Some("x.bin".to_owned()),
        len: 10,
        sha256: "ab".repeat(32),
    }
}

/// A direct fetch must answer with what a stream would: the charset added, an attachment for a
/// type a browser must not render, and only inline-able media marked safe to serve without
/// our headers.
#[test]
fn direct_answers_carry_the_streamed_headers() {
    let svg = direct_answer(
        &content("image/svg+xml"),
        "attachment",
        Some("a b.svg"),
        Caching::Private,
    );
    assert_eq!(svg.content_type, "image/svg+xml; charset=UTF-8");
    assert_eq!(
        svg.content_disposition,
        "attachment; filename*=utf-8''a%20b.svg"
    );
    assert!(
        !svg.plain_ok,
        "an SVG must never be served with the bucket's headers"
    );

    let png = direct_answer(
        &content("image/png"),
        "inline",
        Some("p.png"),
        Caching::Public,
    );
    assert_eq!(png.content_type, "image/png");
    assert_eq!(png.content_disposition, "inline; filename=p.png");
    assert_eq!(png.cache_control, "public, max-age=31536000, immutable");
    assert!(png.plain_ok);

    // An inline-able type forced to an attachment stays one.
    let forced = direct_answer(&content("image/png"), "attachment", None, Caching::Private);
    assert!(!forced.plain_ok);
}

/// The redirect is a 307 to the URL, cached by the client no longer than the backend allows.
#[test]
fn redirects_are_307_and_short_lived() {
    let url = DirectUrl {
        url: "https://s3.example.org/b/ab/abcd?X-Amz-Signature=00".to_owned(),
        keep_for: Duration::from_secs(150),
    };
    let res = redirect_response(&url, Caching::Private);
    assert_eq!(res.status(), 307);
    let header = |name: &str| res.headers().get(name).and_then(|v| v.to_str().ok());
    assert_eq!(header("location"), Some(url.url.as_str()));
    assert_eq!(header("cache-control"), Some("private, max-age=150"));
}
