//! Blobs in S3 against a real S3 engine on loopback (`s3_engine`: Garage, or SeaweedFS): where
//! the bytes go, the bucket check at start-up and in `check-config`, the sweep, and what clients
//! see when the engine dies during an upload or a download, or a server is killed during one.

use std::time::{Duration, Instant};

use bytes::Bytes;
use futures_util::StreamExt as _;
use mxmedia::{
    config::S3Config,
    store::s3::{S3Blobs, object_key},
};

use crate::{
    common::{ALICE, TestServer, assert_error, client, pseudo_random},
    garage,
    process::{BIN, free_port, spawn_with, upload, wait_ready},
    s3_engine::{self, Engine, Kind},
};

/// Inline blobs off: everything above 1 KiB is an S3 object.
async fn server_on(engine: &Engine, tweak: impl FnOnce(&mut S3Config)) -> TestServer {
    let mut s3 = engine.config();
    tweak(&mut s3);
    TestServer::start_with(move |config| {
        config.store.inline_blob_max = bytesize::ByteSize::kib(1);
        config.store.s3 = Some(s3);
    })
    .await
}

fn sha256_hex(bytes: &[u8]) -> String {
    use sha2::Digest as _;
    hex::encode(sha2::Sha256::digest(bytes))
}

/// An object in the server's bucket, read back directly from the engine.
fn object(server: &TestServer, sha256: &str) -> Option<Vec<u8>> {
    let s3 = server.store.s3().unwrap();
    let mut reader = match mxmedia::store::blob::BlobStore::open(s3, sha256) {
        Ok(reader) => reader,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return None,
        Err(e) => panic!("{e}"),
    };
    let mut out = Vec::new();
    std::io::Read::read_to_end(&mut reader, &mut out).unwrap();
    Some(out)
}

/// An upload's bytes land in the bucket under `<prefix><2 hex>/<sha256>`, not on the local
/// disk; downloads (whole, and a range in the middle, across a part boundary) return them, and
/// deleting the media removes the object.
#[actix_web::test]
async fn uploads_live_in_the_bucket_and_download_whole_and_in_ranges() {
    let engine = s3_engine::shared();
    let server = server_on(engine, |_| {}).await;
    // Larger than one multipart part (8 MiB), so the upload is multipart.
    let body = pseudo_random(9 * 1024 * 1024 + 123, 1);
    let sha = sha256_hex(&body);
    let id = server.upload(&body, "application/octet-stream", None).await;

    let prefix = server.config.store.s3.as_ref().unwrap().prefix.clone();
    assert_eq!(
        object_key(&prefix, &sha).as_ref(),
        format!("{prefix}{}/{sha}", &sha[..2])
    );
    assert_eq!(object(&server, &sha).as_deref(), Some(body.as_slice()));
    assert_eq!(server.stored_files(), (1, 0), "one object, nothing staged");
    assert!(
        !server.dir.path().join("blobs").exists(),
        "no local blob dir"
    );

    let mut res = server.get_as(server.download_url(&id), ALICE).await;
    assert_eq!(res.status(), 200);
    assert_eq!(res.body().limit(64 << 20).await.unwrap(), body.as_slice());

    let (from, to) = (8 * 1024 * 1024 - 10, 8 * 1024 * 1024 + 10);
    let mut res = server
        .client
        .get(server.download_url(&id))
        .bearer_auth(ALICE)
        .insert_header(("range", format!("bytes={from}-{to}")))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 206);
    assert_eq!(res.body().await.unwrap(), &body[from..=to]);

    let key = mxmedia::model::id::MediaKey {
        server_name: mxmedia_proto::ids::ServerName::localhost(),
        media_id: id.parse().unwrap(),
    };
    let deleted = server
        .store
        .blocking(move |s| s.delete_media(&key))
        .await
        .unwrap();
    assert!(deleted);
    assert_eq!(
        object(&server, &sha),
        None,
        "the object went with its media"
    );
}

