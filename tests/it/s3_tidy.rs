//! The S3 backend where a bucket is large, a migration reruns, a connection breaks or an
//! import is long: the sweep judges the listing as it arrives, a rerun of `migrate-store`
//! asks for lengths (HEAD) rather than bytes, a download whose S3 body is cut resumes with a
//! ranged GET, and an import sends its blobs without holding up uploads.
//!
//! Between mxmedia and Garage sits `Proxy`, a TCP relay of this test's own that sees every
//! request line, can cut a response midway and can hold one request back.

use std::{
    collections::HashSet,
    io::{BufRead as _, BufReader, Read as _, Write as _},
    net::{Shutdown, TcpListener, TcpStream},
    path::Path,
    process::{Command, Stdio},
    sync::{Arc, Condvar, Mutex},
    time::{Duration, Instant},
};

use futures_util::StreamExt as _;
use mxmedia::{
    config::{Config, S3Config},
    store::{
        Expect, Store, Upload,
        blob::BlobStore as _,
        s3::{S3Blobs, object_key},
    },
};

use crate::{
    common::{ALICE, TestServer, pseudo_random},
    garage,
    import::{Local, Synapse, count, import, stdout},
    process::BIN,
};

fn sha256_hex(bytes: &[u8]) -> String {
    use sha2::Digest as _;
    hex::encode(sha2::Sha256::digest(bytes))
}

/// What the proxy was told to do, and what it saw.
#[derive(Default)]
struct ProxyState {
    /// `METHOD target` of every request, in order of arrival.
    requests: Vec<String>,
    /// Cut the response being relayed once this many more bytes have gone to the client.
    cut_after: Option<u64>,
    cuts: u32,
    /// Relay responses at this many bytes a second at most.
    throttle: Option<u64>,
    /// Hold back a PUT whose target contains this, until released.
    hold: Option<String>,
    held: u32,
}

#[derive(Clone)]
struct Proxy {
    endpoint: String,
    state: Arc<(Mutex<ProxyState>, Condvar)>,
}

