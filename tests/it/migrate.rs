//! `mxmedia migrate-store` against a real S3 engine: the binary as an admin runs it, beside a
//! running server taking uploads and downloads, then the switch and a restart, both ways;
//! `kill -9` midway; a source blob whose bytes rotted.

use std::{
    cell::{Cell, RefCell},
    path::Path,
    process::{Command, Output, Stdio},
    rc::Rc,
    time::{Duration, Instant},
};

use mxmedia::{config::S3Config, store::s3::S3Blobs};

use crate::{
    common::{ALICE, pseudo_random},
    process::{BIN, Proc, download, free_port, nix_kill, spawn_with, upload, wait_ready},
    s3_engine,
};

/// The variables that give a process the bucket of `s3`.
pub(crate) fn s3_env(s3: &S3Config) -> Vec<(&'static str, String)> {
    vec![
        ("MXMEDIA_STORE__S3__BUCKET", s3.bucket.clone()),
        (
            "MXMEDIA_STORE__S3__ENDPOINT",
            s3.endpoint.clone().unwrap_or_default(),
        ),
        ("MXMEDIA_STORE__S3__REGION", s3.region.clone()),
        (
            "MXMEDIA_STORE__S3__ACCESS_KEY_ID",
            s3.access_key_id.clone().unwrap_or_default(),
        ),
        (
            "MXMEDIA_STORE__S3__SECRET_ACCESS_KEY",
            s3.secret_access_key.clone().unwrap_or_default(),
        ),
        ("MXMEDIA_STORE__S3__PREFIX", s3.prefix.clone()),
        ("MXMEDIA_STORE__S3__PATH_STYLE", "true".to_owned()),
    ]
}

/// Runs `mxmedia migrate-store ARGS` on `dir` with `env` (the S3 settings), as an admin would.
fn migrate_command(dir: &Path, env: &[(&str, String)], args: &[&str]) -> Command {
    let mut cmd = Command::new(BIN);
    cmd.arg("migrate-store")
        .args(args)
        .env_clear()
        .env("MXMEDIA_DATA_DIR", dir)
        .env("MXMEDIA_STORE__MIN_FREE_SPACE", "0")
        .envs(env.iter().map(|(k, v)| (*k, v.as_str())))
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    cmd
}

struct Ran {
    code: i32,
    stdout: String,
    stderr: String,
}

impl From<Output> for Ran {
    fn from(out: Output) -> Self {
        Self {
            code: out.status.code().unwrap_or(-1),
            stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        }
    }
}

impl Ran {
    /// The number on the summary line starting with `label`.
    fn count(&self, label: &str) -> u64 {
        self.stdout
            .lines()
            .find_map(|l| l.trim().strip_prefix(label))
            .and_then(|rest| rest.split_whitespace().next())
            .and_then(|n| n.parse().ok())
            .unwrap_or_else(|| panic!("no {label:?} in {}", self.stdout))
    }
}

/// Runs the command off the test's thread, so the load on the server goes on meanwhile.
async fn migrate(dir: &Path, env: &[(&str, String)], args: &[&str]) -> Ran {
    let mut cmd = migrate_command(dir, env, args);
    tokio::task::spawn_blocking(move || Ran::from(cmd.output().unwrap()))
        .await
        .unwrap()
}

#[derive(Clone)]
struct Item {
    id: String,
    bytes: Vec<u8>,
}

/// Sizes that land inline in sled (1 KiB), in one file chunk, and over several.
fn size_of(n: u64) -> usize {
    match n % 3 {
        0 => 1024,
        1 => 100 * 1024,
        _ => 1536 * 1024 + usize::try_from(n).unwrap(),
    }
}

async fn upload_items(base: &str, n: u64, seed: u64) -> Vec<Item> {
    let mut items = Vec::new();
    for i in 0..n {
        let bytes = pseudo_random(size_of(i), seed + i);
        let id = upload(base, ALICE, bytes.clone()).await;
        items.push(Item { id, bytes });
    }
    items
}

