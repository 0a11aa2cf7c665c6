//! Downloads redirected to the bucket (`[store.s3] redirect`), against a real S3 engine: the
//! `307`, the presigned answer's headers as a real client following it sees them, what is
//! never redirected (no `allow_redirect`, `HEAD`, inline blobs, withheld media, unsafe types
//! under `public`), URLs that expire, and the federation answer's `Location` part.

use std::time::Duration;

use awc::http::Method;
use mxmedia::config::{S3Config, redirect::Redirect};

use crate::{
    common::{ALICE, BOB, TestServer, assert_error, pseudo_random},
    fake_remote::{FakeRemote, Pki},
    federation::{federate, parse_multipart},
    s3_engine,
};

const PHOTO: &[u8] = include_bytes!("../fixtures/photo_640x480.jpg");

/// A server on the shared S3 engine with `redirect`, every blob above 1 KiB in the bucket.
async fn server_with(redirect: Redirect, tweak: impl FnOnce(&mut S3Config)) -> TestServer {
    let mut s3 = s3_engine::shared().config();
    s3.redirect = redirect;
    tweak(&mut s3);
    TestServer::start_with(move |config| {
        config.store.inline_blob_max = bytesize::ByteSize::kib(1);
        config.store.s3 = Some(s3);
        config.media.legacy_unauthenticated_downloads = true;
        config.auth.admins = vec!["@alice:localhost".into()];
    })
    .await
}

/// A client that follows redirects, as browsers and SDKs do: awc drops the access token
/// when the redirect leaves for another origin (the engine's port), so the bucket sees none.
fn following_client() -> awc::Client {
    awc::Client::builder()
        .timeout(Duration::from_secs(30))
        .finish()
}

fn header<'a>(res: &'a awc::http::header::HeaderMap, name: &str) -> Option<&'a str> {
    res.get(name).and_then(|v| v.to_str().ok())
}

/// The `Location` of a `307` answering `url` (as `token`), and its `Cache-Control`.
async fn redirected(server: &TestServer, url: &str, token: Option<&str>) -> (String, String) {
    let mut req = server.client.get(url);
    if let Some(token) = token {
        req = req.bearer_auth(token);
    }
    let mut res = req.send().await.unwrap();
    let body = res.body().await.unwrap();
    assert_eq!(res.status(), 307, "{url}: {body:?}");
    (
        header(res.headers(), "location").unwrap().to_owned(),
        header(res.headers(), "cache-control").unwrap().to_owned(),
    )
}

/// `max-age` of a `Cache-Control` value.
fn max_age(cache_control: &str) -> u64 {
    cache_control
        .split(',')
        .find_map(|d| d.trim().strip_prefix("max-age="))
        .unwrap()
        .parse()
        .unwrap()
}

/// With `allow_redirect=true`, a download of a blob in the bucket is a short-lived `307`; a
/// real client following it gets, from the bucket and without any token, exactly the bytes and the
/// Content-Type and Content-Disposition mxmedia streams (an SVG and an HTML page as safe
/// attachments, never inline), and a `Range` works there too. The legacy endpoint redirects
/// the same way, cached as public.
#[actix_web::test]
async fn presigned_redirects_answer_with_the_headers_mxmedia_would_send() {
    let server = server_with(Redirect::Presigned, |_| {}).await;
    let svg = b"<svg xmlns='http://www.w3.org/2000/svg'><script>alert(1)</script></svg>".repeat(40);
    let html = b"<html><script>alert(document.domain)</script></html>".repeat(40);
    let bin = pseudo_random(700 * 1024, 3);
    let cases: [(&[u8], &str, &str); 4] = [
        (PHOTO, "image/jpeg", "a photo.jpg"),
        (&svg, "image/svg+xml", "drawing.svg"),
        (&html, "text/html", "page.html"),
        (&bin, "application/octet-stream", "data.bin"),
    ];
    for (bytes, content_type, name) in cases {
        let id = server.upload(bytes, content_type, Some(name)).await;
        let url = server.download_url(&id);
        let mut streamed = server.get_as(&url, ALICE).await;
        assert_eq!(streamed.status(), 200, "no allow_redirect: streamed");
        assert_eq!(streamed.body().limit(8 << 20).await.unwrap(), bytes);

        let allowed = format!("{url}?allow_redirect=true");
        let (location, cache) = redirected(&server, &allowed, Some(ALICE)).await;
        assert!(cache.starts_with("private"), "{cache}");
        assert!(
            max_age(&cache) <= 300,
            "cached no longer than the URL lives: {cache}"
        );
        assert!(
            location.starts_with(s3_engine::shared().endpoint()),
            "{location}"
        );
        assert!(
            !location.contains(ALICE),
            "the token never leaves for the bucket"
        );

        let mut res = following_client()
            .get(&allowed)
            .bearer_auth(ALICE)
            .send()
            .await
            .unwrap();
        assert_eq!(res.status(), 200, "{content_type} from the bucket");
        for name in ["content-type", "content-disposition"] {
            assert_eq!(
                header(res.headers(), name),
                header(streamed.headers(), name),
                "{name} of {content_type}"
            );
        }
        let disposition = header(res.headers(), "content-disposition").unwrap();
        if content_type != "image/jpeg" {
            assert!(disposition.starts_with("attachment"), "{disposition}");
        }
        assert_eq!(res.body().limit(8 << 20).await.unwrap(), bytes);

        let mut part = following_client()
            .get(&allowed)
            .bearer_auth(ALICE)
            .insert_header(("range", "bytes=10-19"))
            .send()
            .await
            .unwrap();
        assert_eq!(part.status(), 206);
        assert_eq!(part.body().await.unwrap(), &bytes[10..20]);
    }

    let id = server.upload(&bin, "application/octet-stream", None).await;
    let legacy = server.url(&format!(
        "/_matrix/media/v3/download/localhost/{id}?allow_redirect=true"
    ));
    let (_, cache) = redirected(&server, &legacy, None).await;
    assert!(cache.starts_with("public"), "{cache}");
}

