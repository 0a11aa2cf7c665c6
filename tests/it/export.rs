//! `mxmedia export synapse`: local media written in Synapse's media store layout, with SQL for
//! `local_media_repository` that a real SQLite and a real PostgreSQL load (twice, changing
//! nothing the second time), from a running server and from a stopped data dir.

use std::{
    os::unix::fs::MetadataExt as _,
    path::{Path, PathBuf},
    process::{Command, Output, Stdio},
    time::{Duration, Instant},
};

use actix_web::http::Method;
use sha2::{Digest, Sha256};

use crate::{
    common::{ALICE, TestServer, pseudo_random},
    import::{Local, SCHEMA, Synapse, count, import, stderr, stdout},
    process::BIN,
};

const PHOTO: &[u8] = include_bytes!("../fixtures/photo_640x480.jpg");
/// A name with a quote, a backslash, a double quote and non-ASCII letters.
const TRICKY_NAME: &str = "l'été \\ \"☃\".txt";

/// Runs `mxmedia export synapse` on `data_dir`.
fn export(data_dir: &Path, media_store: &Path, sql: &Path, extra: &[&str]) -> Output {
    Command::new(BIN)
        .env_clear()
        .env("MXMEDIA_DATA_DIR", data_dir)
        .env("MXMEDIA_SERVER_NAME", "localhost")
        .env("MXMEDIA_STORE__INLINE_BLOB_MAX", "4KiB")
        .args(["export", "synapse", "--media-store"])
        .arg(media_store)
        .arg("--sql")
        .arg(sql)
        .args(extra)
        .stdin(Stdio::null())
        .output()
        .unwrap()
}

/// Where Synapse keeps the file of local media `id`.
fn local_content(store: &Path, id: &str) -> PathBuf {
    store
        .join("local_content")
        .join(&id[..2])
        .join(&id[2..4])
        .join(&id[4..])
}

fn sha256(bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(bytes))
}

/// One `local_media_repository` row as SQLite gives it back.
#[derive(Debug, PartialEq)]
struct Row {
    media_type: String,
    media_length: i64,
    upload_name: Option<String>,
    user_id: String,
    quarantined_by: Option<String>,
    url_cache: Option<String>,
    safe_from_quarantine: i64,
    authenticated: i64,
    sha256: String,
}

fn sqlite_row(db: &rusqlite::Connection, id: &str) -> Row {
    db.query_row(
        "SELECT media_type, media_length, upload_name, user_id, quarantined_by, url_cache,
                safe_from_quarantine, authenticated, sha256, created_ts, last_access_ts
         FROM local_media_repository WHERE media_id = ?1",
        [id],
        |r| {
            let created: i64 = r.get(9)?;
            let access: i64 = r.get(10)?;
            assert!(created > 1_700_000_000_000, "created_ts in ms: {created}");
            assert!(access >= created, "last_access_ts set: {access}");
            Ok(Row {
                media_type: r.get(0)?,
                media_length: r.get(1)?,
                upload_name: r.get(2)?,
                user_id: r.get(3)?,
                quarantined_by: r.get(4)?,
                url_cache: r.get(5)?,
                safe_from_quarantine: r.get(6)?,
                authenticated: r.get(7)?,
                sha256: r.get(8)?,
            })
        },
    )
    .unwrap()
}

async fn admin(server: &TestServer, path: &str) {
    let res = server
        .send_as(Method::POST, server.url(path), ALICE, "")
        .await;
    assert_eq!(res.status(), 200, "{path}");
}

