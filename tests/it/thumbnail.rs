//! Thumbnails through HTTP: sizes, methods, originals, animation, hostile input, single flight.

use crate::common::{ALICE, TestServer, assert_error};

const FIXTURES: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/crates/mxmedia-image/tests/fixtures/"
);

fn fixture(name: &str) -> Vec<u8> {
    std::fs::read(format!("{FIXTURES}{name}")).unwrap()
}

async fn thumb(
    server: &TestServer,
    id: &str,
    query: &str,
) -> awc::ClientResponse<
    impl futures_util::Stream<Item = Result<bytes::Bytes, awc::error::PayloadError>>,
> {
    server
        .get_as(
            server.url(&format!(
                "/_matrix/client/v1/media/thumbnail/localhost/{id}?{query}"
            )),
            ALICE,
        )
        .await
}

async fn generated(server: &TestServer) -> u64 {
    let mut res = server
        .client
        .get(server.url("/_mxmedia/health"))
        .send()
        .await
        .unwrap();
    let body: serde_json::Value = res.json().await.unwrap();
    body["thumbnails_generated"].as_u64().unwrap()
}

/// Scale fits the box keeping the aspect ratio; crop gives exactly the asked size; both JPEG for
/// an opaque photo, served inline with a thumbnail file name.
#[actix_web::test]
async fn scale_and_crop() {
    let server = TestServer::start().await;
    let id = server
        .upload(
            &fixture("photo_640x480.jpg"),
            "image/jpeg",
            Some("photo.jpg"),
        )
        .await;
    for (query, w, h) in [
        ("width=320&height=240&method=scale", 320, 240),
        ("width=96&height=96&method=crop", 96, 96),
        ("width=50&height=50&method=crop", 96, 96),
        ("width=300&height=300", 640, 480),
    ] {
        let mut res = thumb(&server, &id, query).await;
        assert_eq!(res.status(), 200, "{query}");
        assert_eq!(res.headers().get("content-type").unwrap(), "image/jpeg");
        assert_eq!(
            res.headers().get("content-disposition").unwrap(),
            "inline; filename=thumbnail.jpg"
        );
        assert!(res.headers().get("content-security-policy").is_some());
        let body = res.body().await.unwrap();
        let probe = mxmedia_image::probe(&body).unwrap();
        assert_eq!((probe.width, probe.height), (w, h), "{query}");
    }
}

/// A source no larger than the request is served as itself, never upscaled.
#[actix_web::test]
async fn small_source_is_served_as_is() {
    let server = TestServer::start().await;
    let png = fixture("tiny_64x64.png");
    let id = server.upload(&png, "image/png", None).await;
    let mut res = thumb(&server, &id, "width=96&height=96&method=crop").await;
    assert_eq!(res.status(), 200);
    assert_eq!(res.headers().get("content-type").unwrap(), "image/png");
    assert_eq!(
        res.headers().get("content-disposition").unwrap(),
        "inline; filename=thumbnail.png"
    );
    assert_eq!(res.body().await.unwrap(), png.as_slice());
    assert_eq!(generated(&server).await, 0);
}

/// `animated=true` on a GIF gives an animated thumbnail; `false` or absent a still image.
#[actix_web::test]
async fn animated_rules() {
    let server = TestServer::start().await;
    let id = server
        .upload(&fixture("anim_64x64_8f.gif"), "image/gif", None)
        .await;
    let mut res = thumb(&server, &id, "width=32&height=32&method=crop&animated=true").await;
    assert_eq!(res.status(), 200);
    assert_eq!(res.headers().get("content-type").unwrap(), "image/gif");
    assert!(
        mxmedia_image::probe(&res.body().await.unwrap())
            .unwrap()
            .animated
    );
    for query in [
        "width=32&height=32&method=crop&animated=false",
        "width=32&height=32&method=crop",
        "width=96&height=96",
    ] {
        let mut res = thumb(&server, &id, query).await;
        assert_eq!(res.status(), 200, "{query}");
        let probe = mxmedia_image::probe(&res.body().await.unwrap()).unwrap();
        assert!(!probe.animated, "{query}");
    }
}