/// Redirects happen only when asked for and worth it: without `allow_redirect=true`, for
/// `HEAD`, for a client revalidating its copy, for a blob kept inline in sled, and on a server
/// with redirects off, the bytes come from mxmedia as before. A bad value is a 400.
#[actix_web::test]
async fn downloads_are_streamed_unless_a_redirect_is_allowed_and_useful() {
    let server = server_with(Redirect::Presigned, |_| {}).await;
    let big = pseudo_random(64 * 1024, 5);
    let id = server.upload(&big, "application/octet-stream", None).await;
    let url = server.download_url(&id);
    for query in ["", "?allow_redirect=false"] {
        let mut res = server.get_as(format!("{url}{query}"), ALICE).await;
        assert_eq!(res.status(), 200, "{query}");
        assert_eq!(res.body().limit(1 << 20).await.unwrap(), big.as_slice());
    }
    let head = server
        .client
        .head(format!("{url}?allow_redirect=true"))
        .bearer_auth(ALICE)
        .send()
        .await
        .unwrap();
    assert_eq!(head.status(), 200, "HEAD is answered here");
    let etag = format!("\"{}\"", sha256_hex(&big));
    let revalidate = server
        .client
        .get(format!("{url}?allow_redirect=true"))
        .bearer_auth(ALICE)
        .insert_header(("if-none-match", etag))
        .send()
        .await
        .unwrap();
    assert_eq!(revalidate.status(), 304);
    let mut bad = server
        .get_as(format!("{url}?allow_redirect=yes"), ALICE)
        .await;
    assert_error(&mut bad, 400, "M_INVALID_PARAM").await;

    let small = pseudo_random(500, 6);
    let inline = server
        .upload(&small, "application/octet-stream", None)
        .await;
    let mut res = server
        .get_as(
            format!("{}?allow_redirect=true", server.download_url(&inline)),
            ALICE,
        )
        .await;
    assert_eq!(res.status(), 200, "an inline blob is never redirected");
    assert_eq!(res.body().await.unwrap(), small.as_slice());

    let off = server_with(Redirect::Off, |_| {}).await;
    let id = off.upload(&big, "application/octet-stream", None).await;
    let mut res = off
        .get_as(
            format!("{}?allow_redirect=true", off.download_url(&id)),
            ALICE,
        )
        .await;
    assert_eq!(res.status(), 200, "redirect = off");
    assert_eq!(res.body().limit(1 << 20).await.unwrap(), big.as_slice());
}