/// The bucket check names the mistake: nothing listening, a host that does not resolve, a
/// wrong secret, a bucket that does not exist, a wrong region; and a good config passes.
#[test]
fn the_bucket_check_says_exactly_what_is_wrong() {
    use mxmedia::store::s3::Problem;
    let engine = s3_engine::shared();
    let check = |tweak: &dyn Fn(&mut S3Config)| {
        let mut config = engine.config();
        config.timeout_secs = 2;
        tweak(&mut config);
        let started = Instant::now();
        let outcome = S3Blobs::new(&config).unwrap().check();
        assert!(
            started.elapsed() < Duration::from_secs(20),
            "a failing check is quick: {:?}",
            started.elapsed()
        );
        outcome
    };
    check(&|_| {}).unwrap();
    type Case<'a> = (&'a str, &'a dyn Fn(&mut S3Config), Problem, &'a str);
    let cases: [Case<'_>; 5] = [
        (
            "refused",
            &|c| c.endpoint = Some(format!("http://127.0.0.1:{}", free_port())),
            Problem::Refused,
            "connection refused",
        ),
        (
            "dns",
            &|c| c.endpoint = Some("http://no-such-host.invalid:3900".into()),
            Problem::Dns,
            "does not resolve",
        ),
        (
            "bad key",
            &|c| c.secret_access_key = Some("0".repeat(64)),
            Problem::Denied,
            "access denied",
        ),
        (
            "no bucket",
            &|c| c.bucket = "no-such-bucket".into(),
            Problem::NoSuchBucket,
            "no such bucket",
        ),
        (
            "region",
            &|c| c.region = "us-east-1".into(),
            Problem::WrongRegion,
            "wrong region",
        ),
    ];
    for (name, tweak, problem, words) in cases {
        if name == "region" && !engine.enforces_region() {
            // SeaweedFS verifies a signature with the region the request names: any region
            // works there, so there is no wrong one to report.
            check(tweak).unwrap();
            continue;
        }
        let err = check(tweak).expect_err(name);
        assert_eq!(err.problem, problem, "{name}: {err}");
        assert!(err.to_string().contains(words), "{name}: {err}");
    }
}

/// A key allowed only its own bucket (how an admin gives one server a key, on SeaweedFS as on
/// AWS) is refused a misspelt bucket with 403, not told it does not exist: the bucket check
/// reports it as denied and says to check the bucket name as well as the key. SeaweedFS only:
/// Garage's test key is made with the bucket.
#[test]
fn a_key_scoped_to_its_bucket_is_told_to_check_the_bucket_name() {
    use mxmedia::store::s3::Problem;
    let engine = s3_engine::shared();
    if engine.kind() != Kind::SeaweedFs {
        return;
    }
    let scoped = |bucket: &str| {
        let mut config = engine.config();
        config.access_key_id = Some(crate::seaweed::SCOPED_ACCESS_KEY.into());
        config.bucket = bucket.into();
        config.timeout_secs = 2;
        S3Blobs::new(&config).unwrap().check()
    };
    scoped(garage::BUCKET).unwrap();
    let err = scoped("mxmedia-tset").unwrap_err();
    assert_eq!(err.problem, Problem::Denied, "{err}");
    let text = err.to_string();
    assert!(text.contains("`mxmedia-tset`"), "{text}");
    assert!(
        text.contains("check MXMEDIA_STORE__S3__BUCKET too"),
        "{text}"
    );
}