async fn assert_all_download(base: &str, items: &[Item]) {
    for item in items {
        let (status, body) = download(base, ALICE, &item.id).await;
        assert_eq!(status, 200, "{} on {base}", item.id);
        assert!(body == item.bytes, "{} came back different", item.id);
    }
}

/// Uploads and downloads (each checked byte for byte) against `base` until `stop` is set.
struct Load {
    uploaded: Rc<RefCell<Vec<Item>>>,
    downloads: Rc<Cell<u64>>,
    stop: Rc<Cell<bool>>,
    task: actix_web::rt::task::JoinHandle<()>,
}

impl Load {
    fn start(base: &str, existing: Vec<Item>, seed: u64) -> Self {
        let uploaded = Rc::new(RefCell::new(Vec::new()));
        let downloads = Rc::new(Cell::new(0));
        let stop = Rc::new(Cell::new(false));
        let task = actix_web::rt::spawn({
            let (base, uploaded, downloads, stop) = (
                base.to_owned(),
                uploaded.clone(),
                downloads.clone(),
                stop.clone(),
            );
            async move {
                let mut n = 0u64;
                while !stop.get() {
                    let bytes = pseudo_random(size_of(n), seed + n);
                    let id = upload(&base, ALICE, bytes.clone()).await;
                    uploaded.borrow_mut().push(Item { id, bytes });
                    let item = &existing[usize::try_from(n).unwrap() % existing.len()];
                    let (status, body) = download(&base, ALICE, &item.id).await;
                    assert_eq!(status, 200, "download during the migration");
                    assert!(body == item.bytes, "changed bytes during the migration");
                    downloads.set(downloads.get() + 1);
                    n += 1;
                }
            }
        });
        Self {
            uploaded,
            downloads,
            stop,
            task,
        }
    }

    async fn finish(self) -> (Vec<Item>, u64) {
        self.stop.set(true);
        self.task.await.unwrap();
        (self.uploaded.take(), self.downloads.get())
    }
}

/// The blobs in the bucket under the test's prefix.
fn objects(s3: &S3Config) -> Vec<String> {
    let blobs = S3Blobs::new(s3).unwrap();
    blobs.list_all().unwrap()
}

fn file_blobs(dir: &Path) -> Vec<String> {
    let Ok(shards) = std::fs::read_dir(dir.join("blobs")) else {
        return Vec::new();
    };
    shards
        .flat_map(|s| std::fs::read_dir(s.unwrap().path()).unwrap())
        .map(|f| f.unwrap().file_name().to_string_lossy().into_owned())
        .collect()
}

fn sha256_hex(bytes: &[u8]) -> String {
    use sha2::Digest as _;
    hex::encode(sha2::Sha256::digest(bytes))
}