/// Quarantined and deleted (blocked) media is 404 with `allow_redirect=true` too: the checks
/// come before the redirect, even though a quarantined blob is still in the bucket.
#[actix_web::test]
async fn withheld_media_is_never_redirected() {
    let server = server_with(Redirect::Presigned, |_| {}).await;
    let bytes = pseudo_random(30_000, 9);
    let (quarantined, blocked) = (
        server
            .upload(&bytes, "application/octet-stream", None)
            .await,
        server
            .upload(&pseudo_random(30_000, 10), "application/octet-stream", None)
            .await,
    );
    for id in [&quarantined, &blocked] {
        let url = format!("{}?allow_redirect=true", server.download_url(id));
        redirected(&server, &url, Some(BOB)).await;
    }
    let quarantine = format!("/_synapse/admin/v1/media/quarantine/localhost/{quarantined}");
    let res = server
        .send_as(Method::POST, server.url(&quarantine), ALICE, "")
        .await;
    assert_eq!(res.status(), 200);
    let delete = format!("/_mxmedia/admin/v1/media/localhost/{blocked}");
    let res = server
        .send_as(Method::DELETE, server.url(&delete), ALICE, "")
        .await;
    assert_eq!(res.status(), 200);
    for id in [&quarantined, &blocked] {
        let url = format!("{}?allow_redirect=true", server.download_url(id));
        let mut res = server.get_as(&url, BOB).await;
        assert_error(&mut res, 404, "M_NOT_FOUND").await;
        let thumb = format!(
            "/_matrix/client/v1/media/thumbnail/localhost/{id}?width=32&height=32&allow_redirect=true"
        );
        let mut res = server.get_as(server.url(&thumb), BOB).await;
        assert_error(&mut res, 404, "M_NOT_FOUND").await;
    }
}

/// A presigned URL stops working once its lifetime is over: Garage refuses it, so a
/// URL handed out before a quarantine or a deletion does not outlive the TTL.
#[actix_web::test]
async fn expired_presigned_urls_are_refused_by_the_bucket() {
    // Below the configured minimum, which only the config file's check enforces.
    let server = server_with(Redirect::Presigned, |s3| s3.presign_ttl_secs = 2).await;
    let id = server.upload(PHOTO, "image/jpeg", None).await;
    let url = format!("{}?allow_redirect=true", server.download_url(&id));
    let (location, cache) = redirected(&server, &url, Some(ALICE)).await;
    assert_eq!(max_age(&cache), 1, "cached for half its life: {cache}");
    let mut fresh = following_client().get(&location).send().await.unwrap();
    assert_eq!(fresh.status(), 200);
    assert_eq!(fresh.body().limit(1 << 20).await.unwrap(), PHOTO);
    actix_web::rt::time::sleep(Duration::from_millis(3100)).await;
    let mut stale = following_client().get(&location).send().await.unwrap();
    let body = stale.body().await.unwrap();
    // AWS answers 403, Garage 400; either way an S3 error, never the bytes.
    assert!(
        matches!(stale.status().as_u16(), 400 | 403),
        "an expired URL is refused: {}",
        stale.status()
    );
    assert!(
        ["xpired", "too old"]
            .iter()
            .any(|why| String::from_utf8_lossy(&body).contains(why)),
        "{body:?}"
    );
}

/// A thumbnail stored in the bucket is redirected like a download, answered as an inline
/// image with mxmedia's file name.
#[actix_web::test]
async fn stored_thumbnails_are_redirected_too() {
    let server = server_with(Redirect::Presigned, |_| {}).await;
    let id = server.upload(PHOTO, "image/jpeg", None).await;
    let thumb = server.url(&format!(
        "/_matrix/client/v1/media/thumbnail/localhost/{id}?width=320&height=240&method=scale&allow_redirect=true"
    ));
    let mut res = following_client()
        .get(&thumb)
        .bearer_auth(ALICE)
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    assert_eq!(header(res.headers(), "content-type"), Some("image/jpeg"));
    assert_eq!(
        header(res.headers(), "content-disposition"),
        Some("inline; filename=thumbnail.jpg")
    );
    let body = res.body().limit(1 << 20).await.unwrap();
    let image = image::load_from_memory(&body).unwrap();
    assert_eq!((image.width(), image.height()), (320, 240));
    redirected(&server, &thumb, Some(ALICE)).await;
}

