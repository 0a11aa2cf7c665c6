//! `mxmedia backup`: a copy taken while the server runs and takes uploads is a data dir a fresh
//! server serves every backed-up item from, byte for byte.

use std::{
    cell::RefCell,
    os::unix::fs::PermissionsExt as _,
    rc::Rc,
    time::{Duration, Instant},
};

use crate::common::{ALICE, TestServer, client, pseudo_random};

const PHOTO: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/tests/fixtures/photo_640x480.jpg"
);
const THUMB: &str = "?width=96&height=96&method=crop";

async fn download(server: &TestServer, id: &str) -> (u16, Vec<u8>) {
    let mut res = server.get_as(server.download_url(id), ALICE).await;
    let body = res.body().limit(64 << 20).await.unwrap().to_vec();
    (res.status().as_u16(), body)
}

async fn thumbnail(server: &TestServer, id: &str) -> Vec<u8> {
    let url = server.url(&format!(
        "/_matrix/client/v1/media/thumbnail/localhost/{id}{THUMB}"
    ));
    let mut res = server.get_as(url, ALICE).await;
    assert_eq!(res.status(), 200);
    res.body().await.unwrap().to_vec()
}

/// Uploads as alice to the server at `base`; returns the media id.
async fn upload(base: &str, bytes: &[u8]) -> String {
    let mut res = client()
        .post(format!("{base}/_matrix/media/v3/upload"))
        .bearer_auth(ALICE)
        .send_body(bytes.to_vec())
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    let body: serde_json::Value = res.json().await.unwrap();
    let uri = body["content_uri"].as_str().unwrap();
    uri.rsplit('/').next().unwrap().to_owned()
}