/// `mxmedia check-config` probes the bucket: it passes against the engine and exits 1 with the
/// reason when the secret is wrong; `serve` refuses to start on a bad bucket, saying why.
#[test]
fn check_config_and_start_up_check_the_bucket() {
    let engine = s3_engine::shared();
    let env = |secret: &str| {
        vec![
            ("MXMEDIA_STORE__S3__BUCKET", garage::BUCKET.to_owned()),
            ("MXMEDIA_STORE__S3__ENDPOINT", engine.endpoint().to_owned()),
            ("MXMEDIA_STORE__S3__REGION", engine.region().to_owned()),
            (
                "MXMEDIA_STORE__S3__ACCESS_KEY_ID",
                garage::ACCESS_KEY.to_owned(),
            ),
            ("MXMEDIA_STORE__S3__SECRET_ACCESS_KEY", secret.to_owned()),
            ("MXMEDIA_STORE__S3__PATH_STYLE", "true".to_owned()),
            ("MXMEDIA_STORE__S3__PREFIX", garage::fresh_prefix()),
        ]
    };
    let dir = tempfile::tempdir().unwrap();
    let run = |args: &[&str], env: &[(&str, String)]| {
        std::process::Command::new(BIN)
            .args(args)
            .env_clear()
            .env("MXMEDIA_DATA_DIR", dir.path())
            .env("MXMEDIA_LISTEN", format!("127.0.0.1:{}", free_port()))
            .envs(env.iter().map(|(k, v)| (*k, v.as_str())))
            .output()
            .unwrap()
    };
    let out = run(&["check-config"], &env(garage::SECRET_KEY));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert!(stderr.contains("reachable and writable"), "{stderr}");
    assert!(
        !String::from_utf8_lossy(&out.stdout).contains(garage::SECRET_KEY),
        "the secret is masked"
    );

    let wrong = "1".repeat(64);
    let out = run(&["check-config"], &env(&wrong));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("access denied"), "{stderr}");

    let out = run(&["serve"], &env(&wrong));
    let text =
        String::from_utf8_lossy(&out.stderr).into_owned() + &String::from_utf8_lossy(&out.stdout);
    assert!(!out.status.success(), "{text}");
    assert!(text.contains("access denied"), "{text}");
}

/// The sweep (run at start-up) removes objects no record points at once they are older than
/// the grace period, and leaves younger ones (an upload may still be committing them) and the
/// objects of media.
#[actix_web::test]
async fn the_sweep_removes_only_old_unreferenced_objects() {
    let engine = s3_engine::shared();
    for (grace, swept) in [(3600, 0), (0, 1)] {
        let server = server_on(engine, |c| c.sweep_grace_secs = grace).await;
        let kept = pseudo_random(4096, 2 + grace);
        let stray = pseudo_random(4096, 3 + grace);
        server.upload(&kept, "application/octet-stream", None).await;
        // An object as a crash between its put and its record would leave it.
        let s3 = server.store.s3().unwrap();
        let prefix = server.config.store.s3.as_ref().unwrap().prefix.clone();
        let payload = object_store::PutPayload::from(stray.clone());
        object_store::ObjectStoreExt::put(
            &*s3.client(),
            &object_key(&prefix, &sha256_hex(&stray)),
            payload,
        )
        .await
        .unwrap();
        assert_eq!(server.blob_count(), 2);
        let removed = server.store.blocking(|s| s.sweep_orphans()).await.unwrap();
        assert_eq!(removed, swept, "grace {grace}s");
        let mut left = s3.list_all().unwrap();
        left.sort();
        let mut expected = vec![sha256_hex(&kept)];
        if swept == 0 {
            expected.push(sha256_hex(&stray));
            expected.sort();
        }
        assert_eq!(left, expected, "grace {grace}s");
    }
}

