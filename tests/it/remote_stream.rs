//! Remote media streamed while it is fetched, against a fake origin that trickles its bytes
//! (2 MiB/s) and can drop the connection midway: the first byte long before the last, waiters
//! joining at any moment served from the spool, a failure midway a broken transfer for every
//! reader with nothing stored, ranges served as soon as they have arrived, a takedown cutting
//! readers off, and a thumbnail asked meanwhile waiting for that one fetch.

use std::{
    sync::atomic::Ordering,
    time::{Duration, Instant},
};

use futures_util::{StreamExt as _, future::join_all};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};

use crate::{
    common::{ALICE, pseudo_random},
    fake_media::{File, Mode},
    remote::{FED_DOWNLOAD, FED_THUMBNAIL, PHOTO, Setup},
};

const MIB: usize = 1 << 20;

fn trickled(bytes: Vec<u8>, content_type: &str) -> File {
    let mut file = File::new(bytes, content_type);
    file.mode = Mode::Trickle;
    file
}

/// Waits until the origin has sent `n` media bytes.
async fn sent(setup: &Setup, n: usize) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while setup.host.trickled.load(Ordering::SeqCst) < n as u64 {
        assert!(Instant::now() < deadline, "the origin never sent {n} bytes");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

/// A download over a raw connection, judged the way any HTTP client judges one: its status,
/// when its first body byte came, and its body, `Err` unless its framing says it is complete
/// (as many bytes as `Content-Length`, or chunks up to the final empty one).
async fn download(_setup: &Setup, url: &str) -> (u16, Duration, Result<Vec<u8>, String>) {
    let rest = url.strip_prefix("http://").unwrap();
    let (addr, path) = rest.split_at(rest.find('/').unwrap());
    let started = Instant::now();
    let mut conn = tokio::net::TcpStream::connect(addr).await.unwrap();
    let request = format!(
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\nAuthorization: Bearer {ALICE}\r\n\
         Connection: close\r\n\r\n"
    );
    conn.write_all(request.as_bytes()).await.unwrap();
    let mut raw = Vec::new();
    let mut first = None;
    let mut head_len = None;
    let mut buf = vec![0; 256 * 1024];
    loop {
        let n = match conn.read(&mut buf).await {
            Ok(0) | Err(_) => break,
            Ok(n) => n,
        };
        raw.extend_from_slice(&buf[..n]);
        if head_len.is_none() {
            head_len = raw.windows(4).position(|w| w == b"\r\n\r\n").map(|i| i + 4);
        }
        if head_len.is_some_and(|h| raw.len() > h) {
            first.get_or_insert_with(|| started.elapsed());
        }
    }
    let head_len = head_len.expect("a response head");
    let head = String::from_utf8_lossy(&raw[..head_len]).to_ascii_lowercase();
    let status = head[9..12].parse().unwrap();
    let body = &raw[head_len..];
    let header = |name: &str| {
        head.lines().find_map(|l| {
            l.strip_prefix(&format!("{name}: "))
                .map(str::trim)
                .map(str::to_owned)
        })
    };
    let body = if let Some(len) = header("content-length") {
        let len: usize = len.parse().unwrap();
        if body.len() == len {
            Ok(body.to_vec())
        } else {
            Err(format!("{} of {len} bytes", body.len()))
        }
    } else if header("transfer-encoding").as_deref() == Some("chunked") {
        dechunk(body)
    } else {
        Err("no framing".into())
    };
    (status, first.unwrap_or_default(), body)
}

/// A chunked body, if it is complete.
fn dechunk(mut body: &[u8]) -> Result<Vec<u8>, String> {
    let mut out = Vec::new();
    loop {
        let line = body
            .windows(2)
            .position(|w| w == b"\r\n")
            .ok_or("cut off in a chunk size")?;
        let size = usize::from_str_radix(std::str::from_utf8(&body[..line]).unwrap().trim(), 16)
            .map_err(|e| e.to_string())?;
        body = &body[line + 2..];
        if size == 0 {
            return Ok(out);
        }
        if body.len() < size + 2 {
            return Err(format!("cut off after {} bytes", out.len() + body.len()));
        }
        out.extend_from_slice(&body[..size]);
        body = &body[size + 2..];
    }
}

/// The first byte of an uncached 4 MiB file from a 2 MiB/s origin reaches the client in a
/// fraction of the two seconds the whole file takes, with its length announced up front.
#[actix_web::test]
async fn first_byte_arrives_long_before_the_last() {
    let setup = Setup::start(|_| {}).await;
    let bytes = pseudo_random(4 * MIB, 61);
    setup.host.put("slow", trickled(bytes.clone(), "video/mp4"));

    let started = Instant::now();
    let mut res = setup.server.get_as(setup.download_url("slow"), ALICE).await;
    assert_eq!(res.status(), 200);
    assert_eq!(
        res.headers().get("content-length").unwrap(),
        &bytes.len().to_string(),
        "the origin's length"
    );
    assert!(
        res.headers().get("etag").is_none(),
        "no hash before the end"
    );
    let first = res.next().await.unwrap().unwrap();
    let ttfb = started.elapsed();
    let mut body = first.to_vec();
    while let Some(chunk) = res.next().await {
        body.extend_from_slice(&chunk.unwrap());
    }
    let total = started.elapsed();
    assert!(body == bytes, "complete and identical");
    assert!(
        total >= Duration::from_millis(1500),
        "the origin is slow: {total:?}"
    );
    assert!(ttfb * 8 < total, "first byte after {ttfb:?} of {total:?}");

    // Committed as before: the next request is served from the store, with its hash.
    let mut res = setup.server.get_as(setup.download_url("slow"), ALICE).await;
    assert!(res.headers().get("etag").is_some());
    assert!(res.body().limit(8 * MIB).await.unwrap() == bytes);
    assert_eq!(setup.remote.hits(&format!("{FED_DOWNLOAD}/slow")), 1);
    setup.signatures_were_valid();
}

/// Twenty clients joining one fetch at different moments (from its start to past its middle)
/// all get the identical complete file, and the origin is asked once.
#[actix_web::test]
async fn waiters_joining_at_any_moment_get_identical_complete_bytes() {
    let setup = Setup::start(|_| {}).await;
    let bytes = pseudo_random(4 * MIB, 62);
    setup
        .host
        .put("shared", trickled(bytes.clone(), "application/pdf"));
    let url = setup.download_url("shared");
    let results = join_all((0..20u64).map(|i| {
        let url = url.clone();
        let setup = &setup;
        async move {
            tokio::time::sleep(Duration::from_millis(60 * i)).await;
            download(setup, &url).await
        }
    }))
    .await;
    for (i, (status, _, body)) in results.into_iter().enumerate() {
        assert_eq!(status, 200, "waiter {i}");
        assert!(
            body.unwrap() == bytes,
            "waiter {i}: identical complete bytes"
        );
    }
    assert_eq!(setup.remote.hits(&format!("{FED_DOWNLOAD}/shared")), 1);
}

/// A waiter joining when most of the file has arrived gets its start from the spool at once,
/// not after the fetch ends.
#[actix_web::test]
async fn a_late_waiter_gets_the_start_from_the_spool() {
    let setup = Setup::start(|_| {}).await;
    let bytes = pseudo_random(4 * MIB, 63);
    setup
        .host
        .put("late", trickled(bytes.clone(), "video/webm"));
    let url = setup.download_url("late");
    let first = download(&setup, &url);
    let late = async {
        sent(&setup, 3 * MIB).await;
        let started = Instant::now();
        let mut res = setup.server.get_as(&url, ALICE).await;
        assert_eq!(res.status(), 200);
        let mut body = Vec::new();
        while body.len() < 2 * MIB {
            body.extend_from_slice(&res.next().await.unwrap().unwrap());
        }
        let spooled = started.elapsed();
        let before_end = setup.host.trickled.load(Ordering::SeqCst) < bytes.len() as u64;
        while let Some(chunk) = res.next().await {
            body.extend_from_slice(&chunk.unwrap());
        }
        (spooled, before_end, body)
    };
    let ((status, _, first), (spooled, before_end, late)) = futures_util::join!(first, late);
    assert_eq!(status, 200);
    assert!(first.unwrap() == bytes);
    assert!(
        before_end,
        "the first 2 MiB came in {spooled:?}, while the origin still sent"
    );
    assert!(
        late == bytes,
        "the late waiter got every byte from the start"
    );
    assert_eq!(setup.remote.hits(&format!("{FED_DOWNLOAD}/late")), 1);
}

/// An origin dropping the connection midway, with or without a declared length, leaves every
/// reader (first and waiters) with a broken transfer, never a complete-looking file; nothing is
/// stored; the failure is remembered, and once its memory expires the next request fetches
/// again and gets the whole file.
#[actix_web::test]
async fn origin_failure_midway_breaks_every_transfer_and_stores_nothing() {
    let setup = Setup::start(|c| {
        c.media.remote_failure_cache_secs = 1;
        c.media.max_remote_size = bytesize::ByteSize::mib(3);
        c.store.inline_blob_max = bytesize::ByteSize::kib(1);
    })
    .await;
    let bytes = pseudo_random(2 * MIB, 64);
    let mut sized = trickled(bytes.clone(), "video/mp4");
    sized.fail_after = Some(MIB);
    setup.host.put("sized", sized);
    let mut chunked = File::new(bytes.clone(), "video/mp4");
    chunked.mode = Mode::Truncated;
    setup.host.put("chunked", chunked);
    // Over `max_remote_size` only once its bytes flow: cut off at the limit.
    let mut endless = File::new(Vec::new(), "video/mp4");
    endless.mode = Mode::HugeChunked;
    setup.host.put("endless", endless);

    for id in ["sized", "chunked", "endless"] {
        let url = setup.download_url(id);
        let results = join_all((0..5u64).map(|i| {
            let url = url.clone();
            let setup = &setup;
            async move {
                tokio::time::sleep(Duration::from_millis(50 * i)).await;
                download(setup, &url).await
            }
        }))
        .await;
        for (i, (status, _, body)) in results.into_iter().enumerate() {
            // A reader that came after the failure gets the remembered error instead; the
            // first one was answered before it, with the bytes as they came.
            assert!(
                i > 0 || status == 200,
                "{id}: the first reader was streamed"
            );
            if status == 200 {
                assert!(
                    body.is_err(),
                    "{id} reader {i}: the transfer broke off, got {:?}",
                    body.as_ref().map(Vec::len)
                );
            } else {
                assert_eq!(status, 502, "{id} reader {i}");
            }
        }
        assert_eq!(setup.server.stored_files(), (0, 0), "{id}: nothing stored");
        let (status, _, _) = download(&setup, &url).await;
        assert_eq!(status, 502, "{id}: the failure is remembered");
        assert_eq!(setup.remote.hits(&format!("{FED_DOWNLOAD}/{id}")), 1);
    }

    tokio::time::sleep(Duration::from_millis(1100)).await;
    setup
        .host
        .put("sized", trickled(bytes.clone(), "video/mp4"));
    let (status, _, body) = download(&setup, &setup.download_url("sized")).await;
    assert_eq!(status, 200);
    assert!(body.unwrap() == bytes, "fetched afresh, complete");
    assert_eq!(setup.remote.hits(&format!("{FED_DOWNLOAD}/sized")), 2);
}

/// A range of a file being fetched is answered 206 with the right bytes as soon as that part
/// has arrived, long before the fetch completes; a range past what has arrived waits for it.
#[actix_web::test]
async fn range_on_an_arrived_part_is_served_before_the_fetch_completes() {
    let setup = Setup::start(|_| {}).await;
    let bytes = pseudo_random(4 * MIB, 65);
    setup.host.put("seek", trickled(bytes.clone(), "video/mp4"));
    let url = setup.download_url("seek");
    let whole = download(&setup, &url);
    let ranges = async {
        sent(&setup, MIB + 64 * 1024).await;
        let range = |spec: &'static str| {
            let url = url.clone();
            let client = &setup.server.client;
            async move {
                client
                    .get(&url)
                    .bearer_auth(ALICE)
                    .insert_header(("range", spec))
                    .send()
                    .await
                    .unwrap()
            }
        };
        let mut res = range("bytes=65536-1048575").await;
        assert_eq!(res.status(), 206);
        assert_eq!(
            res.headers().get("content-range").unwrap(),
            &format!("bytes 65536-1048575/{}", bytes.len())
        );
        let part = res.body().limit(2 * MIB).await.unwrap();
        let early = setup.host.trickled.load(Ordering::SeqCst) < bytes.len() as u64;
        assert!(early, "answered before the origin finished");
        assert!(part == bytes[65536..1048576], "the right bytes");
        // The end of the file: served once it is there.
        let mut res = range("bytes=-1000").await;
        assert_eq!(res.status(), 206);
        let tail = res.body().limit(2 * MIB).await.unwrap();
        assert!(tail == bytes[bytes.len() - 1000..]);
    };
    let ((status, _, body), ()) = futures_util::join!(whole, ranges);
    assert_eq!(status, 200);
    assert!(body.unwrap() == bytes);
    assert_eq!(setup.remote.hits(&format!("{FED_DOWNLOAD}/seek")), 1);
}

