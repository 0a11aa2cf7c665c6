//! Client uploads streamed into the bucket as they arrive, against a real Garage: every size
//! around the inline and part boundaries comes back whole and in ranges, identical bytes are
//! stored once, and an upload that does not finish (server killed, Garage stopped, client
//! gone) leaves no record, no object and no unfinished multipart upload behind.

use std::time::{Duration, Instant};

use actix_web::http::Method;
use bytes::Bytes;
use futures_util::StreamExt as _;
use mxmedia::{
    config::S3Config,
    store::s3::{PART_SIZE, S3Blobs},
};
use object_store::{ObjectStore as _, path::Path};

use crate::{
    common::{ALICE, TestServer, assert_error, client, count_files, pseudo_random},
    garage::{self, Garage},
    process::{free_port, spawn_with, wait_ready},
};

const INLINE_MAX: usize = 4 * 1024;

/// A Garage for this module's tests that need none of their own: they count objects, which
/// any engine shows, but the module asks Garage for unfinished uploads, so it stays on Garage.
fn shared_garage() -> &'static Garage {
    static SHARED: std::sync::OnceLock<Garage> = std::sync::OnceLock::new();
    SHARED.get_or_init(Garage::start)
}

async fn server_on(garage: &Garage) -> TestServer {
    let s3 = garage.config();
    TestServer::start_with(move |config| {
        config.store.inline_blob_max = bytesize::ByteSize::b(INLINE_MAX as u64);
        config.store.s3 = Some(s3);
    })
    .await
}

fn prefix_of(server: &TestServer) -> String {
    server.config.store.s3.as_ref().unwrap().prefix.clone()
}

/// Every object under `prefix`, blob or not, straight from the bucket.
async fn objects(garage: &Garage, prefix: &str) -> Vec<String> {
    let blobs = S3Blobs::new(&S3Config {
        prefix: prefix.to_owned(),
        ..garage.config()
    })
    .unwrap();
    let store = blobs.client();
    let prefix = Path::from(prefix.trim_end_matches('/'));
    let listed: Vec<_> = store.list(Some(&prefix)).collect().await;
    listed
        .into_iter()
        .map(|meta| meta.unwrap().location.to_string())
        .collect()
}

