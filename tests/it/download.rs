//! Downloads: ranges, conditional requests, HEAD, path validation and the route table.

use crate::common::{ALICE, TestServer, assert_error, pseudo_random};

/// Single ranges give 206 with the right bytes, for inline and file-backed blobs alike.
#[actix_web::test]
async fn range_requests() {
    let server = TestServer::start().await;
    for len in [100_000usize, 3 * 1024 * 1024 + 17] {
        let bytes = pseudo_random(len, len as u64);
        let id = server.upload(&bytes, "video/mp4", None).await;
        let get = |range: &str| {
            server
                .client
                .get(server.download_url(&id))
                .bearer_auth(ALICE)
                .insert_header(("range", range.to_owned()))
                .send()
        };
        let mut res = get("bytes=10-19").await.unwrap();
        assert_eq!(res.status(), 206);
        assert_eq!(
            res.headers().get("content-range").unwrap(),
            &format!("bytes 10-19/{len}")
        );
        assert_eq!(res.body().await.unwrap(), &bytes[10..20]);
        let mut res = get("bytes=-5").await.unwrap();
        assert_eq!(res.status(), 206);
        assert_eq!(res.body().await.unwrap(), &bytes[len - 5..]);
        let mut res = get(&format!("bytes={}-", len - 300_000.min(len - 1)))
            .await
            .unwrap();
        assert_eq!(res.status(), 206);
        assert_eq!(
            res.body().limit(1 << 20).await.unwrap(),
            &bytes[len - 300_000.min(len - 1)..]
        );
        let res = get(&format!("bytes={len}-")).await.unwrap();
        assert_eq!(res.status(), 416);
        assert_eq!(
            res.headers().get("content-range").unwrap(),
            &format!("bytes */{len}")
        );
        let mut res = server.get_as(server.download_url(&id), ALICE).await;
        assert_eq!(res.status(), 200);
        assert_eq!(res.headers().get("accept-ranges").unwrap(), "bytes");
        assert_eq!(res.body().limit(4 << 20).await.unwrap(), bytes.as_slice());
    }
}

/// The ETag is strong and stable; If-None-Match gives 304 (after auth), a stale If-Range the
/// full body.
#[actix_web::test]
async fn conditional_requests() {
    let server = TestServer::start().await;
    let id = server.upload(b"conditional", "text/plain", None).await;
    let res = server.get_as(server.download_url(&id), ALICE).await;
    let etag = res
        .headers()
        .get("etag")
        .unwrap()
        .to_str()
        .unwrap()
        .to_owned();
    assert!(etag.starts_with('"') && !etag.starts_with("W/"));
    let res = server
        .client
        .get(server.download_url(&id))
        .bearer_auth(ALICE)
        .insert_header(("if-none-match", etag.clone()))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 304);
    let mut res = server
        .client
        .get(server.download_url(&id))
        .insert_header(("if-none-match", etag.clone()))
        .send()
        .await
        .unwrap();
    assert_error(&mut res, 401, "M_MISSING_TOKEN").await;
    let mut res = server
        .client
        .get(server.download_url(&id))
        .bearer_auth(ALICE)
        .insert_header(("range", "bytes=0-3"))
        .insert_header(("if-range", "\"stale\""))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    assert_eq!(res.body().await.unwrap(), "conditional");
}

/// HEAD answers like GET, with the length, and no body.
#[actix_web::test]
async fn head_request() {
    let server = TestServer::start().await;
    let bytes = pseudo_random(2 * 1024 * 1024, 9);
    let id = server
        .upload(&bytes, "application/pdf", Some("doc.pdf"))
        .await;
    let mut res = server
        .client
        .head(server.download_url(&id))
        .bearer_auth(ALICE)
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    assert_eq!(
        res.headers().get("content-length").unwrap(),
        &bytes.len().to_string()
    );
    assert_eq!(
        res.headers().get("content-disposition").unwrap(),
        "attachment; filename=doc.pdf"
    );
    assert!(res.body().await.unwrap().is_empty());
}

