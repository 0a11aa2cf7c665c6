//! The `mxmedia` binary as an admin runs it: start-up, restarts, `kill -9`, `check-config`.

use std::{
    net::TcpListener,
    path::Path,
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use crate::common::{ALICE, client, pseudo_random};

pub(crate) const BIN: &str = env!("CARGO_BIN_EXE_mxmedia");

pub struct Proc {
    pub child: Child,
    pub base: String,
}

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

pub(crate) fn spawn(dir: &Path, port: u16, static_tokens: bool) -> Proc {
    spawn_with(dir, port, static_tokens, &[])
}

/// Starts the binary with extra environment variables.
pub fn spawn_with(dir: &Path, port: u16, static_tokens: bool, env: &[(&str, String)]) -> Proc {
    let mut cmd = Command::new(BIN);
    cmd.env_clear()
        .env("MXMEDIA_DATA_DIR", dir)
        .env("MXMEDIA_LISTEN", format!("127.0.0.1:{port}"))
        .env("MXMEDIA_STORE__MIN_FREE_SPACE", "0")
        .env("MXMEDIA_LOG", "warn")
        .stdout(Stdio::piped())
        .stderr(Stdio::null());
    if static_tokens {
        cmd.env(
            "MXMEDIA_AUTH__STATIC_TOKENS",
            format!("{{{ALICE}=\"@alice:localhost\"}}"),
        );
    }
    cmd.envs(env.iter().map(|(k, v)| (*k, v.as_str())));
    let child = cmd.spawn().unwrap();
    Proc {
        child,
        base: format!("http://127.0.0.1:{port}"),
    }
}

pub async fn wait_ready(base: &str) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while Instant::now() < deadline {
        if let Ok(res) = client().get(format!("{base}/_mxmedia/health")).send().await
            && res.status() == 200
        {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("server at {base} did not come up");
}

/// Stops the server with SIGTERM, checks it exits 0, and returns what it printed on stdout.
fn stop_gracefully(proc: &mut Proc) -> String {
    use std::io::Read as _;

    nix_kill(&proc.child, "TERM");
    let status = proc.child.wait().unwrap();
    assert!(status.success(), "graceful stop exits 0: {status:?}");
    let mut out = String::new();
    proc.child
        .stdout
        .take()
        .unwrap()
        .read_to_string(&mut out)
        .unwrap();
    out
}

pub async fn upload(base: &str, token: &str, bytes: Vec<u8>) -> String {
    let mut res = client()
        .post(format!("{base}/_matrix/media/v3/upload"))
        .bearer_auth(token)
        .send_body(bytes)
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    let body: serde_json::Value = res.json().await.unwrap();
    body["content_uri"]
        .as_str()
        .unwrap()
        .rsplit('/')
        .next()
        .unwrap()
        .to_owned()
}

pub(crate) async fn download(base: &str, token: &str, id: &str) -> (u16, Vec<u8>) {
    let mut res = client()
        .get(format!(
            "{base}/_matrix/client/v1/media/download/localhost/{id}"
        ))
        .bearer_auth(token)
        .send()
        .await
        .unwrap();
    (
        res.status().as_u16(),
        res.body().limit(64 << 20).await.unwrap().to_vec(),
    )
}

/// A 200 on upload means the media survives `kill -9` right after, small and large alike.
#[actix_web::test]
async fn upload_survives_kill_9() {
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let mut proc = spawn(dir.path(), port, true);
    wait_ready(&proc.base).await;
    let small = pseudo_random(10_000, 11);
    let large = pseudo_random(5 * 1024 * 1024, 12);
    let small_id = upload(&proc.base, ALICE, small.clone()).await;
    let large_id = upload(&proc.base, ALICE, large.clone()).await;
    proc.child.kill().unwrap(); // SIGKILL
    proc.child.wait().unwrap();

    let mut proc = spawn(dir.path(), port, true);
    wait_ready(&proc.base).await;
    assert_eq!(download(&proc.base, ALICE, &small_id).await, (200, small));
    assert_eq!(download(&proc.base, ALICE, &large_id).await, (200, large));
    proc.child.kill().unwrap();
    proc.child.wait().unwrap();
}

/// With no auth configured a dev token is printed, kept, and the same after a restart; a
/// graceful stop (SIGTERM) exits 0; leftovers of interrupted uploads are cleaned at start.
#[actix_web::test]
async fn dev_token_and_restart() {
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let mut proc = spawn(dir.path(), port, false);
    wait_ready(&proc.base).await;
    let token = std::fs::read_to_string(dir.path().join("dev-token")).unwrap();
    let id = upload(&proc.base, &token, b"kept across restarts".to_vec()).await;
    let out = stop_gracefully(&mut proc);
    assert!(out.contains(&token), "token printed at start");
    assert!(out.contains("curl"), "with a ready-to-paste upload command");

    std::fs::write(dir.path().join("tmp/leftover-upload"), b"partial").unwrap();
    let mut proc = spawn(dir.path(), port, false);
    wait_ready(&proc.base).await;
    assert_eq!(
        std::fs::read_to_string(dir.path().join("dev-token")).unwrap(),
        token
    );
    assert_eq!(
        download(&proc.base, &token, &id).await,
        (200, b"kept across restarts".to_vec())
    );
    assert!(!dir.path().join("tmp/leftover-upload").exists());
    proc.child.kill().unwrap();
    proc.child.wait().unwrap();
}

pub(crate) fn nix_kill(child: &Child, signal: &str) {
    let status = Command::new("kill")
        .arg(format!("-{signal}"))
        .arg(child.id().to_string())
        .status()
        .unwrap();
    assert!(status.success());
}

/// `check-config` validates and masks secrets; a bad value names the variable and exits 1.
#[test]
fn check_config_and_version() {
    let out = Command::new(BIN)
        .arg("check-config")
        .env_clear()
        .env(
            "MXMEDIA_AUTH__STATIC_TOKENS",
            "{topsecret=\"@bot:localhost\"}",
        )
        .env("MXMEDIA_SERVER_NAME", "example.org")
        .output()
        .unwrap();
    assert!(out.status.success());
    let stdout = String::from_utf8(out.stdout).unwrap();
    assert!(stdout.contains("example.org") && stdout.contains("@bot:localhost"));
    assert!(!stdout.contains("topsecret"));

    let out = Command::new(BIN)
        .arg("check-config")
        .env_clear()
        .env("MXMEDIA_MEDIA__MAX_UPLOAD_SIZE", "huge")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8(out.stderr).unwrap();
    assert!(stderr.contains("MAX_UPLOAD_SIZE"), "{stderr}");

    let out = Command::new(BIN).arg("--version").output().unwrap();
    assert!(
        String::from_utf8(out.stdout)
            .unwrap()
            .contains(env!("CARGO_PKG_VERSION"))
    );
}

/// Thumbnails are stored: after a restart the same thumbnail is served without rendering.
#[actix_web::test]
async fn thumbnails_survive_restart() {
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let photo = std::fs::read(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/fixtures/photo_640x480.jpg"
    ))
    .unwrap();
    let fetch = |base: String, id: String| async move {
        let url = format!(
            "{base}/_matrix/client/v1/media/thumbnail/localhost/{id}?width=96&height=96&method=crop"
        );
        let mut res = client().get(url).bearer_auth(ALICE).send().await.unwrap();
        assert_eq!(res.status(), 200);
        res.body().await.unwrap().to_vec()
    };
    let generated = |base: String| async move {
        let mut res = client()
            .get(format!("{base}/_mxmedia/health"))
            .send()
            .await
            .unwrap();
        res.json::<serde_json::Value>().await.unwrap()["thumbnails_generated"]
            .as_u64()
            .unwrap()
    };
    let mut proc = spawn(dir.path(), port, true);
    wait_ready(&proc.base).await;
    let id = upload(&proc.base, ALICE, photo).await;
    let first = fetch(proc.base.clone(), id.clone()).await;
    assert_eq!(generated(proc.base.clone()).await, 1);
    nix_kill(&proc.child, "TERM");
    proc.child.wait().unwrap();

    let mut proc = spawn(dir.path(), port, true);
    wait_ready(&proc.base).await;
    assert_eq!(fetch(proc.base.clone(), id).await, first);
    assert_eq!(
        generated(proc.base.clone()).await,
        0,
        "served from the store"
    );
    proc.child.kill().unwrap();
    proc.child.wait().unwrap();
}

/// `generate-key` writes a private key file once and prints the line the homeserver must add;
/// `check-config` then tells whether the homeserver publishes that key.
#[actix_web::test]
async fn generate_key_and_check_it_is_published() {
    use std::os::unix::fs::PermissionsExt as _;

    use actix_web::{App, HttpResponse, HttpServer, web};
    use mxmedia_proto::{ServerName, SigningKey, build_server_keys_response};

    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("media.key");
    let out = Command::new(BIN)
        .args(["generate-key", path.to_str().unwrap()])
        .env_clear()
        .output()
        .unwrap();
    assert!(out.status.success());
    let line = std::fs::read_to_string(&path).unwrap();
    assert!(line.starts_with("ed25519 mxmedia_"), "{line}");
    assert!(String::from_utf8(out.stdout).unwrap().contains(line.trim()));
    let mode = std::fs::metadata(&path).unwrap().permissions().mode();
    assert_eq!(mode & 0o777, 0o600, "only the owner may read the key");
    let again = Command::new(BIN)
        .args(["generate-key", path.to_str().unwrap()])
        .env_clear()
        .output()
        .unwrap();
    assert!(!again.status.success(), "an existing key is never replaced");
    assert_eq!(std::fs::read_to_string(&path).unwrap(), line);

    // A homeserver publishing its own key, and then ours as well.
    let ours = SigningKey::from_key_file(&line, None).unwrap();
    let its_own = SigningKey::generate("a_hs").unwrap();
    let published = web::Data::new(std::sync::Mutex::new(vec![its_own.clone()]));
    let served = published.clone();
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let server = HttpServer::new(move || {
        App::new().app_data(served.clone()).route(
            "/_matrix/key/v2/server",
            web::get().to(
                |keys: web::Data<std::sync::Mutex<Vec<SigningKey>>>| async move {
                    let name: ServerName = "example.org".parse().unwrap();
                    let keys = keys.lock().unwrap().clone();
                    let until = 4_000_000_000_000;
                    HttpResponse::Ok().json(
                        build_server_keys_response(&name, &keys, Default::default(), until)
                            .unwrap(),
                    )
                },
            ),
        )
    })
    .workers(1)
    .disable_signals()
    .listen(listener)
    .unwrap()
    .run();
    let handle = server.handle();
    actix_web::rt::spawn(server);

    let check = |path: std::path::PathBuf, url: String| {
        tokio::task::spawn_blocking(move || {
            let out = Command::new(BIN)
                .arg("check-config")
                .env_clear()
                .env("MXMEDIA_SERVER_NAME", "example.org")
                .env("MXMEDIA_AUTH__HOMESERVER_URL", url)
                .env("MXMEDIA_FEDERATION__SIGNING_KEY_PATH", path)
                .output()
                .unwrap();
            assert!(out.status.success());
            String::from_utf8(out.stderr).unwrap()
        })
    };
    let stderr = check(path.clone(), url.clone()).await.unwrap();
    assert!(
        stderr.contains("warning: the homeserver publishes only [ed25519:a_hs]"),
        "{stderr}"
    );
    published.lock().unwrap().push(ours);
    let stderr = check(path.clone(), url.clone()).await.unwrap();
    assert!(
        stderr.contains("the homeserver publishes this key"),
        "{stderr}"
    );
    handle.stop(false).await;
}

/// Following the README in one shell works: an exported `MXMEDIA_TOKEN` (which the README
/// once suggested) no longer stops the next start, and the printed command now uses
/// `DEV_TOKEN`, outside the prefix. A mistyped setting still stops `serve`, naming it, and
/// `check-config` names the stray variable and exits 1.
#[actix_web::test]
async fn stray_mxmedia_variable_does_not_stop_serve() {
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let mut proc = spawn_with(
        dir.path(),
        port,
        false,
        &[("MXMEDIA_TOKEN", "mxm_left_from_the_readme".into())],
    );
    wait_ready(&proc.base).await;
    let token = std::fs::read_to_string(dir.path().join("dev-token")).unwrap();
    let out = stop_gracefully(&mut proc);
    assert!(out.contains(&format!("export DEV_TOKEN={token}")), "{out}");
    assert!(out.contains("Bearer $DEV_TOKEN"), "{out}");
    assert!(!out.contains("export MXMEDIA_"), "{out}");

    let out = Command::new(BIN)
        .env_clear()
        .env("MXMEDIA_DATA_DIR", dir.path())
        .env("MXMEDIA_LISTEN", format!("127.0.0.1:{port}"))
        .env("MXMEDIA_SERVERNAME", "example.org")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8(out.stderr).unwrap();
    assert!(
        stderr.contains("MXMEDIA_SERVERNAME") && stderr.contains("MXMEDIA_SERVER_NAME"),
        "{stderr}"
    );

    let out = Command::new(BIN)
        .arg("check-config")
        .env_clear()
        .env("MXMEDIA_TOKEN", "mxm_left_from_the_readme")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8(out.stderr).unwrap();
    assert!(stderr.contains("MXMEDIA_TOKEN"), "{stderr}");
}

/// A tiny xorshift: the kill loops' random moments, reproducible from the printed seed.
struct Rng(u64);

impl Rng {
    fn from_time() -> Self {
        let seed = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_nanos() as u64
            | 1;
        eprintln!("kill loop seed {seed}");
        Self(seed)
    }

    fn below(&mut self, n: u64) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0 % n
    }
}

