//! The thumbnailer cannot be pinned by one file: sources whose structure promises too much
//! work are refused before decoding, a job past its time budget is answered and cut loose
//! while other thumbnails keep flowing, and a source that failed is not decoded again.

use std::time::{Duration, Instant};

use futures_util::future::join_all;

use crate::common::{ALICE, BOB, TestServer, assert_error};

const PHOTO: &[u8] = include_bytes!("../fixtures/photo_640x480.jpg");

fn thumb_url(server: &TestServer, id: &str, query: &str) -> String {
    server.url(&format!(
        "/_matrix/client/v1/media/thumbnail/localhost/{id}?{query}"
    ))
}

/// A `size`×`size` progressive JPEG (`components` 1, 3 or 4, all 1x1 sampled) of flat blocks,
/// with one DC scan and `ac_scans` AC scans of end-of-band runs: two bytes a scan, each a full
/// pass over a component for the decoder. `size` is a multiple of 1024.
pub fn scan_bomb(size: u16, components: u8, ac_scans: u32) -> Vec<u8> {
    fn segment(out: &mut Vec<u8>, marker: u8, data: &[u8]) {
        out.extend([0xFF, marker]);
        out.extend(u16::try_from(data.len() + 2).unwrap().to_be_bytes());
        out.extend(data);
    }
    let mut out = vec![0xFF, 0xD8];
    if components == 4 {
        segment(&mut out, 0xEE, b"Adobe\x00\x64\x00\x00\x00\x00\x00");
    }
    segment(&mut out, 0xDB, &[[0u8].as_slice(), &[1; 64]].concat());
    let mut sof = vec![8];
    sof.extend(size.to_be_bytes());
    sof.extend(size.to_be_bytes());
    sof.push(components);
    for c in 0..components {
        sof.extend([c + 1, 0x11, 0]);
    }
    segment(&mut out, 0xC2, &sof);
    for (class, symbol) in [(0x00, 0x00), (0x10, 0xE0)] {
        let mut table = vec![class, 1];
        table.extend([0u8; 15]);
        table.push(symbol);
        segment(&mut out, 0xC4, &table);
    }
    let blocks = (usize::from(size) / 8).pow(2);
    let mut sos = vec![components];
    for c in 0..components {
        sos.extend([c + 1, 0]);
    }
    sos.extend([0, 0, 0]);
    segment(&mut out, 0xDA, &sos);
    out.extend(vec![0u8; (blocks * usize::from(components)).div_ceil(8)]);
    for i in 0..ac_scans {
        let component = u8::try_from(i % u32::from(components)).unwrap() + 1;
        segment(&mut out, 0xDA, &[1, component, 0, 1, 63, 0]);
        out.extend(vec![0u8; (blocks / 16_384 * 15).div_ceil(8)]);
    }
    out.extend([0xFF, 0xD9]);
    out
}

/// A 200x200 GIF (larger than the thumbnail asked for, so the original will not do) whose one
/// frame follows `blocks` comment extensions.
fn block_bomb(blocks: usize) -> Vec<u8> {
    let mut gif = b"GIF89a".to_vec();
    gif.extend([200, 0, 200, 0, 0x80, 0, 0, 0, 0, 0, 255, 255, 255]);
    for _ in 0..blocks {
        gif.extend([0x21, 0xFE, 1, b'x', 0]);
    }
    gif.extend([0x2C, 0, 0, 0, 0, 4, 0, 4, 0, 0, 2, 2, 0x84, 0x51, 0, 0x3B]);
    gif
}

/// A 5600x5600 RGB PNG (31 Mpx, under the 32 Mpx limit): a few megabytes that take a few
/// hundred milliseconds to inflate and unfilter.
fn large_png() -> Vec<u8> {
    let side = 5600u32;
    let mut out = Vec::new();
    {
        let mut encoder = png::Encoder::new(&mut out, side, side);
        encoder.set_color(png::ColorType::Rgb);
        encoder.set_compression(png::Compression::Fast);
        let mut writer = encoder.write_header().unwrap();
        let row: Vec<u8> = (0..side)
            .flat_map(|x| {
                let v = u8::try_from(x * 255 / side).unwrap();
                [v, 255 - v, v / 2]
            })
            .collect();
        let pixels = row.repeat(usize::try_from(side).unwrap());
        writer.write_image_data(&pixels).unwrap();
    }
    out
}