/// A server on local disk moves to S3 while it takes uploads and serves downloads: after two
/// runs, the switch and a restart, every item downloads byte for byte, those uploaded after
/// the last run too (read from the old directory until the next run copies them); the old
/// copies go only with `--remove-source`, which is refused while the server still reads them.
#[actix_web::test]
async fn migrate_fs_to_s3_under_load_then_switch() {
    let s3 = s3_engine::shared().config();
    let env = s3_env(&s3);
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let proc = spawn_with(dir.path(), port, true, &[]);
    wait_ready(&proc.base).await;
    let mut items = upload_items(&proc.base, 12, 100).await;

    let load = Load::start(&proc.base, items.clone(), 1000);
    let first = migrate(dir.path(), &env, &["--to", "s3"]).await;
    let (during, downloads) = load.finish().await;
    assert_eq!(first.code, 0, "{}\n{}", first.stdout, first.stderr);
    assert!(downloads > 0 && !during.is_empty(), "the load ran");
    assert!(first.stdout.contains("reads from fs"), "{}", first.stdout);
    items.extend(during);

    // Run again right before switching: what the load uploaded after the first run's last
    // pass is copied now.
    let second = migrate(dir.path(), &env, &["--to", "s3"]).await;
    assert_eq!(second.code, 0, "{}\n{}", second.stdout, second.stderr);
    let file_items: Vec<&Item> = items.iter().filter(|i| i.bytes.len() > 4096).collect();
    for item in &file_items {
        let sha = sha256_hex(&item.bytes);
        assert!(objects(&s3).contains(&sha), "{} not in the bucket", item.id);
    }
    let refused = migrate(dir.path(), &env, &["--to", "s3", "--remove-source"]).await;
    assert_eq!(refused.code, 2, "{}", refused.stderr);
    assert!(
        refused.stderr.contains("still reads from fs"),
        "{}",
        refused.stderr
    );
    assert_eq!(file_blobs(dir.path()).len(), file_items.len());

    // Uploaded between the last run and the restart: only on local disk.
    let late = upload_items(&proc.base, 4, 5000).await;
    drop(proc);
    let proc = spawn_with(dir.path(), port, true, &env);
    wait_ready(&proc.base).await;
    items.extend(late.clone());
    assert_all_download(&proc.base, &items).await;

    let after = migrate(dir.path(), &env, &["--to", "s3"]).await;
    assert_eq!(after.code, 0, "{}\n{}", after.stdout, after.stderr);
    assert!(after.stdout.contains("reads from s3"), "{}", after.stdout);
    let late_files = u64::try_from(late.iter().filter(|i| i.bytes.len() > 4096).count()).unwrap();
    assert_eq!(after.count("copied"), late_files, "{}", after.stdout);

    let removed = migrate(dir.path(), &env, &["--to", "s3", "--remove-source"]).await;
    assert_eq!(removed.code, 0, "{}\n{}", removed.stdout, removed.stderr);
    assert!(
        !dir.path().join("blobs").exists(),
        "old blob directory left"
    );
    drop(proc);
    let proc = spawn_with(dir.path(), port, true, &env);
    wait_ready(&proc.base).await;
    assert_all_download(&proc.base, &items).await;
}

/// A server on S3 moves back to local disk while under load; the last run, with the service
/// stopped, copies what came since; restarted without the S3 settings it serves every item
/// from disk, and `--remove-source` then empties the bucket.
#[actix_web::test]
async fn migrate_s3_to_fs_under_load_then_switch_back() {
    let s3 = s3_engine::shared().config();
    let env = s3_env(&s3);
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let proc = spawn_with(dir.path(), port, true, &env);
    wait_ready(&proc.base).await;
    let mut items = upload_items(&proc.base, 12, 200).await;
    assert!(
        file_blobs(dir.path()).is_empty(),
        "blobs went to disk on S3"
    );

    let load = Load::start(&proc.base, items.clone(), 2000);
    let first = migrate(dir.path(), &env, &["--to", "fs"]).await;
    let (during, downloads) = load.finish().await;
    assert_eq!(first.code, 0, "{}\n{}", first.stdout, first.stderr);
    assert!(downloads > 0, "the load ran");
    items.extend(during);
    let late = upload_items(&proc.base, 3, 6000).await;
    items.extend(late);

    drop(proc); // the service stopped for the last run
    let last = migrate(dir.path(), &env, &["--to", "fs"]).await;
    assert_eq!(last.code, 0, "{}\n{}", last.stdout, last.stderr);
    assert!(last.stdout.contains("server stopped"), "{}", last.stdout);

    let proc = spawn_with(dir.path(), port, true, &[]);
    wait_ready(&proc.base).await;
    assert_all_download(&proc.base, &items).await;
    let removed = migrate(dir.path(), &env, &["--to", "fs", "--remove-source"]).await;
    assert_eq!(removed.code, 0, "{}\n{}", removed.stdout, removed.stderr);
    assert!(objects(&s3).is_empty(), "copies left in the bucket");
    assert_all_download(&proc.base, &items).await;
}