/// What cannot be thumbnailed gets the spec's errors, and the server stays up.
#[actix_web::test]
async fn hostile_and_unsupported_sources() {
    let server = TestServer::start().await;
    let cases = [
        ("bomb_50000x50000.png", 413, "M_TOO_LARGE"),
        ("bomb_valid_20000x20000.png", 413, "M_TOO_LARGE"),
        ("garbage_after_png_sig.png", 400, "M_UNKNOWN"),
    ];
    for (name, status, errcode) in cases {
        let id = server.upload(&fixture(name), "image/png", None).await;
        let mut res = thumb(&server, &id, "width=96&height=96&method=crop").await;
        assert_error(&mut res, status, errcode).await;
    }
    let id = server
        .upload(b"%PDF-1.4 not an image", "application/pdf", None)
        .await;
    let mut res = thumb(&server, &id, "width=96&height=96").await;
    assert_error(&mut res, 400, "M_UNKNOWN").await;
    // A truncated JPEG still gives a thumbnail (the missing rows are filled).
    let id = server
        .upload(&fixture("truncated_640x480.jpg"), "image/jpeg", None)
        .await;
    assert_eq!(
        thumb(&server, &id, "width=96&height=96&method=crop")
            .await
            .status(),
        200
    );
    let id = server
        .upload(&fixture("photo_640x480.jpg"), "image/jpeg", None)
        .await;
    assert_eq!(
        thumb(&server, &id, "width=32&height=32&method=crop")
            .await
            .status(),
        200
    );
}

/// A real, valid 30000x30000 PNG (1-bit, so the file is small): everything but the pixels.
fn huge_png() -> Vec<u8> {
    let side = 30_000;
    let mut out = Vec::new();
    let mut encoder = png::Encoder::new(&mut out, side, side);
    encoder.set_color(png::ColorType::Grayscale);
    encoder.set_depth(png::BitDepth::One);
    encoder.set_compression(png::Compression::Fast);
    let mut writer = encoder.write_header().unwrap();
    let mut stream = writer.stream_writer().unwrap();
    let row = vec![0b1010_1010u8; side as usize / 8];
    for _ in 0..side {
        std::io::Write::write_all(&mut stream, &row).unwrap();
    }
    stream.finish().unwrap();
    writer.finish().unwrap();
    out
}

/// The type comes from the bytes, never from the uploader's Content-Type; a file whose magic
/// lies about what follows is refused; a real 900-megapixel image is refused from its header,
/// and the thumbnailer goes on serving.
#[actix_web::test]
async fn lying_and_enormous_sources() {
    let server = TestServer::start().await;
    let jpeg_as_png = server
        .upload(&fixture("photo_640x480.jpg"), "image/png", None)
        .await;
    let mut res = thumb(&server, &jpeg_as_png, "width=96&height=96&method=crop").await;
    assert_eq!(res.status(), 200);
    assert_eq!(res.headers().get("content-type").unwrap(), "image/jpeg");
    let out = mxmedia_image::probe(&res.body().await.unwrap()).unwrap();
    assert_eq!((out.width, out.height), (96, 96));

    let mut gif_then_jpeg = b"GIF89a".to_vec();
    gif_then_jpeg.extend_from_slice(&fixture("photo_640x480.jpg"));
    let id = server.upload(&gif_then_jpeg, "image/gif", None).await;
    let mut res = thumb(&server, &id, "width=96&height=96&method=crop").await;
    assert_error(&mut res, 400, "M_UNKNOWN").await;

    let huge = huge_png();
    assert!(huge.len() < 1024 * 1024, "{} bytes", huge.len());
    let id = server.upload(&huge, "image/png", None).await;
    for query in ["width=32&height=32&method=crop", "width=800&height=600"] {
        let mut res = thumb(&server, &id, query).await;
        assert_error(&mut res, 413, "M_TOO_LARGE").await;
    }

    let mut res = thumb(&server, &jpeg_as_png, "width=320&height=240&method=scale").await;
    assert_eq!(res.status(), 200);
    let out = mxmedia_image::probe(&res.body().await.unwrap()).unwrap();
    assert_eq!((out.width, out.height), (320, 240));
}