/// What the test knows of one upload.
struct Item {
    id: String,
    bytes: Vec<u8>,
    /// A deletion was sent and not (yet) seen to have taken effect.
    delete_sent: bool,
    /// Seen deleted: acknowledged, or 404 after a restart. Must stay so.
    deleted: bool,
}

/// Every id answers its own bytes or 404, never 500; what was seen deleted stays deleted and
/// what was acknowledged and never deleted is served.
async fn check_items(base: &str, items: &mut [Item], round: usize) {
    for item in items.iter_mut() {
        let (status, body) = download(base, ALICE, &item.id).await;
        assert!(
            status == 200 || status == 404,
            "round {round}: {} answered {status}",
            item.id
        );
        if item.deleted {
            assert_eq!(status, 404, "round {round}: {} came back", item.id);
        } else if !item.delete_sent {
            assert_eq!(status, 200, "round {round}: acknowledged {} lost", item.id);
        }
        if status == 200 {
            assert!(
                body == item.bytes,
                "round {round}: {} has other bytes",
                item.id
            );
            // A deletion that was not durable is simply undone.
            item.delete_sent = false;
        } else {
            item.deleted = true;
        }
    }
}

/// Blob file names (sha256) under a data dir's `blobs/`.
fn blob_names(data_dir: &Path) -> std::collections::BTreeSet<String> {
    let mut out = std::collections::BTreeSet::new();
    let Ok(shards) = std::fs::read_dir(data_dir.join("blobs")) else {
        return out;
    };
    for shard in shards {
        for file in std::fs::read_dir(shard.unwrap().path()).unwrap() {
            out.insert(file.unwrap().file_name().to_string_lossy().into_owned());
        }
    }
    out
}