async fn wait_until(done: impl Fn() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while !done() {
        assert!(Instant::now() < deadline, "uploads did not progress");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// An upload made while the backup ran: when it started and when its 200 came.
struct Timed {
    id: String,
    bytes: Vec<u8>,
    started: Instant,
    finished: Instant,
}

/// A backup taken while uploads go on holds everything acknowledged before it started, nothing
/// started after it ended, and every item it holds is whole: inline and file blobs, duplicates,
/// thumbnails.
#[actix_web::test]
async fn backup_while_running_and_uploading() {
    let server = TestServer::start().await;
    let socket = server.dir.path().join(mxmedia::backup::SOCKET_NAME);
    let mode = std::fs::metadata(&socket).unwrap().permissions().mode();
    assert_eq!(
        mode & 0o777,
        0o600,
        "only the service user may ask for a dump"
    );

    let mut before = Vec::new();
    for (i, len) in [100, 10_000, 200_000, 300_000, 3 << 20]
        .into_iter()
        .enumerate()
    {
        let bytes = pseudo_random(len, 100 + i as u64);
        before.push((
            server
                .upload(&bytes, "application/octet-stream", None)
                .await,
            bytes,
        ));
    }
    // The same large bytes twice: one blob file with two references.
    let (_, dup) = before.last().unwrap().clone();
    before.push((
        server.upload(&dup, "application/octet-stream", None).await,
        dup,
    ));
    let photo = std::fs::read(PHOTO).unwrap();
    let photo_id = server.upload(&photo, "image/jpeg", Some("photo.jpg")).await;
    let thumb = thumbnail(&server, &photo_id).await;
    before.push((photo_id.clone(), photo));

    // Uploads keep coming while the backup runs.
    let during = Rc::new(RefCell::new(Vec::<Timed>::new()));
    let stop = Rc::new(std::cell::Cell::new(false));
    let uploader = {
        let (during, stop, base) = (during.clone(), stop.clone(), server.base.clone());
        actix_web::rt::spawn(async move {
            let mut seed = 1000;
            while !stop.get() {
                seed += 1;
                let len = if seed % 2 == 0 { 5_000 } else { 400_000 };
                let bytes = pseudo_random(len, seed);
                let started = Instant::now();
                let id = upload(&base, &bytes).await;
                during.borrow_mut().push(Timed {
                    id,
                    bytes,
                    started,
                    finished: Instant::now(),
                });
            }
        })
    };
    wait_until(|| during.borrow().len() >= 3).await;

    let backup_root = tempfile::tempdir().unwrap();
    let target = backup_root.path().join("backup");
    let config = server.config.clone();
    let backup_started = Instant::now();
    let report = {
        let target = target.clone();
        tokio::task::spawn_blocking(move || {
            mxmedia::backup::run(&config, &target, &Default::default())
        })
        .await
        .unwrap()
        .unwrap()
    };
    let backup_ended = Instant::now();
    wait_until(|| {
        during
            .borrow()
            .iter()
            .filter(|t| t.started > backup_ended)
            .count()
            >= 3
    })
    .await;
    stop.set(true);
    uploader.await.unwrap();
    let during = std::mem::take(&mut *during.borrow_mut());
    assert_eq!(report.source, mxmedia::backup::Source::RunningServer);
    assert!(report.files_linked + report.files_copied >= 2, "{report:?}");
    assert!(
        during.iter().any(|t| t.finished < backup_started),
        "some uploads finished before the backup"
    );
    assert!(
        during.iter().any(|t| t.started > backup_ended),
        "some uploads started after the backup"
    );
    assert!(!target.join(mxmedia::backup::SOCKET_NAME).exists());

    // A second backup into the same place is refused; the first stays whole.
    let config = server.config.clone();
    let again = {
        let target = target.clone();
        tokio::task::spawn_blocking(move || {
            mxmedia::backup::run(&config, &target, &Default::default())
        })
        .await
        .unwrap()
    };
    assert!(again.unwrap_err().to_string().contains("already exists"));

    let restored = TestServer::start_with(|c| c.data_dir = target.clone()).await;
    for (id, bytes) in &before {
        assert_eq!(download(&restored, id).await, (200, bytes.clone()), "{id}");
    }
    assert_eq!(thumbnail(&restored, &photo_id).await, thumb);
    let (mut kept, mut absent) = (0, 0);
    for t in during.iter() {
        let (status, body) = download(&restored, &t.id).await;
        if t.finished < backup_started {
            assert_eq!(
                (status, &body),
                (200, &t.bytes),
                "acknowledged before the backup"
            );
        } else if t.started > backup_ended {
            assert_eq!(status, 404, "started after the backup");
        } else if status == 200 {
            assert_eq!(body, t.bytes, "an item in the backup is whole");
        } else {
            assert_eq!(status, 404);
        }
        if status == 200 {
            kept += 1
        } else {
            absent += 1
        }
    }
    assert!(kept > 0 && absent > 0, "kept {kept}, absent {absent}");
    // The source server is untouched and still takes uploads.
    for (id, bytes) in &before {
        assert_eq!(download(&server, id).await, (200, bytes.clone()));
    }
}

/// The command as an admin runs it: against the running binary over its socket, then against
/// the stopped data dir (onto another file system when there is one, so files are copied, not
/// linked); a server started on either backup serves every item.
#[actix_web::test]
async fn backup_command_running_and_stopped() {
    use crate::process::{
        BIN, download, free_port, nix_kill, spawn, spawn_with, upload, wait_ready,
    };
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    // The first item stays in sled, so the backup has both kinds of blob.
    let inline = [("MXMEDIA_STORE__INLINE_BLOB_MAX", "256KiB".to_owned())];
    let mut proc = spawn_with(dir.path(), port, true, &inline);
    wait_ready(&proc.base).await;
    let items: Vec<Vec<u8>> = vec![
        pseudo_random(20_000, 1),
        pseudo_random(2 << 20, 2),
        pseudo_random(300_000, 3),
    ];
    let mut ids = Vec::new();
    for bytes in &items {
        ids.push(upload(&proc.base, ALICE, bytes.clone()).await);
    }
    let backup = |data_dir: &std::path::Path, target: &std::path::Path| {
        std::process::Command::new(BIN)
            .env_clear()
            .arg("backup")
            .arg("--data-dir")
            .arg(data_dir)
            .arg(target)
            .output()
            .unwrap()
    };
    let backups = tempfile::tempdir().unwrap();
    let live = backups.path().join("live");
    let out = backup(dir.path(), &live);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout} {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.contains("from the running server"), "{stdout}");
    assert!(stdout.contains("2 hard-linked"), "{stdout}");
    // The server goes on after serving a backup.
    ids.push(upload(&proc.base, ALICE, b"after the backup".to_vec()).await);
    nix_kill(&proc.child, "TERM");
    assert!(proc.child.wait().unwrap().success());

    let other_fs = tempfile::tempdir_in("/dev/shm").or_else(|_| tempfile::tempdir());
    let other_fs = other_fs.unwrap();
    let stopped = other_fs.path().join("stopped");
    let out = backup(dir.path(), &stopped);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout} {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.contains("from the stopped data dir"), "{stdout}");

    let out = backup(dir.path(), &stopped);
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("already exists"));
    let out = backup(&dir.path().join("nothing-here"), &backups.path().join("x"));
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("has no database"));
    assert!(!backups.path().join("x").exists());

    for (data_dir, newest_kept) in [(&live, false), (&stopped, true)] {
        let mut proc = spawn(data_dir, port, true);
        wait_ready(&proc.base).await;
        for (id, bytes) in ids.iter().zip(&items) {
            assert_eq!(download(&proc.base, ALICE, id).await, (200, bytes.clone()));
        }
        let newest = download(&proc.base, ALICE, ids.last().unwrap()).await;
        assert_eq!(newest.0 == 200, newest_kept, "{}", data_dir.display());
        nix_kill(&proc.child, "TERM");
        assert!(proc.child.wait().unwrap().success());
    }
}

