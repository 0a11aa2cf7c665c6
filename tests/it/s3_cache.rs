//! The local disk cache of S3 blobs (`[store.s3] cache_max_size`) against a real Garage: hits
//! need no S3 at all (Garage stopped), whole and in ranges; the cache stays within its size,
//! least recently used first; only whole, verified reads are kept; a damaged file is not
//! served; deleted media leaves it; it survives a restart; it respects the free-space floor.

use std::{
    path::{Path, PathBuf},
    time::{Duration, Instant},
};

use bytesize::ByteSize;
use futures_util::StreamExt as _;
use mxmedia::{config::FreeSpace, model::id::MediaKey};

use crate::{
    common::{ALICE, TestServer, Tmpfs, assert_error, pseudo_random},
    garage,
    process::{free_port, spawn_with, wait_ready},
    s3_engine::{self, Engine},
};

const MIB: usize = 1024 * 1024;

/// A server on `garage` whose blobs above 1 KiB are S3 objects, with a cache of `max` bytes in
/// `cache_dir` (default: in the data dir).
async fn server_on(
    garage: &Engine,
    max: ByteSize,
    cache_dir: Option<PathBuf>,
    floor: FreeSpace,
) -> TestServer {
    let mut s3 = garage.config();
    s3.cache_max_size = max;
    s3.cache_dir = cache_dir;
    TestServer::start_with(move |config| {
        config.store.inline_blob_max = ByteSize::kib(1);
        config.store.min_free_space = floor;
        config.store.s3 = Some(s3);
    })
    .await
}

/// A directory on another file system than the data dir's (a tmpfs), so that uploads cannot be
/// hard-linked into a cache there: what such a cache holds came from reads of S3.
fn other_fs() -> tempfile::TempDir {
    tempfile::tempdir_in("/dev/shm").unwrap()
}

fn sha256_hex(bytes: &[u8]) -> String {
    use sha2::Digest as _;
    hex::encode(sha2::Sha256::digest(bytes))
}

/// The cache's files: (sha256, length), sorted.
fn cached(dir: &Path) -> Vec<(String, u64)> {
    let mut out = Vec::new();
    let Ok(shards) = std::fs::read_dir(dir) else {
        return out;
    };
    for shard in shards.map(Result::unwrap) {
        if shard.file_name() == "tmp" || !shard.file_type().unwrap().is_dir() {
            continue;
        }
        for file in std::fs::read_dir(shard.path()).unwrap().map(Result::unwrap) {
            out.push((
                file.file_name().into_string().unwrap(),
                file.metadata().unwrap().len(),
            ));
        }
    }
    out.sort();
    out
}

fn cached_names(dir: &Path) -> Vec<String> {
    cached(dir).into_iter().map(|(name, _)| name).collect()
}

fn temp_files(dir: &Path) -> usize {
    crate::common::count_files(&dir.join("tmp"))
}

async fn download(server: &TestServer, id: &str) -> (u16, Vec<u8>) {
    let mut res = server.get_as(server.download_url(id), ALICE).await;
    let status = res.status().as_u16();
    (status, res.body().limit(64 << 20).await.unwrap().to_vec())
}

async fn download_range(server: &TestServer, id: &str, from: usize, to: usize) -> Vec<u8> {
    let mut res = server
        .client
        .get(server.download_url(id))
        .bearer_auth(ALICE)
        .insert_header(("range", format!("bytes={from}-{to}")))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 206);
    res.body().limit(64 << 20).await.unwrap().to_vec()
}