/// Uploads (and with `deletes`, admin deletions) go on while the server is killed with
/// SIGKILL at a random moment, round after round; see `check_items` for what each restart must
/// show. At the end no blob file is left that the database does not point at: the data dir
/// holds exactly the files a backup of it (which copies what the database references) holds.
async fn kill_9_loop(deletes: bool, rounds: usize) {
    use std::{cell::RefCell, rc::Rc};

    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let env = [("MXMEDIA_AUTH__ADMINS", "[\"@alice:localhost\"]".to_owned())];
    let items = Rc::new(RefCell::new(Vec::<Item>::new()));
    let mut rng = Rng::from_time();
    let mut seed = 0u64;
    let mut next_bytes = move || {
        seed += 1;
        // Half inline in sled, half blob files.
        let len = if seed.is_multiple_of(2) {
            4_000
        } else {
            300 * 1024
        };
        pseudo_random(len, 7_000 + seed)
    };
    for round in 0..rounds {
        let mut proc = spawn_with(dir.path(), port, true, &env);
        wait_ready(&proc.base).await;
        let mut known = std::mem::take(&mut *items.borrow_mut());
        check_items(&proc.base, &mut known, round).await;
        *items.borrow_mut() = known;
        let killed = Rc::new(std::cell::Cell::new(false));
        // Something to delete in this round.
        for _ in 0..6 {
            let bytes = next_bytes();
            let id = upload(&proc.base, ALICE, bytes.clone()).await;
            items.borrow_mut().push(Item {
                id,
                bytes,
                delete_sent: false,
                deleted: false,
            });
        }
        let mut workers = Vec::new();
        for _ in 0..3 {
            let (base, batch) = (
                proc.base.clone(),
                (0..40).map(|_| next_bytes()).collect::<Vec<_>>(),
            );
            let items = items.clone();
            workers.push(actix_web::rt::spawn(async move {
                for bytes in batch {
                    let Ok(mut res) = client()
                        .post(format!("{base}/_matrix/media/v3/upload"))
                        .bearer_auth(ALICE)
                        .send_body(bytes.clone())
                        .await
                    else {
                        return;
                    };
                    let status = res.status();
                    let Ok(body) = res.json::<serde_json::Value>().await else {
                        return;
                    };
                    assert_eq!(status, 200, "{body}");
                    let id = body["content_uri"]
                        .as_str()
                        .unwrap()
                        .rsplit('/')
                        .next()
                        .unwrap();
                    items.borrow_mut().push(Item {
                        id: id.to_owned(),
                        bytes,
                        delete_sent: false,
                        deleted: false,
                    });
                }
            }));
        }
        if deletes {
            for _ in 0..3 {
                let (base, items, killed) = (proc.base.clone(), items.clone(), killed.clone());
                workers.push(actix_web::rt::spawn(async move {
                    while !killed.get() {
                        let next = {
                            let mut items = items.borrow_mut();
                            items
                                .iter_mut()
                                .find(|i| !i.delete_sent && !i.deleted)
                                .map(|i| {
                                    i.delete_sent = true;
                                    i.id.clone()
                                })
                        };
                        let Some(id) = next else {
                            tokio::time::sleep(Duration::from_millis(2)).await;
                            continue;
                        };
                        let Ok(res) = client()
                            .delete(format!("{base}/_mxmedia/admin/v1/media/localhost/{id}"))
                            .bearer_auth(ALICE)
                            .send()
                            .await
                        else {
                            return;
                        };
                        assert_eq!(res.status(), 200);
                        if let Some(item) = items.borrow_mut().iter_mut().find(|i| i.id == id) {
                            item.deleted = true;
                        }
                    }
                }));
            }
        }
        tokio::time::sleep(Duration::from_millis(30 + rng.below(400))).await;
        proc.child.kill().unwrap(); // SIGKILL, wherever the server is
        proc.child.wait().unwrap();
        killed.set(true);
        for worker in workers {
            if let Ok(Err(e)) = tokio::time::timeout(Duration::from_secs(30), worker).await
                && e.is_panic()
            {
                std::panic::resume_unwind(e.into_panic());
            }
        }
    }
    // After a last start (and its sweep), a clean stop.
    let mut proc = spawn_with(dir.path(), port, true, &env);
    wait_ready(&proc.base).await;
    let mut known = std::mem::take(&mut *items.borrow_mut());
    check_items(&proc.base, &mut known, rounds).await;
    *items.borrow_mut() = known;
    nix_kill(&proc.child, "TERM");
    assert!(proc.child.wait().unwrap().success());
    let items = items.borrow();
    assert!(items.len() > 7 * rounds, "uploads went on: {}", items.len());
    if deletes {
        assert!(
            items.iter().filter(|i| i.deleted).count() > 6,
            "deletions went on"
        );
    }

    let backups = tempfile::tempdir().unwrap();
    let copy = backups.path().join("copy");
    let out = Command::new(BIN)
        .env_clear()
        .arg("backup")
        .arg("--data-dir")
        .arg(dir.path())
        .arg(&copy)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        blob_names(dir.path()),
        blob_names(&copy),
        "every blob file left is one the database points at"
    );
}

/// Deletions and uploads under SIGKILL at random moments: no id ever answers 500 (a record
/// whose blob file is gone), acknowledged deletions and uploads stick, no blob file is orphaned.
#[actix_web::test]
async fn deletions_survive_kill_9_loop() {
    kill_9_loop(true, 15).await;
}

/// Uploads under SIGKILL at random moments: every acknowledged upload survives with its bytes,
/// nothing answers 500 or other bytes, and no blob file is left unreferenced.
#[actix_web::test]
async fn uploads_survive_kill_9_loop() {
    kill_9_loop(false, 10).await;
}
