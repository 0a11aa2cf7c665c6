//! Direct uploads: what is stored, what comes back, and what is refused.

use crate::common::{ALICE, TestServer, Tmpfs, assert_error, count_files, pseudo_random};
use actix_web::http::Method;

/// An upload is served back byte for byte with the declared type and file name.
#[actix_web::test]
async fn upload_then_download_roundtrip() {
    let server = TestServer::start().await;
    let png = include_bytes!("../fixtures/tiny_64x64.png");
    let id = server.upload(png, "image/png", Some("cat.png")).await;
    let mut res = server.get_as(server.download_url(&id), ALICE).await;
    assert_eq!(res.status(), 200);
    let h = res.headers().clone();
    assert_eq!(h.get("content-type").unwrap(), "image/png");
    assert_eq!(
        h.get("content-disposition").unwrap(),
        "inline; filename=cat.png"
    );
    assert_eq!(h.get("x-content-type-options").unwrap(), "nosniff");
    assert_eq!(
        h.get("cross-origin-resource-policy").unwrap(),
        "cross-origin"
    );
    assert!(
        h.get("content-security-policy")
            .unwrap()
            .to_str()
            .unwrap()
            .starts_with("sandbox;")
    );
    assert!(
        h.get("cache-control")
            .unwrap()
            .to_str()
            .unwrap()
            .contains("immutable")
    );
    assert_eq!(h.get("access-control-allow-origin").unwrap(), "*");
    assert_eq!(res.body().await.unwrap(), png.as_slice());
}

/// Without a Content-Type the media is served as an octet-stream attachment.
#[actix_web::test]
async fn missing_content_type_is_octet_stream_attachment() {
    let server = TestServer::start().await;
    let res = server
        .send_as(
            Method::POST,
            server.url("/_matrix/media/v3/upload"),
            ALICE,
            "raw bytes",
        )
        .await;
    assert_eq!(res.status(), 200);
    let mut res = res;
    let body: serde_json::Value = res.json().await.unwrap();
    let id = body["content_uri"]
        .as_str()
        .unwrap()
        .rsplit('/')
        .next()
        .unwrap()
        .to_owned();
    let res = server.get_as(server.download_url(&id), ALICE).await;
    assert_eq!(
        res.headers().get("content-type").unwrap(),
        "application/octet-stream"
    );
    assert_eq!(
        res.headers().get("content-disposition").unwrap(),
        "attachment"
    );
}

/// Active content (HTML, SVG) is never offered inline; text gets a charset.
#[actix_web::test]
async fn active_content_is_attachment() {
    let server = TestServer::start().await;
    for (ty, name, sent_type, disposition) in [
        (
            "text/html",
            "x.html",
            "text/html; charset=UTF-8",
            "attachment; filename=x.html",
        ),
        (
            "image/svg+xml",
            "a.svg",
            "image/svg+xml; charset=UTF-8",
            "attachment; filename=a.svg",
        ),
        (
            "text/plain",
            "日本 語.txt",
            "text/plain; charset=UTF-8",
            "inline; filename*=utf-8''%E6%97%A5%E6%9C%AC%20%E8%AA%9E.txt",
        ),
    ] {
        let id = server
            .upload(b"<script>alert(1)</script>", ty, Some(name))
            .await;
        let res = server.get_as(server.download_url(&id), ALICE).await;
        assert_eq!(res.headers().get("content-type").unwrap(), sent_type);
        assert_eq!(
            res.headers().get("content-disposition").unwrap(),
            disposition
        );
    }
}

/// The `{fileName}` path form replaces the stored name in Content-Disposition.
#[actix_web::test]
async fn download_with_file_name_overrides_name() {
    let server = TestServer::start().await;
    let id = server.upload(b"hello", "text/plain", Some("a.txt")).await;
    let url = format!("{}/other%20name.txt", server.download_url(&id));
    let mut res = server.get_as(url, ALICE).await;
    assert_eq!(res.status(), 200);
    assert_eq!(
        res.headers().get("content-disposition").unwrap(),
        "inline; filename*=utf-8''other%20name.txt"
    );
    assert_eq!(res.body().await.unwrap(), "hello");
}

/// A declared Content-Length over the limit is refused before the body is read; a chunked body
/// that grows past it is cut off. Neither leaves a file behind.
#[actix_web::test]
async fn too_large_uploads_are_refused_and_leave_nothing() {
    let server =
        TestServer::start_with(|c| c.media.max_upload_size = bytesize::ByteSize::kib(512)).await;
    let big = pseudo_random(600 * 1024, 1);
    let mut res = server
        .send_as(
            Method::POST,
            server.url("/_matrix/media/v3/upload"),
            ALICE,
            big.clone(),
        )
        .await;
    assert_error(&mut res, 413, "M_TOO_LARGE").await;

    let chunks: Vec<Result<bytes::Bytes, std::io::Error>> = big
        .chunks(64 * 1024)
        .map(|c| Ok(bytes::Bytes::copy_from_slice(c)))
        .collect();
    let mut res = server
        .client
        .post(server.url("/_matrix/media/v3/upload"))
        .bearer_auth(ALICE)
        .send_stream(futures_util::stream::iter(chunks))
        .await
        .unwrap();
    assert_error(&mut res, 413, "M_TOO_LARGE").await;
    tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    assert_eq!(
        server.stored_files(),
        (0, 0),
        "no blob and no staging file left"
    );

    // Exactly at the limit is fine.
    let id = server
        .upload(&big[..512 * 1024], "application/octet-stream", None)
        .await;
    assert!(!id.is_empty());
}