/// A migration killed with SIGKILL midway resumes: the rerun skips what the first copied,
/// copies the rest, and the server switched to S3 serves everything.
#[actix_web::test]
async fn migrate_killed_midway_then_rerun_completes() {
    let s3 = s3_engine::shared().config();
    let env = s3_env(&s3);
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let proc = spawn_with(dir.path(), port, true, &[]);
    wait_ready(&proc.base).await;
    let mut items = Vec::new();
    for i in 0..40u64 {
        let bytes = pseudo_random(512 * 1024, 300 + i);
        items.push(Item {
            id: upload(&proc.base, ALICE, bytes.clone()).await,
            bytes,
        });
    }

    let mut child = migrate_command(dir.path(), &env, &["--to", "s3"])
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(60);
    while objects(&s3).len() < 3 {
        assert!(Instant::now() < deadline, "the migration copied nothing");
        std::thread::sleep(Duration::from_millis(10));
    }
    assert!(
        child.try_wait().unwrap().is_none(),
        "finished before the kill"
    );
    nix_kill(&child, "KILL");
    child.wait().unwrap();
    let copied_before = objects(&s3).len();
    assert!(copied_before < 40, "everything was copied before the kill");

    let rerun = migrate(dir.path(), &env, &["--to", "s3"]).await;
    assert_eq!(rerun.code, 0, "{}\n{}", rerun.stdout, rerun.stderr);
    assert!(rerun.count("already there:") >= u64::try_from(copied_before).unwrap() - 1);
    assert_eq!(rerun.count("already there:") + rerun.count("copied"), 40);
    assert_eq!(objects(&s3).len(), 40);
    // Nothing of the killed run is left in the staging area once a run has finished.
    assert!(std::fs::read_dir(dir.path().join("tmp")).unwrap().all(|e| {
        !e.unwrap()
            .file_name()
            .to_string_lossy()
            .starts_with("migrate-")
    }),);

    drop(proc);
    let proc: Proc = spawn_with(dir.path(), port, true, &env);
    wait_ready(&proc.base).await;
    let removed = migrate(dir.path(), &env, &["--to", "s3", "--remove-source"]).await;
    assert_eq!(removed.code, 0, "{}", removed.stderr);
    assert_all_download(&proc.base, &items).await;
}

/// A blob file whose bytes rotted on disk is named as corrupt and not copied; the others are,
/// and the command exits non-zero.
#[actix_web::test]
async fn corrupt_source_blob_is_reported_not_copied() {
    let s3 = s3_engine::shared().config();
    let env = s3_env(&s3);
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let proc = spawn_with(dir.path(), port, true, &[]);
    wait_ready(&proc.base).await;
    let mut shas = Vec::new();
    for i in 0..5u64 {
        let bytes = pseudo_random(200 * 1024, 400 + i);
        upload(&proc.base, ALICE, bytes.clone()).await;
        shas.push(sha256_hex(&bytes));
    }
    let rotten = &shas[2];
    let path = dir.path().join("blobs").join(&rotten[..2]).join(rotten);
    let mut bytes = std::fs::read(&path).unwrap();
    bytes[1000] ^= 0x40;
    std::fs::write(&path, bytes).unwrap();

    let ran = migrate(dir.path(), &env, &["--to", "s3"]).await;
    assert_eq!(ran.code, 1, "{}\n{}", ran.stdout, ran.stderr);
    assert_eq!(ran.count("failed:"), 1, "{}", ran.stdout);
    assert_eq!(ran.count("copied"), 4, "{}", ran.stdout);
    assert!(
        ran.stderr.contains(rotten.as_str()) && ran.stderr.contains("corrupt"),
        "{}",
        ran.stderr
    );
    let in_bucket = objects(&s3);
    assert!(!in_bucket.contains(rotten), "the corrupt blob was copied");
    assert_eq!(in_bucket.len(), 4);
    drop(proc);
}