/// A backup of a running server holds what a restore needs to be the same server: a fresh
/// server started on it signs with the same key (same id, same secret), so a remote that trusts
/// the original still serves it, and every item is byte-equal, local and remote. A signing key
/// configured outside the data dir is named in the command's output as not backed up.
#[actix_web::test]
async fn restore_keeps_the_signing_key() {
    use crate::{
        fake_media::{File, MediaHost},
        fake_remote::{FakeRemote, Pki},
        process::{BIN, download, free_port, nix_kill, spawn_with, upload, wait_ready},
    };
    let pki = Pki::new();
    let host = MediaHost::new();
    let remote = FakeRemote::start_with(&pki, "127.0.0.1:0", None, MediaHost::routes(&host));
    host.serve_as(remote.name(), remote.port);
    let env = [
        ("MXMEDIA_FEDERATION__IP_RANGE_DENYLIST", "[]".to_owned()),
        (
            "MXMEDIA_FEDERATION__CA_FILE",
            pki.ca_file.display().to_string(),
        ),
    ];
    let remote_url = |base: &str, id: &str| {
        format!(
            "{base}/_matrix/client/v1/media/download/{}/{id}",
            remote.name().as_str()
        )
    };
    let get = |url: String| async move {
        let mut res = client().get(url).bearer_auth(ALICE).send().await.unwrap();
        let body = res.body().limit(8 << 20).await.unwrap().to_vec();
        (res.status().as_u16(), body)
    };

    let dir = tempfile::tempdir().unwrap();
    let mut proc = spawn_with(dir.path(), free_port(), true, &env);
    wait_ready(&proc.base).await;
    // The remote accepts only requests signed with the key this server made at its start.
    host.trust("localhost", dir.path());
    let key = std::fs::read_to_string(dir.path().join("signing.key")).unwrap();
    let (first, second) = (pseudo_random(50_000, 61), pseudo_random(400_000, 62));
    host.put("first", File::new(first.clone(), "image/png"));
    host.put("second", File::new(second.clone(), "image/png"));
    assert_eq!(
        get(remote_url(&proc.base, "first")).await,
        (200, first.clone())
    );
    let local: Vec<(String, Vec<u8>)> = {
        let mut out = Vec::new();
        for (len, seed) in [(1_000, 63), (700_000, 64)] {
            let bytes = pseudo_random(len, seed);
            out.push((upload(&proc.base, ALICE, bytes.clone()).await, bytes));
        }
        out
    };

    let backups = tempfile::tempdir().unwrap();
    let target = backups.path().join("b");
    let out = std::process::Command::new(BIN)
        .env_clear()
        .arg("backup")
        .arg("--data-dir")
        .arg(dir.path())
        .arg(&target)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{stdout}");
    assert!(stdout.contains("from the running server"), "{stdout}");
    assert!(stdout.contains("signing key included"), "{stdout}");
    nix_kill(&proc.child, "TERM");
    assert!(proc.child.wait().unwrap().success());

    let mut restored = spawn_with(&target, free_port(), true, &env);
    wait_ready(&restored.base).await;
    assert_eq!(
        std::fs::read_to_string(target.join("signing.key")).unwrap(),
        key,
        "same key id and key"
    );
    for (id, bytes) in &local {
        assert_eq!(
            download(&restored.base, ALICE, id).await,
            (200, bytes.clone())
        );
    }
    assert_eq!(get(remote_url(&restored.base, "first")).await, (200, first));
    assert_eq!(
        remote.hits("/_matrix/federation/v1/media/download/first"),
        1
    );
    // A new fetch is signed with the same key, so the remote still serves us.
    assert_eq!(
        get(remote_url(&restored.base, "second")).await,
        (200, second)
    );
    nix_kill(&restored.child, "TERM");
    assert!(restored.child.wait().unwrap().success());

    // A key kept outside the data dir: the backup says it does not hold it.
    let keys = tempfile::tempdir().unwrap();
    let outside = keys.path().join("media.key");
    std::fs::write(&outside, &key).unwrap();
    let out = std::process::Command::new(BIN)
        .env_clear()
        .env("MXMEDIA_FEDERATION__SIGNING_KEY_PATH", &outside)
        .arg("backup")
        .arg("--data-dir")
        .arg(&target)
        .arg(backups.path().join("c"))
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{stdout}");
    assert!(
        stdout.contains("signing key is NOT in this backup")
            && stdout.contains(outside.to_str().unwrap()),
        "{stdout}"
    );
}