impl Proxy {
    /// Relays 127.0.0.1:<some port> to `upstream` (`http://host:port`) until the test ends.
    fn start(upstream: &str) -> Self {
        let upstream = upstream.trim_start_matches("http://").to_owned();
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let proxy = Self {
            endpoint: format!("http://{}", listener.local_addr().unwrap()),
            state: Arc::default(),
        };
        let state = Arc::clone(&proxy.state);
        std::thread::spawn(move || {
            for client in listener.incoming() {
                let Ok(client) = client else { continue };
                let Ok(server) = TcpStream::connect(&upstream) else {
                    continue;
                };
                let (c2, s2) = (client.try_clone().unwrap(), server.try_clone().unwrap());
                let st = Arc::clone(&state);
                std::thread::spawn(move || requests(client, server, &st));
                let st = Arc::clone(&state);
                std::thread::spawn(move || responses(s2, c2, &st));
            }
        });
        proxy
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, ProxyState> {
        self.state.0.lock().unwrap()
    }

    fn requests(&self) -> Vec<String> {
        self.lock().requests.clone()
    }

    fn forget_requests(&self) {
        self.lock().requests.clear();
    }

    fn s3_config(&self, prefix: &str) -> S3Config {
        S3Config {
            endpoint: Some(self.endpoint.clone()),
            prefix: prefix.to_owned(),
            ..crate::s3_engine::shared().config()
        }
    }

    fn release(&self) {
        self.lock().hold = None;
        self.state.1.notify_all();
    }
}

/// Client to S3: request by request, each head parsed (method, target, body length), so that
/// requests are seen and one may be held back; anything unparsable is relayed as it comes.
fn requests(client: TcpStream, mut server: TcpStream, state: &(Mutex<ProxyState>, Condvar)) {
    let mut reader = BufReader::new(client);
    loop {
        let mut head = Vec::new();
        let mut body_len = 0u64;
        let mut plain = true;
        let mut range = None;
        loop {
            let mut line = Vec::new();
            match reader.read_until(b'\n', &mut line) {
                Ok(0) | Err(_) => {
                    let _ = server.shutdown(Shutdown::Write);
                    return;
                }
                Ok(_) => {}
            }
            let text = String::from_utf8_lossy(&line).to_ascii_lowercase();
            if let Some(n) = text.strip_prefix("content-length:") {
                body_len = n.trim().parse().unwrap_or(0);
            }
            if text.starts_with("transfer-encoding:") {
                plain = false;
            }
            if text.starts_with("range:") {
                range = Some(text.trim().to_owned());
            }
            let end = line == b"\r\n";
            head.extend_from_slice(&line);
            if end {
                break;
            }
        }
        let first = String::from_utf8_lossy(&head)
            .lines()
            .next()
            .unwrap_or_default()
            .to_owned();
        let mut parts = first.split_whitespace();
        let mut seen = format!(
            "{} {}",
            parts.next().unwrap_or_default(),
            parts.next().unwrap_or_default()
        );
        if let Some(range) = range {
            seen = format!("{seen} {range}");
        }
        {
            let (lock, cond) = state;
            let mut st = lock.lock().unwrap();
            st.requests.push(seen.clone());
            let held = |st: &ProxyState| {
                st.hold
                    .as_deref()
                    .is_some_and(|h| seen.starts_with("PUT ") && seen.contains(h))
            };
            if held(&st) {
                st.held += 1;
                cond.notify_all();
                while held(&st) {
                    st = cond.wait(st).unwrap();
                }
            }
        }
        if server.write_all(&head).is_err() {
            return;
        }
        if !plain {
            let _ = std::io::copy(&mut reader, &mut server);
            return;
        }
        if std::io::copy(&mut (&mut reader).take(body_len), &mut server).is_err() {
            return;
        }
    }
}

/// S3 to client: relayed as it comes, unless a cut is armed.
fn responses(mut server: TcpStream, mut client: TcpStream, state: &(Mutex<ProxyState>, Condvar)) {
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        let n = match server.read(&mut buf) {
            Ok(0) | Err(_) => {
                let _ = client.shutdown(Shutdown::Write);
                return;
            }
            Ok(n) => n,
        };
        let mut pass = n;
        let mut cut = false;
        {
            let mut st = state.0.lock().unwrap();
            if let Some(left) = st.cut_after {
                if (n as u64) >= left {
                    pass = left as usize;
                    cut = true;
                    st.cut_after = None;
                    st.cuts += 1;
                } else {
                    st.cut_after = Some(left - n as u64);
                }
            }
        }
        if client.write_all(&buf[..pass]).is_err() {
            return;
        }
        let throttle = state.0.lock().unwrap().throttle;
        if let Some(rate) = throttle {
            std::thread::sleep(Duration::from_secs_f64(pass as f64 / rate as f64));
        }
        if cut {
            // A connection that drops midway, as a reset or a restarting proxy would.
            let _ = client.shutdown(Shutdown::Both);
            let _ = server.shutdown(Shutdown::Both);
            return;
        }
    }
}

/// Puts `objects` (hash, bytes) straight into the bucket of `s3`, as objects no record points
/// at: with a client and a runtime of their own, so that no connection of the server's client
/// is left to a runtime that then blocks.
fn put_objects(s3: &S3Config, objects: Vec<(String, Vec<u8>)>) {
    let s3 = s3.clone();
    std::thread::spawn(move || {
        let blobs = S3Blobs::new(&s3).unwrap();
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        runtime.block_on(futures_util::stream::iter(objects).for_each_concurrent(
            32,
            |(sha256, bytes)| {
                let client = blobs.client();
                let key = object_key(&s3.prefix, &sha256);
                async move {
                    object_store::ObjectStoreExt::put(
                        &*client,
                        &key,
                        object_store::PutPayload::from(bytes),
                    )
                    .await
                    .unwrap();
                }
            },
        ));
    })
    .join()
    .unwrap();
}