/// An admin's removal during a fetch cuts off the readers already streaming it and stops the
/// fetch: nothing is stored, not even a staging file, and the media is 404 from then on.
#[actix_web::test]
async fn takedown_during_a_fetch_cuts_readers_off() {
    let setup = Setup::start(|c| {
        c.auth.admins = vec!["@alice:localhost".into()];
        c.store.inline_blob_max = bytesize::ByteSize::kib(1);
    })
    .await;
    let bytes = pseudo_random(4 * MIB, 66);
    setup.host.put("doomed", trickled(bytes, "video/mp4"));
    let url = setup.download_url("doomed");
    let readers = join_all((0..3).map(|_| download(&setup, &url)));
    let removal = async {
        sent(&setup, MIB).await;
        let path = format!(
            "/_mxmedia/admin/v1/media/{}/doomed",
            setup.remote.name().as_str()
        );
        let res = setup
            .server
            .send_as(
                actix_web::http::Method::DELETE,
                setup.server.url(&path),
                ALICE,
                "",
            )
            .await;
        assert_eq!(res.status(), 200);
        setup.host.trickled.load(Ordering::SeqCst)
    };
    let (results, sent_at_removal) = futures_util::join!(readers, removal);
    assert!(sent_at_removal < 3 * MIB as u64, "removed while fetching");
    for (status, _, body) in results {
        assert_eq!(status, 200);
        assert!(body.is_err(), "cut off");
    }
    let (status, _, _) = download(&setup, &url).await;
    assert_eq!(status, 404);
    assert_eq!(setup.server.stored_files(), (0, 0), "nothing stored");
}

/// A thumbnail asked while the original is being fetched waits for that fetch and is made here
/// from it: the origin is asked for neither a thumbnail nor a second download.
#[actix_web::test]
async fn thumbnail_asked_during_a_fetch_joins_it() {
    let setup = Setup::start(|_| {}).await;
    let mut file = trickled(PHOTO.to_vec(), "image/jpeg");
    file.rate = 32 * 1024;
    setup.host.put("pic", file);
    let url = setup.download_url("pic");
    let whole = download(&setup, &url);
    let thumbnail = async {
        sent(&setup, 1).await;
        setup
            .get(&setup.thumbnail_url("pic", "width=64&height=64&method=scale"))
            .await
    };
    let ((status, _, body), (thumb_status, content_type, thumb)) =
        futures_util::join!(whole, thumbnail);
    assert_eq!(status, 200);
    assert!(body.unwrap() == PHOTO);
    assert_eq!(thumb_status, 200);
    assert!(content_type.starts_with("image/"), "{content_type}");
    assert!(!thumb.is_empty());
    assert_eq!(setup.remote.hits(&format!("{FED_DOWNLOAD}/pic")), 1);
    assert_eq!(setup.remote.hits(&format!("{FED_THUMBNAIL}/pic")), 0);
}