/// A running server's local media comes out in Synapse's layout, every file byte for byte, and
/// its SQL loads into Synapse's schema in a real SQLite, twice, with one row per item carrying
/// id, type, length, name (quotes and unicode intact), uploader, quarantine, protection, the
/// authenticated flag and sha256; a pending upload is left out. A second export writes no file
/// again, and what it wrote is what our own importer reads from a Synapse, item for item.
#[actix_web::test]
async fn export_from_running_server_loads_into_sqlite() {
    let server = TestServer::start_with(|c| {
        c.store.inline_blob_max = bytesize::ByteSize::kib(4);
        c.auth.admins = vec!["@alice:localhost".into()];
    })
    .await;
    let large = pseudo_random(300_000, 11);
    let small = b"small text".to_vec();
    let doomed = b"quarantined bytes".to_vec();
    let photo = server.upload(PHOTO, "image/jpeg", Some("photo.jpg")).await;
    let tricky = server.upload(&small, "text/plain", Some(TRICKY_NAME)).await;
    let big = server.upload(&large, "application/pdf", None).await;
    let quarantined = server.upload(&doomed, "text/plain", None).await;
    let protected = server.upload(b"a sticker", "image/png", None).await;
    admin(
        &server,
        &format!("/_synapse/admin/v1/media/quarantine/localhost/{quarantined}"),
    )
    .await;
    admin(
        &server,
        &format!("/_synapse/admin/v1/media/protect/{protected}"),
    )
    .await;
    // An async upload whose bytes never come: nothing to export.
    let res = server
        .send_as(
            Method::POST,
            server.url("/_matrix/media/v1/create"),
            ALICE,
            "",
        )
        .await;
    assert_eq!(res.status(), 200);

    let out_dir = tempfile::tempdir().unwrap();
    let store = out_dir.path().join("media_store");
    let sql = out_dir.path().join("media.sql");
    let out = export(server.dir.path(), &store, &sql, &["--dialect", "sqlite"]);
    let text = format!("{}{}", stdout(&out), stderr(&out));
    assert_eq!(out.status.code(), Some(0), "{text}");
    assert!(text.contains("from the running server"), "{text}");
    assert_eq!(count(&out, "copied:"), 5, "{text}");
    assert_eq!(count(&out, "quarantined:"), 1, "{text}");
    assert_eq!(count(&out, "pending:"), 1, "{text}");
    assert_eq!(count(&out, "failed:"), 0, "{text}");
    for (id, bytes) in [
        (&photo, PHOTO),
        (&tricky, small.as_slice()),
        (&big, large.as_slice()),
        (&quarantined, doomed.as_slice()),
        (&protected, b"a sticker".as_slice()),
    ] {
        let file = std::fs::read(local_content(&store, id)).unwrap();
        assert!(file == bytes, "{id} byte for byte in Synapse's layout");
    }

    let db = rusqlite::Connection::open(out_dir.path().join("homeserver.db")).unwrap();
    db.execute_batch(SCHEMA).unwrap();
    let statements = std::fs::read_to_string(&sql).unwrap();
    db.execute_batch(&statements).unwrap();
    db.execute_batch(&statements)
        .expect("loading the same SQL again is harmless");
    let rows: i64 = db
        .query_row("SELECT count(*) FROM local_media_repository", [], |r| {
            r.get(0)
        })
        .unwrap();
    assert_eq!(rows, 5, "one row per item, the second load added none");
    let alice = "@alice:localhost".to_owned();
    assert_eq!(
        sqlite_row(&db, &tricky),
        Row {
            media_type: "text/plain".into(),
            media_length: 10,
            upload_name: Some(TRICKY_NAME.into()),
            user_id: alice.clone(),
            quarantined_by: None,
            url_cache: None,
            safe_from_quarantine: 0,
            authenticated: 1,
            sha256: sha256(&small),
        }
    );
    let row = sqlite_row(&db, &quarantined);
    assert_eq!(row.quarantined_by.as_deref(), Some("@alice:localhost"));
    assert_eq!(sqlite_row(&db, &protected).safe_from_quarantine, 1);
    let row = sqlite_row(&db, &big);
    assert_eq!(
        (row.media_length, row.upload_name, row.sha256),
        (300_000, None, sha256(&large))
    );

    let again = export(server.dir.path(), &store, &sql, &["--dialect", "sqlite"]);
    let text = format!("{}{}", stdout(&again), stderr(&again));
    assert_eq!(again.status.code(), Some(0), "{text}");
    assert_eq!(count(&again, "copied:"), 0, "nothing written again: {text}");
    assert_eq!(count(&again, "already there:"), 5, "{text}");
    assert_eq!(
        std::fs::read_to_string(&sql).unwrap(),
        statements,
        "the same SQL"
    );

    // Read back as a Synapse media repository by our importer: every item, same bytes.
    let data = tempfile::tempdir().unwrap();
    let back = Command::new(BIN)
        .env_clear()
        .env("MXMEDIA_DATA_DIR", data.path())
        .env("MXMEDIA_SERVER_NAME", "localhost")
        .current_dir(out_dir.path())
        .args(["import", "synapse", "--media-store"])
        .arg(&store)
        .arg("--database")
        .arg(out_dir.path().join("homeserver.db"))
        .output()
        .unwrap();
    let text = format!("{}{}", stdout(&back), stderr(&back));
    assert_eq!(back.status.code(), Some(0), "{text}");
    assert_eq!(count(&back, "imported:"), 4, "{text}");
    assert_eq!(count(&back, "quarantined:"), 1, "{text}");
    assert_eq!(count(&back, "hash mismatch:"), 0, "{text}");
}