/// A sweep of a bucket holding thousands of unreferenced objects (more than three pages of
/// the listing) removes every one of them and keeps the objects of media; it judges the
/// listing as it arrives, a batch at a time under the blob lock, so an upload made while it
/// runs is committed before the sweep ends instead of waiting for all of it.
#[actix_web::test]
async fn the_sweep_of_thousands_of_objects_removes_them_as_it_lists() {
    let mut s3 = crate::s3_engine::shared().config();
    s3.sweep_grace_secs = 0;
    let server = TestServer::start_with({
        let s3 = s3.clone();
        move |config| {
            config.store.inline_blob_max = bytesize::ByteSize::kib(1);
            config.store.s3 = Some(s3);
        }
    })
    .await;
    let mut kept = HashSet::new();
    for seed in 0..3 {
        let bytes = pseudo_random(4096, 100 + seed);
        server
            .upload(&bytes, "application/octet-stream", None)
            .await;
        kept.insert(sha256_hex(&bytes));
    }
    let blobs = server.store.s3().unwrap().clone();
    let mut strays: Vec<String> = (0..3000u32)
        .map(|i| sha256_hex(format!("stray {i}").as_bytes()))
        .collect();
    put_objects(
        &s3,
        strays
            .iter()
            .map(|sha256| (sha256.clone(), sha256.as_bytes().to_vec()))
            .collect(),
    );
    strays.sort();
    assert_eq!(blobs.list_all().unwrap().len(), 3003);

    let store = server.store.clone();
    let sweep = std::thread::spawn(move || store.sweep_orphans().unwrap());
    // The first objects listed are going: the sweep is under way.
    let first = strays[0].clone();
    let started = Instant::now();
    while blobs.len(&first).unwrap().is_some() {
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "nothing removed"
        );
        std::thread::sleep(Duration::from_millis(5));
    }
    let during = pseudo_random(4096, 200);
    server
        .upload(&during, "application/octet-stream", None)
        .await;
    kept.insert(sha256_hex(&during));
    assert!(
        !sweep.is_finished(),
        "the upload waited for the whole sweep ({:?})",
        started.elapsed()
    );
    let removed = sweep.join().unwrap();
    assert_eq!(removed, 3000);
    let left: HashSet<String> = blobs.list_all().unwrap().into_iter().collect();
    assert_eq!(left, kept);
    for sha256 in &kept {
        assert!(blobs.len(sha256).unwrap().is_some());
    }
}

/// Runs `mxmedia migrate-store --to s3` on a stopped data dir, with the bucket of `s3`.
fn migrate_to_s3(dir: &Path, s3: &S3Config) -> std::process::Output {
    Command::new(BIN)
        .arg("migrate-store")
        .args(["--to", "s3"])
        .env_clear()
        .env("MXMEDIA_DATA_DIR", dir)
        .env("MXMEDIA_STORE__MIN_FREE_SPACE", "0")
        .env("MXMEDIA_STORE__S3__BUCKET", &s3.bucket)
        .env("MXMEDIA_STORE__S3__ENDPOINT", s3.endpoint.clone().unwrap())
        .env("MXMEDIA_STORE__S3__REGION", &s3.region)
        .env(
            "MXMEDIA_STORE__S3__ACCESS_KEY_ID",
            s3.access_key_id.clone().unwrap(),
        )
        .env(
            "MXMEDIA_STORE__S3__SECRET_ACCESS_KEY",
            s3.secret_access_key.clone().unwrap(),
        )
        .env("MXMEDIA_STORE__S3__PREFIX", &s3.prefix)
        .env("MXMEDIA_STORE__S3__PATH_STYLE", "true")
        .stdin(Stdio::null())
        .output()
        .unwrap()
}