/// Ids outside the grammar never reach storage: 404 for ids, 400 for server names; remote and
/// unknown media are 404.
#[actix_web::test]
async fn bad_and_unknown_paths() {
    let server = TestServer::start().await;
    for (path, status, errcode) in [
        (
            "/_matrix/client/v1/media/download/localhost/..%2F..%2Fdb",
            404,
            "M_NOT_FOUND",
        ),
        (
            "/_matrix/client/v1/media/download/localhost/%2E%2E",
            404,
            "M_NOT_FOUND",
        ),
        (
            "/_matrix/client/v1/media/download/localhost/abc.def",
            404,
            "M_NOT_FOUND",
        ),
        (
            "/_matrix/client/v1/media/download/bad_server!/abcdef",
            400,
            "M_INVALID_PARAM",
        ),
        (
            "/_matrix/client/v1/media/download/..%2F../abcdef",
            400,
            "M_INVALID_PARAM",
        ),
        (
            "/_matrix/client/v1/media/download/localhost/doesNotExist",
            404,
            "M_NOT_FOUND",
        ),
        // Remote media is fetched, but loopback is on the default denylist: 502, nothing asked.
        (
            "/_matrix/client/v1/media/download/127.0.0.1:1/abcdef",
            502,
            "M_UNKNOWN",
        ),
        (
            "/_matrix/client/v1/media/download/localhost/abc?timeout_ms=soon",
            400,
            "M_INVALID_PARAM",
        ),
        (
            "/_matrix/client/v1/media/nothing_here",
            404,
            "M_UNRECOGNIZED",
        ),
        ("/totally/unknown", 404, "M_UNRECOGNIZED"),
    ] {
        let mut res = server.get_as(server.url(path), ALICE).await;
        assert_error(&mut res, status, errcode).await;
    }
    let mut res = server
        .client
        .post(server.url("/_matrix/client/v1/media/config"))
        .bearer_auth(ALICE)
        .send()
        .await
        .unwrap();
    assert_error(&mut res, 405, "M_UNRECOGNIZED").await;
    let mut res = server
        .client
        .post(server.url("/_matrix/client/v1/media/download/localhost/abc"))
        .send()
        .await
        .unwrap();
    assert_error(&mut res, 405, "M_UNRECOGNIZED").await;
    let mut res = server
        .client
        .delete(server.url("/_matrix/media/v3/upload"))
        .bearer_auth(ALICE)
        .send()
        .await
        .unwrap();
    assert_error(&mut res, 405, "M_UNRECOGNIZED").await;
}

/// OPTIONS is answered with CORS headers and no auth, without running the endpoint.
#[actix_web::test]
async fn options_preflight() {
    let server = TestServer::start().await;
    for path in [
        "/_matrix/media/v3/upload",
        "/_matrix/client/v1/media/download/localhost/abc",
        "/anything",
    ] {
        let res = server
            .client
            .request(actix_web::http::Method::OPTIONS, server.url(path))
            .send()
            .await
            .unwrap();
        assert!(res.status().is_success(), "{path}");
        let h = res.headers();
        assert_eq!(h.get("access-control-allow-origin").unwrap(), "*");
        assert!(
            h.get("access-control-allow-methods")
                .unwrap()
                .to_str()
                .unwrap()
                .contains("PUT")
        );
        assert!(
            h.get("access-control-allow-headers")
                .unwrap()
                .to_str()
                .unwrap()
                .contains("Authorization")
        );
    }
    assert_eq!(server.stored_files(), (0, 0));
}

/// The deprecated unauthenticated endpoints are frozen unless the admin opts back in.
#[actix_web::test]
async fn legacy_download_is_frozen_by_default() {
    let server = TestServer::start().await;
    let id = server.upload(b"old client", "text/plain", None).await;
    let mut res = server
        .client
        .get(server.url(&format!("/_matrix/media/v3/download/localhost/{id}")))
        .send()
        .await
        .unwrap();
    assert_error(&mut res, 404, "M_NOT_FOUND").await;

    let server = TestServer::start_with(|c| c.media.legacy_unauthenticated_downloads = true).await;
    let id = server.upload(b"old client", "text/plain", None).await;
    for prefix in ["v3", "r0"] {
        let mut res = server
            .client
            .get(server.url(&format!(
                "/_matrix/media/{prefix}/download/localhost/{id}/x.txt"
            )))
            .send()
            .await
            .unwrap();
        assert_eq!(res.status(), 200);
        assert_eq!(
            res.headers().get("content-disposition").unwrap(),
            "inline; filename=x.txt"
        );
        assert_eq!(res.body().await.unwrap(), "old client");
    }
    let mut res = server
        .client
        .get(server.url(&format!(
            "/_matrix/media/v3/download/localhost/{id}?allow_remote=maybe"
        )))
        .send()
        .await
        .unwrap();
    assert_error(&mut res, 400, "M_INVALID_PARAM").await;
}

/// Metrics are served on their own listener, never on the main one, and count requests.
#[actix_web::test]
async fn metrics_on_separate_listener() {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let server =
        TestServer::start_with(move |c| c.metrics.listen = Some(([127, 0, 0, 1], port).into()))
            .await;
    let id = server.upload(b"counted", "text/plain", None).await;
    let res = server.get_as(server.download_url(&id), ALICE).await;
    assert_eq!(res.status(), 200);
    let mut res = server
        .client
        .get(server.url("/metrics"))
        .send()
        .await
        .unwrap();
    assert_error(&mut res, 404, "M_UNRECOGNIZED").await;
    let mut res = server
        .client
        .get(format!("http://127.0.0.1:{port}/metrics"))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    let text = String::from_utf8(res.body().await.unwrap().to_vec()).unwrap();
    assert!(text.contains("mxmedia_http_requests_total"), "{text}");
    assert!(text.contains("endpoint=\"download\""), "{text}");
    assert!(text.contains("mxmedia_upload_bytes_total"), "{text}");
}