/// A PostgreSQL cluster of Debian's `postgresql` package, started on loopback for one test.
struct Postgres {
    _dir: tempfile::TempDir,
    port: u16,
    child: std::process::Child,
    bin: PathBuf,
}

impl Postgres {
    /// `None` (the test says so and passes) where PostgreSQL is not installed.
    fn start() -> Option<Self> {
        let bin = std::fs::read_dir("/usr/lib/postgresql")
            .ok()?
            .flatten()
            .map(|e| e.path().join("bin"))
            .find(|b| b.join("initdb").exists())?;
        let dir = tempfile::tempdir().unwrap();
        // PostgreSQL refuses to run as root: as the package's user, in a dir it owns.
        let as_pg: Vec<String> = if nix::unistd::geteuid().is_root() {
            let user = nix::unistd::User::from_name("postgres").unwrap()?;
            nix::unistd::chown(dir.path(), Some(user.uid), Some(user.gid)).unwrap();
            [
                "setpriv",
                "--reuid=postgres",
                "--regid=postgres",
                "--init-groups",
                "--",
            ]
            .map(String::from)
            .to_vec()
        } else {
            Vec::new()
        };
        let run = |program: &Path| {
            let mut cmd = Command::new(as_pg.first().map_or(program.as_os_str(), |p| p.as_ref()));
            if !as_pg.is_empty() {
                cmd.args(&as_pg[1..]).arg(program);
            }
            cmd
        };
        let data = dir.path().join("data");
        let status = run(&bin.join("initdb"))
            .arg("-D")
            .arg(&data)
            .args(["-U", "synapse", "-A", "trust", "-E", "UTF8", "--locale=C"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .unwrap();
        assert!(status.success(), "initdb");
        let port = crate::process::free_port();
        let child = run(&bin.join("postgres"))
            .arg("-D")
            .arg(&data)
            .args(["-h", "127.0.0.1", "-p", &port.to_string(), "-k"])
            .arg(dir.path())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let pg = Self {
            _dir: dir,
            port,
            child,
            bin,
        };
        let deadline = Instant::now() + Duration::from_secs(30);
        while !Command::new(pg.bin.join("pg_isready"))
            .args(["-q", "-h", "127.0.0.1", "-p", &port.to_string()])
            .status()
            .unwrap()
            .success()
        {
            assert!(Instant::now() < deadline, "PostgreSQL did not come up");
            std::thread::sleep(Duration::from_millis(100));
        }
        Some(pg)
    }

    /// `psql` on the database `postgres` with `args`; its output.
    fn psql(&self, args: &[&str]) -> Output {
        Command::new(self.bin.join("psql"))
            .args([
                "-X",
                "-q",
                "-At",
                "-v",
                "ON_ERROR_STOP=1",
                "-h",
                "127.0.0.1",
            ])
            .args([
                "-p",
                &self.port.to_string(),
                "-U",
                "synapse",
                "-d",
                "postgres",
            ])
            // A client locale that is not UTF-8: the file's own SET must decide.
            .env("PGCLIENTENCODING", "LATIN1")
            .args(args)
            .output()
            .unwrap()
    }
}

impl Drop for Postgres {
    fn drop(&mut self) {
        // SIGINT: a fast shutdown that stops the server's own processes too.
        let _ = Command::new("kill")
            .args(["-INT", &self.child.id().to_string()])
            .status();
        let _ = self.child.wait();
    }
}

/// Synapse's PostgreSQL schema of `local_media_repository` (full schema 72 plus deltas).
const PG_SCHEMA: &str = "CREATE TABLE local_media_repository ( media_id text, media_type text,
  media_length integer, created_ts bigint, upload_name text, user_id text, quarantined_by text,
  url_cache text, last_access_ts bigint, safe_from_quarantine boolean DEFAULT false NOT NULL,
  authenticated boolean DEFAULT false NOT NULL, sha256 text, UNIQUE (media_id) );";

/// From a stopped data dir with `--link`, large files are hard links to the blob files (no
/// bytes copied) and small ones are written; the PostgreSQL SQL loads with psql into Synapse's
/// schema twice (the second load adds nothing), unicode and quoted names intact even when
/// psql's client encoding is Latin-1. An export killed midway and run again ends complete.
#[actix_web::test]
async fn export_from_stopped_data_dir_links_and_loads_into_postgresql() {
    // A stopped data dir, filled the way a move in fills it.
    let s = Synapse::new();
    let mut items = Vec::new();
    for i in 0..60u64 {
        let len = if i % 3 == 0 {
            100
        } else {
            20_000 + usize::try_from(i).unwrap()
        };
        items.push((format!("X{i:03}exportedItemmmmmmm"), pseudo_random(len, i)));
    }
    for (i, (id, bytes)) in items.iter().enumerate() {
        s.add_local(Local {
            id,
            user: "@alice:localhost",
            bytes: Some(bytes),
            media_type: "application/octet-stream",
            name: (i == 1).then_some(TRICKY_NAME),
            ..Local::default()
        });
    }
    let data = tempfile::tempdir().unwrap();
    let out = import(&s, data.path(), &[]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));