/// The engine killed while an upload's body is arriving: the upload fails within seconds with a
/// Matrix error (502 M_UNKNOWN), nothing is recorded or left staged, the server stays healthy,
/// and once the engine is back the same upload succeeds.
#[actix_web::test]
async fn s3_dying_mid_upload_fails_it_fast_and_the_service_resumes() {
    let engine = Engine::start();
    let mut server = server_on(&engine, |_| {}).await;
    let body = pseudo_random(12 * 1024 * 1024, 4);
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<Result<Bytes, std::io::Error>>();
    let rx = futures_util::stream::poll_fn(move |cx| rx.poll_recv(cx));
    let request = server
        .client
        .post(server.url("/_matrix/media/v3/upload"))
        .bearer_auth(ALICE)
        .insert_header(("content-type", "application/octet-stream"))
        .send_stream(rx);
    let chunks: Vec<Bytes> = body
        .chunks(1024 * 1024)
        .map(Bytes::copy_from_slice)
        .collect();
    let sender = async {
        for (i, chunk) in chunks.iter().enumerate() {
            if i == chunks.len() / 2 {
                engine.stop();
            }
            tx.send(Ok(chunk.clone())).unwrap();
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        drop(tx);
        Instant::now()
    };
    let (res, body_done) = futures_util::join!(request, sender);
    let mut res = res.unwrap();
    let waited = body_done.elapsed();
    assert_error(&mut res, 502, "M_UNKNOWN").await;
    assert!(waited < Duration::from_secs(20), "failed fast: {waited:?}");
    assert_eq!(
        crate::common::count_files(&server.dir.path().join("tmp")),
        0,
        "nothing staged is left behind"
    );
    let res = client()
        .get(server.url("/_mxmedia/health"))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200, "the server stays healthy");

    engine.resume();
    // resume() blocked this thread for seconds (SeaweedFS takes longer than the server's 5 s
    // keep-alive), so the pool's idle connections may be closed under it: a new client.
    server.client = client();
    let id = server.upload(&body, "application/octet-stream", None).await;
    let mut res = server.get_as(server.download_url(&id), ALICE).await;
    assert_eq!(res.status(), 200);
    assert_eq!(res.body().limit(64 << 20).await.unwrap(), body.as_slice());
}

/// The engine killed while a download streams: the client sees the body cut short (never a
/// complete-looking wrong body), the server stays healthy, new downloads answer 502 M_UNKNOWN
/// quickly, and after the engine's restart the download works again.
#[actix_web::test]
async fn s3_dying_mid_download_cuts_the_stream_and_the_service_resumes() {
    let engine = Engine::start();
    let server = server_on(&engine, |_| {}).await;
    let body = pseudo_random(24 * 1024 * 1024, 5);
    let id = server.upload(&body, "application/octet-stream", None).await;

    let mut res = server.get_as(server.download_url(&id), ALICE).await;
    assert_eq!(res.status(), 200);
    let mut got = 0usize;
    let mut cut = false;
    let mut stopped = false;
    while let Some(chunk) = res.next().await {
        match chunk {
            Ok(chunk) => got += chunk.len(),
            Err(_) => {
                cut = true;
                break;
            }
        }
        if !stopped && got > 0 {
            engine.stop();
            stopped = true;
        }
    }
    assert!(
        cut || got < body.len(),
        "the stream is cut short, not completed ({got} of {} bytes)",
        body.len()
    );
    let health = client()
        .get(server.url("/_mxmedia/health"))
        .send()
        .await
        .unwrap();
    assert_eq!(health.status(), 200, "the server stays healthy");

    let started = Instant::now();
    let mut res = server.get_as(server.download_url(&id), ALICE).await;
    assert_error(&mut res, 502, "M_UNKNOWN").await;
    assert!(
        started.elapsed() < Duration::from_secs(20),
        "{:?}",
        started.elapsed()
    );

    engine.resume();
    // A new client, as above: idle connections may have been closed meanwhile.
    let mut res = client()
        .get(server.download_url(&id))
        .bearer_auth(ALICE)
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    assert_eq!(res.body().limit(64 << 20).await.unwrap(), body.as_slice());
}