/// Runs `mxmedia backup ARGS` on the data dir `dir` with `env`, as an admin would.
fn backup_command(
    dir: &std::path::Path,
    env: &[(&str, String)],
    args: &[&std::ffi::OsStr],
) -> std::process::Command {
    let mut cmd = std::process::Command::new(crate::process::BIN);
    cmd.env_clear()
        .arg("backup")
        .arg("--data-dir")
        .arg(dir)
        .args(args)
        .envs(env.iter().map(|(k, v)| (*k, v.as_str())))
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped());
    cmd
}

/// The output of a finished command, checked to have succeeded.
async fn backup_ok(
    dir: &std::path::Path,
    env: &[(&str, String)],
    args: &[&std::ffi::OsStr],
) -> String {
    let mut cmd = backup_command(dir, env, args);
    let out = tokio::task::spawn_blocking(move || cmd.output().unwrap())
        .await
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    stdout
}

/// The blob files under a data dir (or a partial backup).
fn blob_file_count(dir: &std::path::Path) -> usize {
    std::fs::read_dir(dir.join("blobs"))
        .into_iter()
        .flatten()
        .map(|s| std::fs::read_dir(s.unwrap().path()).unwrap().count())
        .sum()
}

/// With blobs in S3, `backup --include-s3-blobs`, taken from the running server while uploads
/// go on and given no S3 settings (the bytes come over the server's socket), or from the
/// stopped data dir, is a data dir a server without S3 serves every item from, byte for byte;
/// without the flag the summary says the blobs stayed in the bucket and the backup holds none
/// of them.
#[actix_web::test]
async fn backup_with_s3_blobs_restores_without_the_bucket() {
    use crate::process::{download, free_port, spawn_with, upload, wait_ready};
    let s3 = crate::s3_engine::shared().config();
    let env = crate::migrate::s3_env(&s3);
    let dir = tempfile::tempdir().unwrap();
    let proc = spawn_with(dir.path(), free_port(), true, &env);
    wait_ready(&proc.base).await;
    let mut items = Vec::new();
    for (i, len) in [1000, 200_000, 1_500_000, 3 << 20, 50_000]
        .into_iter()
        .enumerate()
    {
        let bytes = pseudo_random(len, 7000 + i as u64);
        items.push((upload(&proc.base, ALICE, bytes.clone()).await, bytes));
    }
    assert_eq!(blob_file_count(dir.path()), 0, "blobs went to disk on S3");

    let stop = Rc::new(std::cell::Cell::new(false));
    let uploader = {
        let (stop, base) = (stop.clone(), proc.base.clone());
        actix_web::rt::spawn(async move {
            let mut n = 0;
            while !stop.get() {
                n += 1;
                upload(&base, ALICE, pseudo_random(300_000, 9000 + n)).await;
            }
            n
        })
    };
    let backups = tempfile::tempdir().unwrap();
    let whole = backups.path().join("whole");
    let stdout = backup_ok(
        dir.path(),
        &[],
        &["--include-s3-blobs".as_ref(), whole.as_os_str()],
    )
    .await;
    stop.set(true);
    assert!(uploader.await.unwrap() > 0, "uploads went on");
    assert!(stdout.contains("from the running server"), "{stdout}");
    assert!(
        stdout.contains("fetched from the server's blob store"),
        "{stdout}"
    );
    assert!(!stdout.contains("stayed in S3"), "{stdout}");

    let partial = backups.path().join("meta");
    let stdout = backup_ok(dir.path(), &env, &[partial.as_os_str()]).await;
    assert!(stdout.contains("stayed in S3 bucket"), "{stdout}");
    assert!(stdout.contains("--include-s3-blobs"), "{stdout}");
    assert_eq!(blob_file_count(&partial), 0);
    drop(proc);

    // With the server stopped the command reads the bucket itself, given its settings.
    let stopped = backups.path().join("stopped");
    let stdout = backup_ok(
        dir.path(),
        &env,
        &["--include-s3-blobs".as_ref(), stopped.as_os_str()],
    )
    .await;
    assert!(stdout.contains("from the stopped data dir"), "{stdout}");
    assert!(!stdout.contains("stayed in S3"), "{stdout}");

    // Served from disk alone: no S3 settings at all.
    for backup in [&whole, &stopped] {
        let restored = spawn_with(backup, free_port(), true, &[]);
        wait_ready(&restored.base).await;
        for (id, bytes) in &items {
            let (status, body) = download(&restored.base, ALICE, id).await;
            assert_eq!(status, 200, "{id} from {}", backup.display());
            assert!(body == *bytes, "{id} came back different");
        }
    }
}