/// With `public`, media a browser may show inline is redirected to the public base URL + the
/// object's key; anything else (an SVG, an attachment) is streamed, since a public URL cannot
/// carry mxmedia's Content-Disposition. The object itself is stored as
/// `application/octet-stream`, so served without our headers it is never rendered.
#[actix_web::test]
async fn public_redirects_only_inline_safe_media() {
    let server = server_with(Redirect::Public, |s3| {
        s3.public_base_url = Some("https://cdn.example.org/media/".into());
    })
    .await;
    let prefix = server.config.store.s3.as_ref().unwrap().prefix.clone();
    let id = server.upload(PHOTO, "image/jpeg", None).await;
    let url = format!("{}?allow_redirect=true", server.download_url(&id));
    let (location, cache) = redirected(&server, &url, Some(ALICE)).await;
    let sha = sha256_hex(PHOTO);
    assert_eq!(
        location,
        format!("https://cdn.example.org/media/{prefix}{}/{sha}", &sha[..2])
    );
    assert!(max_age(&cache) <= 300, "{cache}");
    // What a public bucket or a CDN serves for that key, with no headers of ours: bytes typed
    // so that no browser renders (or sniffs) them.
    let s3 = server.store.s3().unwrap();
    let plain = object_store::signer::Signer::signed_url(
        &*s3.client(),
        object_store::signer::Method::GET,
        &s3.key(&sha),
        Duration::from_secs(60),
    )
    .await
    .unwrap();
    let res = following_client().get(plain.as_str()).send().await.unwrap();
    assert_eq!(res.status(), 200);
    assert_eq!(
        header(res.headers(), "content-type"),
        Some("application/octet-stream")
    );

    let svg = b"<svg xmlns='http://www.w3.org/2000/svg'><script>alert(1)</script></svg>".repeat(40);
    for (bytes, content_type) in [
        (svg.as_slice(), "image/svg+xml"),
        (&pseudo_random(5000, 1), "application/pdf"),
    ] {
        let id = server.upload(bytes, content_type, None).await;
        let url = format!("{}?allow_redirect=true", server.download_url(&id));
        let mut res = server.get_as(&url, ALICE).await;
        assert_eq!(res.status(), 200, "{content_type} is streamed");
        let disposition = header(res.headers(), "content-disposition").unwrap();
        assert!(disposition.starts_with("attachment"), "{disposition}");
        assert_eq!(res.body().limit(1 << 20).await.unwrap(), bytes);
    }
}

/// Over federation, with redirects on, the answer's second part is a `Location` (the spec's
/// second form) whose URL serves the bytes with mxmedia's headers; an inline blob still
/// comes as bytes.
#[actix_web::test]
async fn federation_answers_point_at_the_bucket() {
    let pki = Pki::new();
    let remote = FakeRemote::start(&pki, "127.0.0.1:0", None);
    let mut s3 = s3_engine::shared().config();
    s3.redirect = Redirect::Presigned;
    let server = TestServer::start_with(|c| {
        federate(c, &pki, None);
        c.store.inline_blob_max = bytesize::ByteSize::kib(1);
        c.store.s3 = Some(s3);
    })
    .await;
    let bytes = pseudo_random(300 * 1024, 11);
    let small = pseudo_random(100, 12);
    let id = server.upload(&bytes, "text/html", Some("page.html")).await;
    let inline = server.upload(&small, "text/plain", None).await;

    let parts = federation_parts(&server, &remote, &id).await;
    let location = parts[1].header("location").expect("a Location part");
    assert!(parts[1].body.is_empty());
    assert!(parts[1].header("content-type").is_none());
    let mut res = following_client().get(location).send().await.unwrap();
    assert_eq!(res.status(), 200);
    assert_eq!(
        header(res.headers(), "content-type"),
        Some("text/html; charset=UTF-8")
    );
    assert_eq!(
        header(res.headers(), "content-disposition"),
        Some("attachment; filename=page.html")
    );
    assert_eq!(res.body().limit(1 << 20).await.unwrap(), bytes);

    let parts = federation_parts(&server, &remote, &inline).await;
    assert!(parts[1].header("location").is_none());
    assert_eq!(parts[1].body, small);
}

async fn federation_parts(
    server: &TestServer,
    remote: &FakeRemote,
    id: &str,
) -> Vec<crate::federation::Part> {
    let uri = format!("/_matrix/federation/v1/media/download/{id}");
    let mut res = server
        .client
        .get(server.url(&uri))
        .insert_header(("authorization", remote.sign("GET", &uri, "localhost")))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    let content_type = header(res.headers(), "content-type").unwrap().to_owned();
    let body = res.body().limit(2 << 20).await.unwrap();
    let parts = parse_multipart(&content_type, &body);
    assert_eq!(parts.len(), 2);
    parts
}

fn sha256_hex(bytes: &[u8]) -> String {
    use sha2::Digest as _;
    hex::encode(sha2::Sha256::digest(bytes))
}