/// `kill -9` of the server while it sends an upload to S3: after a restart (sweep grace 0),
/// the media is either there whole or not at all, and no object is left that no record
/// points at.
#[actix_web::test]
async fn kill_9_during_an_s3_upload_leaves_no_record_and_no_object() {
    let engine = s3_engine::shared();
    let prefix = garage::fresh_prefix();
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let env = |grace: &str| {
        vec![
            ("MXMEDIA_STORE__S3__BUCKET", garage::BUCKET.to_owned()),
            ("MXMEDIA_STORE__S3__ENDPOINT", engine.endpoint().to_owned()),
            ("MXMEDIA_STORE__S3__REGION", engine.region().to_owned()),
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
            ("MXMEDIA_STORE__S3__SWEEP_GRACE_SECS", grace.to_owned()),
        ]
    };
    let mut s3 = engine.config();
    s3.prefix = prefix.clone();
    let blobs = S3Blobs::new(&s3).unwrap();
    let body = pseudo_random(40 * 1024 * 1024, 6);
    let sha = sha256_hex(&body);

    let mut proc = spawn_with(dir.path(), port, true, &env("3600"));
    wait_ready(&proc.base).await;
    let base = proc.base.clone();
    let sent = body.clone();
    let pending = actix_web::rt::spawn(async move {
        client()
            .post(format!("{base}/_matrix/media/v3/upload"))
            .bearer_auth(ALICE)
            .send_body(sent)
            .await
            .map(|r| r.status().as_u16())
    });
    // Killed while the body streams into the bucket (it is not staged on disk first): a
    // multipart upload is under way, its parts invisible as objects until it completes.
    // (`s3_upload` kills at a point it observes; here any point between begin and answer.)
    tokio::time::sleep(Duration::from_millis(250)).await;
    proc.child.kill().unwrap(); // SIGKILL
    proc.child.wait().unwrap();
    let answered = pending.await.unwrap();
    eprintln!("the killed upload answered {answered:?}");

    let mut proc = spawn_with(dir.path(), port, true, &env("0"));
    wait_ready(&proc.base).await;
    let left = blobs.list_all().unwrap();
    match answered {
        // Acknowledged just before the kill: then it is durable, object and record.
        Ok(200) => assert_eq!(left, vec![sha.clone()], "an acknowledged upload is kept"),
        _ => assert!(
            left.is_empty(),
            "no object is left that no record points at: {left:?}"
        ),
    }
    // The server works on: the same bytes upload and download whole.
    let id = upload(&proc.base, ALICE, body.clone()).await;
    assert_eq!(blobs.list_all().unwrap(), vec![sha]);
    let (status, got) = crate::process::download(&proc.base, ALICE, &id).await;
    assert_eq!((status, got.len()), (200, body.len()));
    assert!(got == body);
    proc.child.kill().unwrap();
    proc.child.wait().unwrap();
}

/// The metrics listener counts S3 requests by operation, their latency, and their errors (here
/// a download while the engine is down).
#[actix_web::test]
async fn s3_requests_errors_and_latency_are_in_the_metrics() {
    let engine = Engine::start();
    let port = free_port();
    let mut s3 = engine.config();
    s3.timeout_secs = 1;
    let server = TestServer::start_with(move |config| {
        config.store.inline_blob_max = bytesize::ByteSize::kib(1);
        config.store.s3 = Some(s3);
        config.metrics.listen = Some(([127, 0, 0, 1], port).into());
    })
    .await;
    let body = pseudo_random(2 * 1024 * 1024, 7);
    let id = server.upload(&body, "application/octet-stream", None).await;
    let mut res = server.get_as(server.download_url(&id), ALICE).await;
    assert_eq!(res.body().limit(8 << 20).await.unwrap().len(), body.len());
    engine.stop();
    let mut res = server.get_as(server.download_url(&id), ALICE).await;
    assert_error(&mut res, 502, "M_UNKNOWN").await;

    let mut res = client()
        .get(format!("http://127.0.0.1:{port}/metrics"))
        .send()
        .await
        .unwrap();
    let text = String::from_utf8(res.body().await.unwrap().to_vec()).unwrap();
    for needle in [
        "mxmedia_s3_requests_total{op=\"put\"}",
        "mxmedia_s3_requests_total{op=\"get\"}",
        "mxmedia_s3_errors_total{op=\"get\"}",
        "mxmedia_s3_request_duration_seconds_bucket{op=\"put\"",
    ] {
        assert!(text.contains(needle), "{needle} in\n{text}");
    }
}