/// Waits until `check` holds (a download's reader is dropped on a blocking thread, a little
/// after its response ends).
async fn eventually(what: &str, check: impl Fn() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while !check() {
        assert!(Instant::now() < deadline, "{what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// With the cache on, a 10 MiB blob read once from S3 is downloaded again, whole and in a
/// range, while Garage is stopped; the same blob on a server without the cache answers 502.
#[actix_web::test]
async fn a_cached_blob_is_served_with_garage_stopped_and_an_uncached_one_is_502() {
    let garage = Engine::start();
    let cache_dir = other_fs();
    let server = server_on(
        &garage,
        ByteSize::mib(64),
        Some(cache_dir.path().to_path_buf()),
        FreeSpace::Bytes(0),
    )
    .await;
    let plain = server_on(&garage, ByteSize::b(0), None, FreeSpace::Bytes(0)).await;
    let body = pseudo_random(10 * MIB, 71);
    let id = server.upload(&body, "application/octet-stream", None).await;
    let plain_id = plain.upload(&body, "application/octet-stream", None).await;
    assert!(cached(cache_dir.path()).is_empty(), "nothing read yet");

    assert_eq!(download(&server, &id).await, (200, body.clone()));
    assert_eq!(
        cached(cache_dir.path()),
        vec![(sha256_hex(&body), body.len() as u64)],
        "the whole read is kept under its hash"
    );
    assert_eq!(temp_files(cache_dir.path()), 0);
    assert_eq!(download(&plain, &plain_id).await, (200, body.clone()));

    garage.stop();
    assert_eq!(download(&server, &id).await, (200, body.clone()));
    let (from, to) = (3 * MIB + 5, 7 * MIB + 11);
    assert_eq!(
        download_range(&server, &id, from, to).await,
        &body[from..=to]
    );
    let mut res = plain.get_as(plain.download_url(&plain_id), ALICE).await;
    assert_error(&mut res, 502, "M_UNKNOWN").await;
}

/// Across several blobs the cache's files never total more than its size: reading a blob that
/// does not fit deletes the least recently used one, and a blob read again meanwhile stays.
#[actix_web::test]
async fn the_cache_stays_within_its_size_and_the_least_recently_used_goes_first() {
    let garage = s3_engine::shared();
    let cache_dir = other_fs();
    let max = 25 * MIB;
    let server = server_on(
        garage,
        ByteSize::b(max as u64),
        Some(cache_dir.path().to_path_buf()),
        FreeSpace::Bytes(0),
    )
    .await;
    let bodies: Vec<Vec<u8>> = (0..4).map(|i| pseudo_random(10 * MIB, 80 + i)).collect();
    let shas: Vec<String> = bodies.iter().map(|b| sha256_hex(b)).collect();
    let mut ids = Vec::new();
    for body in &bodies {
        ids.push(server.upload(body, "application/octet-stream", None).await);
    }
    let within = || {
        let total: u64 = cached(cache_dir.path()).iter().map(|(_, len)| len).sum();
        assert!(total <= max as u64, "{total} bytes cached, more than {max}");
    };
    let read = |i: usize| {
        let (server, ids, bodies) = (&server, &ids, &bodies);
        async move { assert_eq!(download(server, &ids[i]).await, (200, bodies[i].clone())) }
    };
    let sorted = |mut names: Vec<String>| {
        names.sort();
        names
    };

    read(0).await;
    read(1).await;
    within();
    assert_eq!(
        cached_names(cache_dir.path()),
        sorted(vec![shas[0].clone(), shas[1].clone()])
    );
    read(0).await; // now 1 is the least recently used
    read(2).await;
    within();
    assert_eq!(
        cached_names(cache_dir.path()),
        sorted(vec![shas[0].clone(), shas[2].clone()]),
        "the least recently used went, the one read again stayed"
    );
    read(3).await;
    within();
    assert_eq!(
        cached_names(cache_dir.path()),
        sorted(vec![shas[2].clone(), shas[3].clone()])
    );
}

/// A first download that reads only a range, or that its client abandons after the first
/// bytes, leaves no cache file and no temp file; a whole one then does.
#[actix_web::test]
async fn a_ranged_or_cut_first_download_leaves_no_cache_file() {
    let garage = s3_engine::shared();
    let cache_dir = other_fs();
    let server = server_on(
        garage,
        ByteSize::mib(64),
        Some(cache_dir.path().to_path_buf()),
        FreeSpace::Bytes(0),
    )
    .await;
    let body = pseudo_random(10 * MIB, 90);
    let id = server.upload(&body, "application/octet-stream", None).await;

    assert_eq!(download_range(&server, &id, 0, 99).await, &body[..100]);
    assert_eq!(
        download_range(&server, &id, MIB, 2 * MIB).await,
        &body[MIB..=2 * MIB]
    );
    let mut res = server.get_as(server.download_url(&id), ALICE).await;
    assert_eq!(res.status(), 200);
    let first = res.next().await.unwrap().unwrap();
    assert!(!first.is_empty());
    drop(res);
    eventually("the abandoned download's temp file goes", || {
        temp_files(cache_dir.path()) == 0
    })
    .await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(
        cached(cache_dir.path()).is_empty(),
        "no partial blob cached"
    );
    assert_eq!(temp_files(cache_dir.path()), 0);

    assert_eq!(download(&server, &id).await, (200, body.clone()));
    assert_eq!(cached_names(cache_dir.path()), vec![sha256_hex(&body)]);
}

/// A cache file cut short on disk is not served: the download reads S3 and returns the whole
/// blob, and the cache gets a whole copy again.
#[actix_web::test]
async fn a_truncated_cache_file_is_not_served() {
    let garage = s3_engine::shared();
    let cache_dir = other_fs();
    let server = server_on(
        garage,
        ByteSize::mib(64),
        Some(cache_dir.path().to_path_buf()),
        FreeSpace::Bytes(0),
    )
    .await;
    let body = pseudo_random(10 * MIB, 91);
    let sha = sha256_hex(&body);
    let id = server.upload(&body, "application/octet-stream", None).await;
    assert_eq!(download(&server, &id).await, (200, body.clone()));
    let path = cache_dir.path().join(&sha[..2]).join(&sha);
    std::fs::OpenOptions::new()
        .write(true)
        .open(&path)
        .unwrap()
        .set_len(4 * MIB as u64)
        .unwrap();

    assert_eq!(download(&server, &id).await, (200, body.clone()));
    assert_eq!(
        download_range(&server, &id, 5 * MIB, 6 * MIB).await,
        &body[5 * MIB..=6 * MIB]
    );
    eventually("a whole copy is cached again", || {
        cached(cache_dir.path()) == vec![(sha.clone(), body.len() as u64)]
    })
    .await;
}

/// Deleting the media deletes its cached file, as it deletes the object.
#[actix_web::test]
async fn deleting_the_media_removes_its_cache_file() {
    let garage = s3_engine::shared();
    let cache_dir = other_fs();
    let server = server_on(
        garage,
        ByteSize::mib(64),
        Some(cache_dir.path().to_path_buf()),
        FreeSpace::Bytes(0),
    )
    .await;
    let body = pseudo_random(3 * MIB, 92);
    let id = server.upload(&body, "application/octet-stream", None).await;
    assert_eq!(download(&server, &id).await, (200, body.clone()));
    assert_eq!(cached_names(cache_dir.path()), vec![sha256_hex(&body)]);

    let key = MediaKey {
        server_name: mxmedia_proto::ids::ServerName::localhost(),
        media_id: id.parse().unwrap(),
    };
    let deleted = server
        .store
        .blocking(move |s| s.delete_media(&key))
        .await
        .unwrap();
    assert!(deleted);
    assert!(cached(cache_dir.path()).is_empty(), "the cache file went");
    let (status, _) = download(&server, &id).await;
    assert_eq!(status, 404);
}

/// The cache survives a restart (even a `kill -9`): after it, the download is served with
/// Garage stopped.
#[actix_web::test]
async fn the_cache_survives_a_restart() {
    let garage = Engine::start();
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let env = vec![
        ("MXMEDIA_STORE__S3__BUCKET", garage::BUCKET.to_owned()),
        ("MXMEDIA_STORE__S3__ENDPOINT", garage.endpoint().to_owned()),
        ("MXMEDIA_STORE__S3__REGION", garage.region().to_owned()),
        (
            "MXMEDIA_STORE__S3__ACCESS_KEY_ID",
            garage::ACCESS_KEY.to_owned(),
        ),
        (
            "MXMEDIA_STORE__S3__SECRET_ACCESS_KEY",
            garage::SECRET_KEY.to_owned(),
        ),
        ("MXMEDIA_STORE__S3__PATH_STYLE", "true".to_owned()),
        ("MXMEDIA_STORE__S3__PREFIX", garage::fresh_prefix()),
        ("MXMEDIA_STORE__S3__CACHE_MAX_SIZE", "64MiB".to_owned()),
    ];
    let body = pseudo_random(10 * MIB, 93);
    let cache_dir = dir.path().join("s3-cache");

    let proc = spawn_with(dir.path(), port, true, &env);
    wait_ready(&proc.base).await;
    let id = crate::process::upload(&proc.base, ALICE, body.clone()).await;
    let (status, got) = crate::process::download(&proc.base, ALICE, &id).await;
    assert_eq!(status, 200);
    assert!(got == body);
    assert_eq!(
        cached(&cache_dir),
        vec![(sha256_hex(&body), body.len() as u64)]
    );
    drop(proc); // SIGKILL

    let proc = spawn_with(dir.path(), port, true, &env);
    wait_ready(&proc.base).await;
    garage.stop();
    let (status, got) = crate::process::download(&proc.base, ALICE, &id).await;
    assert_eq!(status, 200);
    assert!(got == body, "the cached bytes, with Garage stopped");
}

/// The cache never takes its disk below `min_free_space`: on a 16 MiB file system with an
/// 8 MiB floor, a 10 MiB blob is not cached (with Garage stopped it is 502) while a 4 MiB one
/// is.
#[actix_web::test]
async fn the_cache_leaves_the_free_space_floor_alone() {
    let Some(tmpfs) = Tmpfs::mount("16m") else {
        eprintln!("skipped: mounting a tmpfs needs root");
        return;
    };
    let garage = Engine::start();
    let server = server_on(
        &garage,
        ByteSize::mib(64),
        Some(tmpfs.dir.path().to_path_buf()),
        FreeSpace::Bytes(8 * MIB as u64),
    )
    .await;
    let big = pseudo_random(10 * MIB, 94);
    let small = pseudo_random(4 * MIB, 95);
    let big_id = server.upload(&big, "application/octet-stream", None).await;
    let small_id = server
        .upload(&small, "application/octet-stream", None)
        .await;
    assert_eq!(download(&server, &big_id).await, (200, big.clone()));
    assert_eq!(download(&server, &small_id).await, (200, small.clone()));
    assert_eq!(cached_names(tmpfs.dir.path()), vec![sha256_hex(&small)]);

    garage.stop();
    assert_eq!(download(&server, &small_id).await, (200, small.clone()));
    let mut res = server.get_as(server.download_url(&big_id), ALICE).await;
    assert_error(&mut res, 502, "M_UNKNOWN").await;
}

/// An upload streams into the bucket without touching the disk, so it is cached by its first
/// whole download: after that one, Garage may be down.
#[actix_web::test]
async fn an_upload_is_cached_by_its_first_whole_download() {
    let garage = Engine::start();
    let server = server_on(&garage, ByteSize::mib(64), None, FreeSpace::Bytes(0)).await;
    let body = pseudo_random(10 * MIB, 96);
    let id = server.upload(&body, "application/octet-stream", None).await;
    let cache_dir = server.dir.path().join("s3-cache");
    assert_eq!(cached(&cache_dir), vec![]);
    assert_eq!(download(&server, &id).await, (200, body.clone()));
    assert_eq!(
        cached(&cache_dir),
        vec![(sha256_hex(&body), body.len() as u64)]
    );
    assert_eq!(temp_files(&cache_dir), 0);
    garage.stop();
    assert_eq!(download(&server, &id).await, (200, body.clone()));
}

/// `check-config` and start-up create the cache directory and refuse one that cannot be
/// written, naming `MXMEDIA_STORE__S3__CACHE_DIR`.
#[test]
fn check_config_and_start_up_check_the_cache_dir() {
    let garage = s3_engine::shared();
    let dir = tempfile::tempdir().unwrap();
    let not_a_dir = dir.path().join("a-file");
    std::fs::write(&not_a_dir, b"x").unwrap();
    let run = |args: &[&str], cache_dir: &Path| {
        let out = std::process::Command::new(crate::process::BIN)
            .args(args)
            .env_clear()
            .env("MXMEDIA_DATA_DIR", dir.path().join("data"))
            .env("MXMEDIA_LISTEN", format!("127.0.0.1:{}", free_port()))
            .env("MXMEDIA_STORE__S3__BUCKET", garage::BUCKET)
            .env("MXMEDIA_STORE__S3__ENDPOINT", garage.endpoint())
            .env("MXMEDIA_STORE__S3__REGION", garage.region())
            .env("MXMEDIA_STORE__S3__ACCESS_KEY_ID", garage::ACCESS_KEY)
            .env("MXMEDIA_STORE__S3__SECRET_ACCESS_KEY", garage::SECRET_KEY)
            .env("MXMEDIA_STORE__S3__PATH_STYLE", "true")
            .env("MXMEDIA_STORE__S3__PREFIX", garage::fresh_prefix())
            .env("MXMEDIA_STORE__S3__CACHE_MAX_SIZE", "1GiB")
            .env("MXMEDIA_STORE__S3__CACHE_DIR", cache_dir)
            .output()
            .unwrap();
        let text = String::from_utf8_lossy(&out.stderr).into_owned()
            + &String::from_utf8_lossy(&out.stdout);
        (out.status.success(), text)
    };
    let good = dir.path().join("cache");
    let (ok, text) = run(&["check-config"], &good);
    assert!(ok, "{text}");
    assert!(text.contains("writable"), "{text}");
    assert!(good.is_dir(), "created");

    let bad = not_a_dir.join("cache");
    for args in [&["check-config"][..], &["serve"][..]] {
        let (ok, text) = run(args, &bad);
        assert!(!ok, "{args:?}: {text}");
        assert!(
            text.contains("MXMEDIA_STORE__S3__CACHE_DIR"),
            "{args:?}: {text}"
        );
    }
}