/// A rerun of `migrate-store` over blobs already in the bucket asks S3 for their lengths
/// only (a HEAD each, no GET of any object), reports them as already there, and a blob whose
/// object in the bucket has the wrong length is copied again, whole.
#[actix_web::test]
async fn migrate_rerun_checks_objects_by_head_and_recopies_a_short_one() {
    let dir = tempfile::tempdir().unwrap();
    let config = Config {
        data_dir: dir.path().to_path_buf(),
        ..Config::default()
    };
    let store = Store::open(&config).unwrap();
    let mut blobs = Vec::new();
    for seed in 0..5u64 {
        let bytes = pseudo_random(100_000 + seed as usize * 1000, 300 + seed);
        let mut staging = store.stage().unwrap();
        staging.write(&bytes).unwrap();
        let key = mxmedia::model::id::MediaKey {
            server_name: "localhost".parse().unwrap(),
            media_id: mxmedia_proto::ids::MediaId::generate(),
        };
        let upload = Upload {
            content_type: "application/octet-stream".into(),
            filename: None,
            uploader: "@alice:localhost",
            created_at: 1,
            expect: Expect::Absent,
        };
        store
            .commit_upload(&key, staging.finish().unwrap(), upload)
            .unwrap();
        blobs.push((sha256_hex(&bytes), bytes));
    }
    drop(store);
    let proxy = Proxy::start(crate::s3_engine::shared().endpoint());
    let s3 = proxy.s3_config(&garage::fresh_prefix());

    let first = migrate_to_s3(dir.path(), &s3);
    assert!(
        first.status.success(),
        "{}",
        String::from_utf8_lossy(&first.stderr)
    );
    assert_eq!(count(&first, "copied"), 5, "{}", stdout(&first));

    proxy.forget_requests();
    let rerun = migrate_to_s3(dir.path(), &s3);
    assert!(rerun.status.success(), "{}", stdout(&rerun));
    assert_eq!(count(&rerun, "already there:"), 5, "{}", stdout(&rerun));
    let seen = proxy.requests();
    let of = |method: &str| {
        seen.iter()
            .filter(|r| r.starts_with(method) && blobs.iter().any(|(sha, _)| r.contains(sha)))
            .count()
    };
    assert_eq!(of("GET "), 0, "objects downloaded to check them: {seen:?}");
    assert_eq!(of("HEAD "), 5, "{seen:?}");

    // An object cut short in the bucket (by hand, or a broken tool): copied again.
    let direct = S3Config {
        endpoint: Some(crate::s3_engine::shared().endpoint().to_owned()),
        ..s3.clone()
    };
    let (short_sha, short_bytes) = &blobs[2];
    put_objects(
        &direct,
        vec![(short_sha.clone(), short_bytes[..5000].to_vec())],
    );
    let bucket = S3Blobs::new(&direct).unwrap();
    let again = migrate_to_s3(dir.path(), &s3);
    assert!(again.status.success(), "{}", stdout(&again));
    assert_eq!(count(&again, "copied"), 1, "{}", stdout(&again));
    assert_eq!(count(&again, "already there:"), 4, "{}", stdout(&again));
    let mut copy = Vec::new();
    std::io::Read::read_to_end(&mut bucket.open(short_sha).unwrap(), &mut copy).unwrap();
    assert!(copy == *short_bytes, "the short object was not replaced");
}