/// Waits until Garage counts no unfinished multipart upload, failing after `within`.
async fn until_no_unfinished_upload(garage: &Garage, within: Duration) {
    let deadline = Instant::now() + within;
    loop {
        let left = garage.unfinished_multipart_uploads();
        if left == 0 {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "{left} unfinished multipart uploads left in Garage"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Waits until Garage counts a multipart upload under way.
async fn until_a_multipart_upload_runs(garage: &Garage) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while garage.unfinished_multipart_uploads() == 0 {
        assert!(Instant::now() < deadline, "no multipart upload began");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// A body fed by the test chunk by chunk, and ended (or cut with an error) when it says.
fn fed_body() -> (
    tokio::sync::mpsc::UnboundedSender<Result<Bytes, std::io::Error>>,
    impl futures_util::Stream<Item = Result<Bytes, std::io::Error>> + Unpin + 'static,
) {
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<Result<Bytes, std::io::Error>>();
    (
        tx,
        futures_util::stream::poll_fn(move |cx| rx.poll_recv(cx)),
    )
}

async fn download_range(server: &TestServer, id: &str, range: Option<(usize, usize)>) -> Vec<u8> {
    let mut request = client().get(server.download_url(id)).bearer_auth(ALICE);
    if let Some((first, last)) = range {
        request = request.insert_header(("range", format!("bytes={first}-{last}")));
    }
    let mut res = request.send().await.unwrap();
    let want = if range.is_some() { 206 } else { 200 };
    assert_eq!(res.status(), want, "{range:?}");
    res.body().limit(64 << 20).await.unwrap().to_vec()
}

/// Uploads of 0 bytes, exactly `inline_blob_max`, one byte either side of a part, and three
/// parts and a bit (by `POST /upload` and, for one, by `/create` + `PUT`) download whole and
/// in ranges as sent; each one above the inline size is one object under its hash key, none
/// is left under a temporary key, and nothing is ever staged on the local disk.
#[actix_web::test]
async fn streamed_uploads_of_every_size_come_back_whole_and_in_ranges() {
    let garage = shared_garage();
    let server = server_on(garage).await;
    let sizes = [
        0,
        INLINE_MAX,
        PART_SIZE - 1,
        PART_SIZE,
        PART_SIZE + 1,
        3 * PART_SIZE + 17,
    ];
    let mut expected_objects = Vec::new();
    for (seed, size) in (10u64..).zip(sizes) {
        let body = pseudo_random(size, seed);
        let id = server.upload(&body, "application/octet-stream", None).await;
        assert!(
            download_range(&server, &id, None).await == body,
            "{size} whole"
        );
        if size > 2 {
            // Across the first part boundary when there is one, else the middle.
            let middle = size.min(PART_SIZE) - 1;
            let (first, last) = (middle.saturating_sub(100), (middle + 100).min(size - 1));
            let got = download_range(&server, &id, Some((first, last))).await;
            assert!(got == body[first..=last], "{size} range {first}-{last}");
        }
        if size > INLINE_MAX {
            let sha = hex::encode(<sha2::Sha256 as sha2::Digest>::digest(&body));
            expected_objects.push(format!("{}{}/{sha}", prefix_of(&server), &sha[..2]));
        }
    }
    // The async path: reserve an id, then fill it with a multipart-sized body.
    let mut res = server
        .send_as(
            Method::POST,
            server.url("/_matrix/media/v1/create"),
            ALICE,
            "{}",
        )
        .await;
    assert_eq!(res.status(), 200);
    let created: serde_json::Value = res.json().await.unwrap();
    let id = created["content_uri"].as_str().unwrap()["mxc://localhost/".len()..].to_owned();
    let body = pseudo_random(PART_SIZE + 5, 99);
    let res = client()
        .put(server.url(&format!("/_matrix/media/v3/upload/localhost/{id}")))
        .bearer_auth(ALICE)
        .insert_header(("content-type", "application/octet-stream"))
        .send_body(body.clone())
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    assert!(
        download_range(&server, &id, None).await == body,
        "PUT whole"
    );
    let sha = hex::encode(<sha2::Sha256 as sha2::Digest>::digest(&body));
    expected_objects.push(format!("{}{}/{sha}", prefix_of(&server), &sha[..2]));

    let mut stored = objects(garage, &prefix_of(&server)).await;
    stored.sort();
    expected_objects.sort();
    assert_eq!(
        stored, expected_objects,
        "one object per blob, no temporary one"
    );
    assert_eq!(count_files(&server.dir.path().join("tmp")), 0);
}

/// The same 20 MiB uploaded twice are one object in the bucket (the second upload's copy is
/// skipped, its temporary object removed), and both ids download them.
#[actix_web::test]
async fn the_same_bytes_twice_are_one_object_and_no_temporary_one() {
    let garage = shared_garage();
    let server = server_on(garage).await;
    let body = pseudo_random(20 * 1024 * 1024, 7);
    let first = server.upload(&body, "application/octet-stream", None).await;
    let second = server.upload(&body, "image/png", None).await;
    assert_ne!(first, second);
    let sha = hex::encode(<sha2::Sha256 as sha2::Digest>::digest(&body));
    assert_eq!(
        objects(garage, &prefix_of(&server)).await,
        vec![format!("{}{}/{sha}", prefix_of(&server), &sha[..2])]
    );
    assert!(download_range(&server, &first, None).await == body);
    assert!(download_range(&server, &second, None).await == body);
}

/// `kill -9` of the server while a multipart upload streams into the bucket: after the
/// restart (whose sweep has a grace of an hour, so only the recorded intent can explain the
/// clean-up), Garage has no unfinished multipart upload, the prefix holds no object, and the
/// media was never recorded.
#[actix_web::test]
async fn kill_9_mid_upload_leaves_no_multipart_upload_and_no_object() {
    let garage = Garage::start();
    let prefix = garage::fresh_prefix();
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let env = vec![
        ("MXMEDIA_STORE__S3__BUCKET", garage::BUCKET.to_owned()),
        ("MXMEDIA_STORE__S3__ENDPOINT", garage.endpoint.clone()),
        ("MXMEDIA_STORE__S3__REGION", garage::REGION.to_owned()),
        (
            "MXMEDIA_STORE__S3__ACCESS_KEY_ID",
            garage::ACCESS_KEY.to_owned(),
        ),
        (
            "MXMEDIA_STORE__S3__SECRET_ACCESS_KEY",
            garage::SECRET_KEY.to_owned(),
        ),
        ("MXMEDIA_STORE__S3__PATH_STYLE", "true".to_owned()),
        ("MXMEDIA_STORE__S3__PREFIX", prefix.clone()),
    ];
    let mut proc = spawn_with(dir.path(), port, true, &env);
    wait_ready(&proc.base).await;
    let (tx, body) = fed_body();
    let request = client()
        .post(format!("{}/_matrix/media/v3/upload", proc.base))
        .bearer_auth(ALICE)
        .send_stream(body);
    let pending = actix_web::rt::spawn(async move { request.await.map(|r| r.status()) });
    let chunk = Bytes::from(pseudo_random(1024 * 1024, 8));
    for _ in 0..20 {
        tx.send(Ok(chunk.clone())).unwrap();
    }
    // Two parts sent or being sent, the rest of the body still to come.
    until_a_multipart_upload_runs(&garage).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(garage.unfinished_multipart_uploads() > 0);
    proc.child.kill().unwrap(); // SIGKILL
    proc.child.wait().unwrap();
    drop(tx);
    let answered = pending.await.unwrap();
    assert!(answered.is_err(), "never acknowledged: {answered:?}");
    assert!(
        garage.unfinished_multipart_uploads() > 0,
        "the killed process left its upload unfinished"
    );

    let proc = spawn_with(dir.path(), port, true, &env);
    wait_ready(&proc.base).await;
    // Aborted by the start-up sweep, before the server answers.
    until_no_unfinished_upload(&garage, Duration::from_secs(5)).await;
    assert_eq!(objects(&garage, &prefix).await, Vec::<String>::new());
    assert_eq!(count_files(&dir.path().join("tmp")), 0);
}

/// Garage stopped while an upload streams into it: the client gets 502 M_UNKNOWN within the
/// request bounds, nothing is recorded, and once Garage is back the abandoned multipart
/// upload is aborted without a restart, leaving no object.
#[actix_web::test]
async fn garage_stopped_mid_upload_records_nothing_and_leaves_no_multipart_upload() {
    let garage = &Garage::start();
    let server = server_on(garage).await;
    let (tx, body) = fed_body();
    let request = server
        .client
        .post(server.url("/_matrix/media/v3/upload"))
        .bearer_auth(ALICE)
        .send_stream(body);
    let chunk = Bytes::from(pseudo_random(1024 * 1024, 9));
    let sender = async move {
        for i in 0..40 {
            if i == 20 {
                until_a_multipart_upload_runs(garage).await;
                garage.stop();
            }
            if tx.send(Ok(chunk.clone())).is_err() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        drop(tx);
        Instant::now()
    };
    let (res, stopped_sending) = futures_util::join!(request, sender);
    let mut res = res.unwrap();
    assert!(
        stopped_sending.elapsed() < Duration::from_secs(30),
        "answered within the bound"
    );
    assert_error(&mut res, 502, "M_UNKNOWN").await;
    assert_eq!(
        server.store.file_blob_totals().unwrap(),
        (0, 0),
        "nothing recorded"
    );

    garage.resume();
    until_no_unfinished_upload(garage, Duration::from_secs(60)).await;
    assert_eq!(
        objects(garage, &prefix_of(&server)).await,
        Vec::<String>::new()
    );
}

/// A client that cuts its connection mid-upload: nothing is staged on the local disk while
/// the body arrives, and once it is cut the multipart upload is aborted, no object is left
/// and nothing is recorded.
#[actix_web::test]
async fn a_client_cutting_its_upload_leaves_no_multipart_upload_and_no_object() {
    let garage = Garage::start();
    let server = server_on(&garage).await;
    let (tx, body) = fed_body();
    let request = server
        .client
        .post(server.url("/_matrix/media/v3/upload"))
        .bearer_auth(ALICE)
        .send_stream(body);
    let pending = actix_web::rt::spawn(request);
    let chunk = Bytes::from(pseudo_random(1024 * 1024, 10));
    for _ in 0..20 {
        tx.send(Ok(chunk.clone())).unwrap();
    }
    until_a_multipart_upload_runs(&garage).await;
    assert_eq!(
        count_files(&server.dir.path().join("tmp")),
        0,
        "the body goes to the bucket, not to the local disk"
    );
    tx.send(Err(std::io::Error::other("client gone"))).unwrap();
    let _ = pending.await.unwrap();

    until_no_unfinished_upload(&garage, Duration::from_secs(20)).await;
    assert_eq!(
        objects(&garage, &prefix_of(&server)).await,
        Vec::<String>::new()
    );
    assert_eq!(
        server.store.file_blob_totals().unwrap(),
        (0, 0),
        "nothing recorded"
    );
}