/// Bad parameters are refused with the right errcode before any work.
#[actix_web::test]
async fn bad_parameters() {
    let server = TestServer::start().await;
    let id = server
        .upload(&fixture("photo_640x480.jpg"), "image/jpeg", None)
        .await;
    for (query, errcode) in [
        ("height=96", "M_MISSING_PARAM"),
        ("width=96", "M_MISSING_PARAM"),
        ("width=abc&height=96", "M_INVALID_PARAM"),
        ("width=0&height=96", "M_INVALID_PARAM"),
        ("width=-5&height=96", "M_INVALID_PARAM"),
        ("width=96&height=96&method=zoom", "M_INVALID_PARAM"),
        ("width=96&height=96&animated=yes", "M_INVALID_PARAM"),
    ] {
        let mut res = thumb(&server, &id, query).await;
        assert_error(&mut res, 400, errcode).await;
    }
    let mut res = thumb(&server, "unknownMedia", "width=96&height=96").await;
    assert_error(&mut res, 404, "M_NOT_FOUND").await;
    let mut res = server
        .client
        .get(server.url(&format!(
            "/_matrix/client/v1/media/thumbnail/localhost/{id}?width=9&height=9"
        )))
        .send()
        .await
        .unwrap();
    assert_error(&mut res, 401, "M_MISSING_TOKEN").await;
}

/// Twenty concurrent requests for one thumbnail render it once; media sharing a hash share it.
#[actix_web::test]
async fn single_flight_and_shared_by_hash() {
    let server = TestServer::start().await;
    let photo = fixture("photo_640x480.jpg");
    let a = server.upload(&photo, "image/jpeg", None).await;
    let b = server.upload(&photo, "image/jpeg", None).await;
    let requests = (0..20).map(|i| {
        let id = if i % 2 == 0 { a.clone() } else { b.clone() };
        let server = &server;
        async move {
            let mut res = thumb(server, &id, "width=320&height=240&method=scale").await;
            assert_eq!(res.status(), 200);
            res.body().await.unwrap()
        }
    });
    let bodies = futures_util::future::join_all(requests).await;
    assert!(
        bodies.windows(2).all(|w| w[0] == w[1]),
        "everyone got the same bytes"
    );
    assert_eq!(
        generated(&server).await,
        1,
        "one render for twenty requests"
    );
    let mut res = thumb(&server, &b, "width=320&height=240&method=scale").await;
    assert_eq!(res.body().await.unwrap(), bodies[0]);
    assert_eq!(
        generated(&server).await,
        1,
        "served from the store afterwards"
    );
}

/// A large photo-like JPEG made in memory.
fn big_jpeg() -> Vec<u8> {
    let img = image::RgbImage::from_fn(2400, 1600, |x, y| {
        image::Rgb([(x / 12) as u8, (y / 8) as u8, ((x + y) / 20) as u8])
    });
    let mut out = std::io::Cursor::new(Vec::new());
    image::DynamicImage::ImageRgb8(img)
        .write_to(&mut out, image::ImageFormat::Jpeg)
        .unwrap();
    out.into_inner()
}

/// A flood of thumbnail work beyond the queue is refused with 429 and a retry hint, while
/// downloads keep being served.
#[actix_web::test]
async fn thumbnail_flood_gets_429_and_downloads_go_on() {
    let server = TestServer::start_with(|c| {
        c.thumbnails.workers = 1;
        c.thumbnails.queue = 1;
    })
    .await;
    let jpeg = big_jpeg();
    let mut ids = Vec::new();
    for seed in 0..12u8 {
        // Bytes after the end marker make each a distinct source, with nothing cached.
        let mut source = jpeg.clone();
        source.extend_from_slice(&[seed; 8]);
        ids.push(server.upload(&source, "image/jpeg", None).await);
    }
    let small = server.upload(b"download me", "text/plain", None).await;
    let flood = ids
        .iter()
        .map(|id| thumb(&server, id, "width=320&height=240"));
    let download = async {
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        let started = std::time::Instant::now();
        let mut res = server.get_as(server.download_url(&small), ALICE).await;
        assert_eq!(res.status(), 200);
        assert_eq!(res.body().await.unwrap(), "download me");
        started.elapsed()
    };
    let (responses, download_took) = tokio::join!(futures_util::future::join_all(flood), download);
    let mut limited = 0;
    for mut res in responses {
        match res.status().as_u16() {
            200 => {}
            429 => {
                limited += 1;
                assert!(res.headers().get("retry-after").is_some());
                let body: serde_json::Value = res.json().await.unwrap();
                assert_eq!(body["errcode"], "M_LIMIT_EXCEEDED");
                assert!(body["retry_after_ms"].as_u64().unwrap() > 0);
            }
            other => panic!("unexpected status {other}"),
        }
    }
    assert!(
        limited > 0,
        "a queue of one cannot take twelve jobs at once"
    );
    assert!(
        download_took < std::time::Duration::from_secs(2),
        "download waited {download_took:?}"
    );
}