    let out_dir = tempfile::tempdir_in(data.path().parent().unwrap()).unwrap();
    let store = out_dir.path().join("media_store");
    let sql = out_dir.path().join("media.sql");
    let args = ["--dialect", "postgres", "--link"];
    // Killed once it has written some files, well before the end: no SQL yet.
    let mut child = Command::new(BIN)
        .env_clear()
        .env("MXMEDIA_DATA_DIR", data.path())
        .env("MXMEDIA_SERVER_NAME", "localhost")
        .env("MXMEDIA_STORE__INLINE_BLOB_MAX", "4KiB")
        .args(["export", "synapse", "--media-store"])
        .arg(&store)
        .arg("--sql")
        .arg(&sql)
        .args(args)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    while crate::common::count_files(&store) < 5 && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(1));
    }
    child.kill().unwrap();
    let _ = child.wait();
    assert!(!sql.exists() || crate::common::count_files(&store) >= 60);

    let out = export(data.path(), &store, &sql, &args);
    let text = format!("{}{}", stdout(&out), stderr(&out));
    assert_eq!(out.status.code(), Some(0), "{text}");
    assert!(text.contains("from the stopped data dir"), "{text}");
    assert_eq!(
        count(&out, "copied:") + count(&out, "linked:") + count(&out, "already there:"),
        60,
        "{text}"
    );
    assert_eq!(count(&out, "failed:"), 0, "{text}");
    for (i, (id, bytes)) in items.iter().enumerate() {
        let path = local_content(&store, id);
        assert!(
            std::fs::read(&path).unwrap() == *bytes,
            "{id} byte for byte"
        );
        let nlink = std::fs::metadata(&path).unwrap().nlink();
        if i % 3 == 0 {
            assert_eq!(nlink, 1, "{id}: small, kept in sled, so written");
        } else {
            assert!(nlink >= 2, "{id}: a hard link to its blob file");
        }
    }
    let names: Vec<_> = walk(&store);
    assert!(
        names.iter().all(|n| !n.ends_with(".partial")),
        "no partial file left: {names:?}"
    );

    let Some(pg) = Postgres::start() else {
        eprintln!("PostgreSQL not installed: its part of this test is skipped");
        return;
    };
    let created = pg.psql(&["-c", PG_SCHEMA]);
    assert!(created.status.success(), "{}", stderr(&created));
    let sql_arg = sql.to_str().unwrap();
    for load in 0..2 {
        let loaded = pg.psql(&["-f", sql_arg]);
        assert!(loaded.status.success(), "load {load}: {}", stderr(&loaded));
    }
    let query = pg.psql(&[
        "-c",
        "SET client_encoding = 'UTF8'; SELECT count(*), count(DISTINCT media_id), \
         bool_or(authenticated), bool_or(safe_from_quarantine) FROM local_media_repository",
    ]);
    // Imported from a Synapse as uploaded before its freeze: exported as such again.
    assert_eq!(stdout(&query).trim(), "60|60|f|f", "{}", stderr(&query));
    let query = pg.psql(&[
        "-c",
        &format!(
            "SET client_encoding = 'UTF8'; SELECT upload_name, media_length, sha256 FROM \
             local_media_repository WHERE media_id = '{}'",
            items[1].0
        ),
    ]);
    assert_eq!(
        stdout(&query).trim(),
        format!("{TRICKY_NAME}|{}|{}", items[1].1.len(), sha256(&items[1].1)),
        "{}",
        stderr(&query)
    );
}

fn walk(dir: &Path) -> Vec<String> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir).unwrap().flatten() {
        let path = entry.path();
        if path.is_dir() {
            out.extend(walk(&path));
        } else {
            out.push(path.display().to_string());
        }
    }
    out
}