/// The config endpoint advertises the enforced limit, on both prefixes.
#[actix_web::test]
async fn config_reports_upload_limit() {
    let server =
        TestServer::start_with(|c| c.media.max_upload_size = bytesize::ByteSize::mib(7)).await;
    for path in [
        "/_matrix/client/v1/media/config",
        "/_matrix/media/v3/config",
    ] {
        let mut res = server.get_as(server.url(path), ALICE).await;
        assert_eq!(res.status(), 200);
        let body: serde_json::Value = res.json().await.unwrap();
        assert_eq!(body["m.upload.size"], 7 * 1024 * 1024);
    }
}

/// Identical content uploaded twice gets two ids and is stored once.
#[actix_web::test]
async fn identical_uploads_are_stored_once() {
    let server = TestServer::start().await;
    let bytes = pseudo_random(1024 * 1024, 2);
    let a = server
        .upload(&bytes, "application/octet-stream", Some("a.bin"))
        .await;
    let b = server
        .upload(&bytes, "application/octet-stream", Some("b.bin"))
        .await;
    assert_ne!(a, b);
    assert_eq!(server.stored_files().0, 1);
    for (id, name) in [(a, "a.bin"), (b, "b.bin")] {
        let mut res = server.get_as(server.download_url(&id), ALICE).await;
        assert_eq!(
            res.headers().get("content-disposition").unwrap(),
            &format!("attachment; filename={name}")
        );
        assert_eq!(res.body().limit(2 << 20).await.unwrap(), bytes.as_slice());
    }
}

/// Below the free-space floor uploads are refused before anything is written.
#[actix_web::test]
async fn low_disk_space_refuses_uploads() {
    let server = TestServer::start_with(|c| {
        c.store.min_free_space = mxmedia::config::FreeSpace::Percent(99.99)
    })
    .await;
    let mut res = server
        .send_as(
            Method::POST,
            server.url("/_matrix/media/v3/upload"),
            ALICE,
            "data",
        )
        .await;
    assert_error(&mut res, 507, "M_UNKNOWN").await;
    assert_eq!(server.stored_files(), (0, 0));
}

/// A client that disconnects mid-upload leaves no file and no media behind.
#[actix_web::test]
async fn aborted_upload_leaves_nothing() {
    use tokio::io::AsyncWriteExt as _;
    let server = TestServer::start().await;
    let addr = server.base.trim_start_matches("http://").to_owned();
    let mut stream = tokio::net::TcpStream::connect(&addr).await.unwrap();
    let head = format!(
        "POST /_matrix/media/v3/upload HTTP/1.1\r\nHost: {addr}\r\nAuthorization: Bearer {ALICE}\r\nContent-Length: 2000000\r\n\r\n"
    );
    stream.write_all(head.as_bytes()).await.unwrap();
    stream.write_all(&pseudo_random(700_000, 3)).await.unwrap();
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    drop(stream);
    tokio::time::sleep(std::time::Duration::from_millis(500)).await;
    assert_eq!(server.stored_files(), (0, 0));
}

/// Concurrent chunked uploads share the free-space floor: each reserves what it receives, so
/// when their sum would cross the floor the one that crosses it gets 507 and leaves no file,
/// while the others, which fit, are stored. With blobs in S3 the bodies stream into the
/// bucket, using no local disk: all three are stored.
#[actix_web::test]
async fn concurrent_chunked_uploads_cannot_cross_the_free_space_floor() {
    let Some(fs) = Tmpfs::mount("64m") else {
        eprintln!("skipped: needs root to mount a tmpfs");
        return;
    };
    let data_dir = fs.dir.path().join("data");
    let server = TestServer::start_with(|c| {
        c.data_dir = data_dir.clone();
        // About 30 MiB above the floor, less what sled takes: two 12 MiB uploads fit, three
        // (36 MiB) cannot.
        c.store.min_free_space = mxmedia::config::FreeSpace::Bytes(34 << 20);
    })
    .await;
    const LEN: usize = 12 << 20;
    let upload = |seed: u64| {
        let body = pseudo_random(LEN, seed);
        let chunks = futures_util::stream::unfold(0, move |at| {
            let body = body.clone();
            async move {
                if at >= body.len() {
                    return None;
                }
                // Slow enough that the three bodies arrive interleaved.
                tokio::time::sleep(std::time::Duration::from_millis(5)).await;
                let end = (at + 256 * 1024).min(body.len());
                let chunk = bytes::Bytes::copy_from_slice(&body[at..end]);
                Some((Ok::<_, std::io::Error>(chunk), end))
            }
        });
        server
            .client
            .post(server.url("/_matrix/media/v3/upload"))
            .bearer_auth(ALICE)
            .send_stream(chunks)
    };
    let results = futures_util::future::join_all([upload(1), upload(2), upload(3)]).await;
    let mut statuses = Vec::new();
    for res in results {
        let mut res = res.unwrap();
        let status = res.status().as_u16();
        if status == 507 {
            assert_error(&mut res, 507, "M_UNKNOWN").await;
        }
        statuses.push(status);
    }
    statuses.sort_unstable();
    let s3 = crate::garage::backend_is_s3();
    assert_eq!(statuses, if s3 { [200; 3] } else { [200, 200, 507] });
    tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    assert_eq!(
        count_files(&data_dir.join("tmp")),
        0,
        "the refused upload left no staging file"
    );
    assert_eq!(
        server.blob_count(),
        if s3 { 3 } else { 2 },
        "on disk or in the bucket"
    );
    drop(server);
    // Let the server release its files before the tmpfs goes.
    tokio::time::sleep(std::time::Duration::from_millis(200)).await;
}