/// Progressive JPEGs of 5 000 two-byte scans (YCbCr, which libjpeg-turbo refuses and the
/// fallback decoder would decode, and CMYK, which goes to the fallback directly) and a GIF of
/// 150 000 blocks get 413 `M_TOO_LARGE` at once, twenty requests at a time, without a render;
/// a normal thumbnail asked for meanwhile is made as usual.
#[actix_web::test]
async fn costly_sources_are_refused_before_decoding() {
    let server = TestServer::start_with(|c| c.thumbnails.workers = 2).await;
    let mut hostile = Vec::new();
    for src in [
        scan_bomb(2048, 3, 5_000),
        scan_bomb(2048, 4, 5_000),
        block_bomb(150_000),
    ] {
        hostile.push(server.upload(&src, "image/jpeg", None).await);
    }
    let photo = server.upload(PHOTO, "image/jpeg", None).await;
    let started = Instant::now();
    let attack = join_all((0..20).map(|i| {
        let url = thumb_url(
            &server,
            &hostile[i % hostile.len()],
            "width=96&height=96&method=crop",
        );
        let client = server.client.clone();
        async move {
            let mut res = client.get(url).bearer_auth(BOB).send().await.unwrap();
            assert_error(&mut res, 413, "M_TOO_LARGE").await;
        }
    }));
    let normal = async {
        let mut res = server
            .get_as(thumb_url(&server, &photo, "width=320&height=240"), ALICE)
            .await;
        assert_eq!(res.status(), 200);
        assert!(!res.body().await.unwrap().is_empty());
    };
    futures_util::join!(attack, normal);
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "took {:?}",
        started.elapsed()
    );
    let thumbnailer = server.media.thumbnailer();
    assert_eq!(thumbnailer.generated(), 1, "only the normal thumbnail");
    // About one render per source reached the engine, where the cost check refused it;
    // requests after that were answered from the failure memory (a request racing the first
    // refusal may still start one more).
    assert!(thumbnailer.attempted() <= 7, "{}", thumbnailer.attempted());
    let mut res = server
        .get_as(
            thumb_url(&server, &hostile[0], "width=96&height=96&method=crop"),
            BOB,
        )
        .await;
    let body: serde_json::Value = res.json().await.unwrap();
    assert!(
        body["error"].as_str().unwrap().contains("too costly"),
        "{body}"
    );
}

/// A job past its budget: its caller gets 413 at the budget, the pool replaces the busy thread
/// so another user's thumbnail is made at once, and asking again is answered from the failure
/// memory without a new render; the overrunning job's late result is not stored.
#[actix_web::test]
async fn overrunning_job_is_cut_loose() {
    let server = TestServer::start_with(|c| {
        c.thumbnails.workers = 1;
        c.thumbnails.job_timeout_secs = 0.1;
    })
    .await;
    let big = server.upload(&large_png(), "image/png", None).await;
    let photo = server.upload(PHOTO, "image/jpeg", None).await;
    let thumbnailer = server.media.thumbnailer();
    assert_eq!(thumbnailer.threads_started(), 1);

    let started = Instant::now();
    let mut res = server
        .get_as(thumb_url(&server, &big, "width=320&height=240"), ALICE)
        .await;
    assert_error(&mut res, 413, "M_TOO_LARGE").await;
    let waited = started.elapsed();
    assert!(
        waited < Duration::from_secs(2),
        "answered at the budget: {waited:?}"
    );

    let started = Instant::now();
    let mut res = server
        .get_as(thumb_url(&server, &photo, "width=320&height=240"), BOB)
        .await;
    assert_eq!(res.status(), 200);
    let probe = mxmedia_image::probe(&res.body().await.unwrap()).unwrap();
    assert_eq!((probe.width, probe.height), (320, 240));
    assert!(
        started.elapsed() < Duration::from_secs(1),
        "another user's thumbnail is not held up: {:?}",
        started.elapsed()
    );
    assert_eq!(
        thumbnailer.threads_started(),
        2,
        "the busy thread was replaced"
    );
    let attempts = thumbnailer.attempted();
    assert_eq!(attempts, 2);

    for _ in 0..3 {
        let started = Instant::now();
        let mut res = server
            .get_as(
                thumb_url(&server, &big, "width=96&height=96&method=crop"),
                ALICE,
            )
            .await;
        assert_error(&mut res, 413, "M_TOO_LARGE").await;
        assert!(started.elapsed() < Duration::from_millis(500));
    }
    assert_eq!(thumbnailer.attempted(), attempts, "no new render");
    // Once the overrunning decode ends, its result is dropped: nothing new is stored.
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(thumbnailer.generated(), 1);
    let mut res = server
        .get_as(thumb_url(&server, &big, "width=320&height=240"), ALICE)
        .await;
    assert_error(&mut res, 413, "M_TOO_LARGE").await;
}