/// `backup --include-s3-blobs` killed with -9 while it fetches blobs leaves no `DIR`; run again
/// it takes over what the killed run had verified, fetches the rest, and the backup serves
/// every item without the bucket.
#[actix_web::test]
async fn backup_with_s3_blobs_killed_midway_then_rerun_is_whole() {
    use crate::process::{download, free_port, spawn_with, upload, wait_ready};
    let s3 = crate::s3_engine::shared().config();
    let env = crate::migrate::s3_env(&s3);
    let dir = tempfile::tempdir().unwrap();
    let proc = spawn_with(dir.path(), free_port(), true, &env);
    wait_ready(&proc.base).await;
    let mut items = Vec::new();
    for i in 0..40u64 {
        let bytes = pseudo_random(1_000_000 + usize::try_from(i).unwrap(), 4000 + i);
        items.push((upload(&proc.base, ALICE, bytes.clone()).await, bytes));
    }
    let backups = tempfile::tempdir().unwrap();
    let target = backups.path().join("backup");
    let mut child = backup_command(
        dir.path(),
        &[],
        &["--include-s3-blobs".as_ref(), target.as_os_str()],
    )
    .spawn()
    .unwrap();
    let partial = backups
        .path()
        .join(format!(".backup.partial-{}", child.id()));
    let deadline = Instant::now() + Duration::from_secs(60);
    while blob_file_count(&partial) < 5 {
        assert!(Instant::now() < deadline, "the backup fetched nothing");
        assert!(
            child.try_wait().unwrap().is_none(),
            "the backup ended before it was killed"
        );
        std::thread::sleep(Duration::from_millis(5));
    }
    child.kill().unwrap();
    child.wait().unwrap();
    let kept = blob_file_count(&partial);
    assert!(
        kept < items.len(),
        "killed too late: all {kept} blobs fetched"
    );
    assert!(!target.exists(), "a killed backup left DIR");

    let stdout = backup_ok(
        dir.path(),
        &[],
        &["--include-s3-blobs".as_ref(), target.as_os_str()],
    )
    .await;
    assert!(
        !stdout.contains(" 0 kept from an interrupted run"),
        "the rerun fetched everything again: {stdout}"
    );
    assert!(!partial.exists(), "the killed run's partial backup left");
    assert_eq!(blob_file_count(&target), items.len());
    drop(proc);

    let restored = spawn_with(&target, free_port(), true, &[]);
    wait_ready(&restored.base).await;
    for (id, bytes) in &items {
        let (status, body) = download(&restored.base, ALICE, id).await;
        assert_eq!(status, 200, "{id}");
        assert!(body == *bytes, "{id} came back different");
    }
}