/// A download whose S3 body is cut midway (the connection to S3 drops), seconds after it
/// began (a large file, a slow link), reaches the client whole and byte for byte: the server takes the
/// object up again from the first byte it did not receive, with a ranged GET, instead of
/// cutting the client's download. (The S3 client's own resumption gives up once the request
/// is older than its retry timeout: it covers only cuts in a download's first seconds.)
#[actix_web::test]
async fn a_download_cut_between_s3_and_mxmedia_is_resumed_whole() {
    let proxy = Proxy::start(crate::s3_engine::shared().endpoint());
    let mut s3 = proxy.s3_config(&garage::fresh_prefix());
    s3.timeout_secs = 3;
    let server = TestServer::start_with(move |config| {
        config.store.inline_blob_max = bytesize::ByteSize::kib(1);
        config.store.s3 = Some(s3);
    })
    .await;
    let body = pseudo_random(12 * 1024 * 1024 + 77, 400);
    let id = server.upload(&body, "application/octet-stream", None).await;

    proxy.forget_requests();
    {
        // At 2 MiB/s, the 8th MiB passes about 4 s into the GET, past its retry timeout.
        let mut proxy = proxy.lock();
        proxy.throttle = Some(2 * 1024 * 1024);
        proxy.cut_after = Some(8 * 1024 * 1024);
    }
    let mut res = server.get_as(server.download_url(&id), ALICE).await;
    assert_eq!(res.status(), 200);
    let mut got = Vec::with_capacity(body.len());
    while let Some(chunk) = res.next().await {
        got.extend_from_slice(&chunk.expect("the client's download was cut"));
    }
    assert_eq!(proxy.lock().cuts, 1, "the connection was never cut");
    assert_eq!(got.len(), body.len());
    assert!(got == body, "the resumed body differs");
    let gets = proxy
        .requests()
        .iter()
        .filter(|r| r.starts_with("GET ") && r.contains(&sha256_hex(&body)))
        .count();
    assert_eq!(
        gets,
        2,
        "one GET, then one ranged GET from the cut: {:?}",
        proxy.requests()
    );
}

/// While `mxmedia import synapse` sends a blob to S3 (held back here for as long as the test
/// wants), an upload to the same server completes: the import sends before it takes the blob
/// lock. Once the send goes through, the import's results are what they would have been.
#[actix_web::test]
async fn an_upload_completes_while_an_import_sends_to_s3() {
    let proxy = Proxy::start(crate::s3_engine::shared().endpoint());
    let mut s3 = proxy.s3_config(&garage::fresh_prefix());
    // The held PUT must not time out while the test holds it.
    s3.timeout_secs = 120;
    let server = TestServer::start_with(move |config| {
        config.store.inline_blob_max = bytesize::ByteSize::kib(4);
        config.store.s3 = Some(s3);
    })
    .await;
    let large = pseudo_random(200_000, 500);
    let synapse = Synapse::new();
    synapse.add_local(Local {
        id: "AAAAimportedLargeeeeeeee",
        user: "@alice:localhost",
        bytes: Some(&large),
        media_type: "application/octet-stream",
        name: Some("large.bin"),
        ..Local::default()
    });
    proxy.lock().hold = Some(sha256_hex(&large));
    let data_dir = server.config.data_dir.clone();
    let importing = std::thread::spawn(move || {
        let out = import(&synapse, &data_dir, &[]);
        drop(synapse);
        out
    });
    let started = Instant::now();
    while proxy.lock().held == 0 {
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "the import never sent"
        );
        std::thread::sleep(Duration::from_millis(10));
    }

    let during = pseudo_random(50_000, 501);
    let upload = tokio::time::timeout(
        Duration::from_secs(20),
        server.upload(&during, "application/octet-stream", None),
    )
    .await;
    proxy.release();
    let id = upload.expect("the upload waited for the import's transfer");
    let out = importing.join().unwrap();
    assert!(out.status.success(), "{}", stdout(&out));
    assert_eq!(count(&out, "imported:"), 1, "{}", stdout(&out));

    let mut res = server.get_as(server.download_url(&id), ALICE).await;
    assert_eq!(res.body().limit(1 << 20).await.unwrap(), during.as_slice());
    let mut res = server
        .get_as(server.download_url("AAAAimportedLargeeeeeeee"), ALICE)
        .await;
    assert_eq!(res.status(), 200);
    assert!(res.body().limit(1 << 20).await.unwrap() == large.as_slice());
}
