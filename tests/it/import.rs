//! `mxmedia import synapse`: a Synapse-shaped database and media store, generated here, are
//! imported into mxmedia (running or stopped); every item is then served under its old id with
//! its bytes, name and type, and nothing wrong or half-imported ever becomes visible.

use std::{
    path::{Path, PathBuf},
    process::{Command, Output, Stdio},
    time::{Duration, Instant},
};

use sha2::{Digest, Sha256};

use crate::{
    common::{ALICE, TestServer, client, count_files, pseudo_random},
    process::{BIN, free_port, spawn, wait_ready},
};

const PHOTO: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/tests/fixtures/photo_640x480.jpg"
);

/// Synapse's two media tables as its current schema has them (full schema plus deltas).
pub const SCHEMA: &str = "
CREATE TABLE local_media_repository ( media_id TEXT, media_type TEXT, media_length INTEGER,
  created_ts BIGINT, upload_name TEXT, user_id TEXT, quarantined_by TEXT, url_cache TEXT,
  last_access_ts BIGINT, safe_from_quarantine BOOLEAN NOT NULL DEFAULT 0,
  authenticated BOOLEAN DEFAULT FALSE NOT NULL, sha256 TEXT, UNIQUE (media_id) );
CREATE TABLE remote_media_cache ( media_origin TEXT, media_id TEXT, media_type TEXT,
  created_ts BIGINT, upload_name TEXT, media_length INTEGER, filesystem_id TEXT,
  last_access_ts BIGINT, quarantined_by TEXT, authenticated BOOLEAN DEFAULT FALSE NOT NULL,
  sha256 TEXT, UNIQUE (media_origin, media_id) );
CREATE TABLE local_media_repository_thumbnails ( media_id TEXT, thumbnail_width INTEGER,
  thumbnail_height INTEGER, thumbnail_type TEXT, thumbnail_method TEXT, thumbnail_length INTEGER,
  UNIQUE ( media_id, thumbnail_width, thumbnail_height, thumbnail_type, thumbnail_method ) );
CREATE TABLE remote_media_cache_thumbnails ( media_origin TEXT, media_id TEXT,
  thumbnail_width INTEGER, thumbnail_height INTEGER, thumbnail_method TEXT, thumbnail_type TEXT,
  thumbnail_length INTEGER, filesystem_id TEXT,
  UNIQUE ( media_origin, media_id, thumbnail_width, thumbnail_height, thumbnail_type,
           thumbnail_method ) );
";

/// A Synapse media repository on disk: `homeserver.db` and `media_store/`.
pub struct Synapse {
    pub dir: tempfile::TempDir,
    db: rusqlite::Connection,
}

/// One local row; fields left `None` are NULL.
#[derive(Clone, Default)]
pub struct Local<'a> {
    pub id: &'a str,
    pub user: &'a str,
    pub bytes: Option<&'a [u8]>,
    pub media_type: &'a str,
    pub name: Option<&'a str>,
    pub quarantined_by: Option<&'a str>,
    pub url_cache: bool,
    pub authenticated: bool,
    /// Synapse's `safe_from_quarantine`, set by its admin API's `media/protect`.
    pub safe: bool,
    /// Write this sha256 into the row instead of the real one.
    pub wrong_sha256: bool,
    /// Leave the file out of the media store.
    pub no_file: bool,
    /// `last_access_ts` NULL instead of 1700000000000 (created_ts is 1600000000000).
    pub never_accessed: bool,
}

/// A PNG row of alice's: the other fields as `Local::default()`.
fn alice_png<'a>(id: &'a str, bytes: &'a [u8]) -> Local<'a> {
    Local {
        id,
        user: "@alice:localhost",
        bytes: Some(bytes),
        media_type: "image/png",
        ..Local::default()
    }
}

fn sha256(bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(bytes))
}

impl Synapse {
    pub fn new() -> Self {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(dir.path().join("media_store")).unwrap();
        let db = rusqlite::Connection::open(dir.path().join("homeserver.db")).unwrap();
        db.execute_batch("PRAGMA journal_mode = WAL;").unwrap();
        db.execute_batch(SCHEMA).unwrap();
        Self { dir, db }
    }

    pub fn store(&self) -> PathBuf {
        self.dir.path().join("media_store")
    }

    pub fn db_path(&self) -> PathBuf {
        self.dir.path().join("homeserver.db")
    }

    pub fn add_local(&self, row: Local<'_>) {
        let id = row.id;
        if let (Some(bytes), false) = (row.bytes, row.no_file) {
            let path = self
                .store()
                .join("local_content")
                .join(&id[..2])
                .join(&id[2..4]);
            std::fs::create_dir_all(&path).unwrap();
            std::fs::write(path.join(&id[4..]), bytes).unwrap();
        }
        let sha = row.bytes.map(|b| {
            if row.wrong_sha256 {
                sha256(b"something else")
            } else {
                sha256(b)
            }
        });
        self.db
            .execute(
                "INSERT INTO local_media_repository (media_id, media_type, media_length,
                   created_ts, upload_name, user_id, quarantined_by, url_cache, last_access_ts,
                   authenticated, sha256, safe_from_quarantine)
                 VALUES (?1, ?2, ?3, 1600000000000, ?4, ?5, ?6, ?7, ?11, ?8, ?9, ?10)",
                rusqlite::params![
                    id,
                    row.media_type,
                    row.bytes.map(|b| b.len() as i64),
                    row.name,
                    row.user,
                    row.quarantined_by,
                    row.url_cache.then_some("https://example.org/"),
                    row.authenticated,
                    sha,
                    row.safe,
                    (!row.never_accessed).then_some(1_700_000_000_000_i64),
                ],
            )
            .unwrap();
    }

    /// A thumbnail Synapse made of local media `id`; `bytes: None` leaves its file out.
    pub fn add_local_thumbnail(
        &self,
        id: &str,
        (width, height): (u32, u32),
        content_type: &str,
        method: &str,
        bytes: Option<&[u8]>,
    ) {
        let (top, sub) = content_type.split_once('/').unwrap();
        let dir = self
            .store()
            .join("local_thumbnails")
            .join(&id[..2])
            .join(&id[2..4])
            .join(&id[4..]);
        if let Some(bytes) = bytes {
            std::fs::create_dir_all(&dir).unwrap();
            std::fs::write(
                dir.join(format!("{width}-{height}-{top}-{sub}-{method}")),
                bytes,
            )
            .unwrap();
        }
        self.db
            .execute(
                "INSERT INTO local_media_repository_thumbnails (media_id, thumbnail_width,
                   thumbnail_height, thumbnail_type, thumbnail_method, thumbnail_length)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
                rusqlite::params![
                    id,
                    width,
                    height,
                    content_type,
                    method,
                    bytes.map_or(100, |b| b.len() as i64)
                ],
            )
            .unwrap();
    }

    fn add_remote(&self, origin: &str, id: &str, fs_id: &str, bytes: &[u8], name: &str) {
        let path = self
            .store()
            .join("remote_content")
            .join(origin)
            .join(&fs_id[..2])
            .join(&fs_id[2..4]);
        std::fs::create_dir_all(&path).unwrap();
        std::fs::write(path.join(&fs_id[4..]), bytes).unwrap();
        self.db
            .execute(
                "INSERT INTO remote_media_cache (media_origin, media_id, media_type,
                   created_ts, upload_name, media_length, filesystem_id, last_access_ts,
                   authenticated, sha256)
                 VALUES (?1, ?2, 'image/jpeg', 1600000000000, ?3, ?4, ?5, 1700000000000, 1, ?6)",
                rusqlite::params![origin, id, name, bytes.len() as i64, fs_id, sha256(bytes)],
            )
            .unwrap();
    }
}

/// Runs `mxmedia import synapse` on `data_dir`; `extra` arguments after the usual ones.
pub fn import(synapse: &Synapse, data_dir: &Path, extra: &[&str]) -> Output {
    Command::new(BIN)
        .env_clear()
        .env("MXMEDIA_DATA_DIR", data_dir)
        .env("MXMEDIA_SERVER_NAME", "localhost")
        .env("MXMEDIA_STORE__INLINE_BLOB_MAX", "4KiB")
        .current_dir(synapse.dir.path())
        .args(["import", "synapse", "--media-store"])
        .arg(synapse.store())
        .arg("--database")
        .arg(synapse.db_path())
        .args(extra)
        .stdin(Stdio::null())
        .output()
        .unwrap()
}

pub fn stdout(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

pub fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// The number after `label` in the summary.
pub fn count(out: &Output, label: &str) -> u64 {
    let text = stdout(out);
    let line = text
        .lines()
        .find(|l| l.trim_start().starts_with(label))
        .unwrap_or_else(|| panic!("no {label:?} in the summary:\n{text}"));
    line.trim_start()
        .trim_start_matches(label)
        .split_whitespace()
        .next()
        .unwrap()
        .parse()
        .unwrap()
}

pub async fn get(
    base: &str,
    path: &str,
    token: Option<&str>,
) -> (u16, Vec<u8>, Option<String>, Option<String>) {
    let mut req = client().get(format!("{base}{path}"));
    if let Some(token) = token {
        req = req.bearer_auth(token);
    }
    let mut res = req.send().await.unwrap();
    let header = |name: &str| {
        res.headers()
            .get(name)
            .map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned())
    };
    let (ct, cd) = (header("content-type"), header("content-disposition"));
    let body = res.body().limit(64 << 20).await.unwrap().to_vec();
    (res.status().as_u16(), body, ct, cd)
}

pub async fn download(
    base: &str,
    server: &str,
    id: &str,
) -> (u16, Vec<u8>, Option<String>, Option<String>) {
    let path = format!("/_matrix/client/v1/media/download/{server}/{id}");
    get(base, &path, Some(ALICE)).await
}

/// A Synapse media repository imported into a running mxmedia is served item for item: a
/// JPEG (with thumbnails), a unicode file name, a file over the inline threshold, remote
/// media cached from another server, duplicates stored once; quarantined media answers 404;
/// pending uploads, URL previews, missing files and hash mismatches are not imported and are
/// listed; a second run imports nothing again but does import what was uploaded in between.
#[actix_web::test]
async fn import_into_running_server() {
    let server = TestServer::start_with(|c| {
        c.store.inline_blob_max = bytesize::ByteSize::kib(4);
    })
    .await;
    let photo = std::fs::read(PHOTO).unwrap();
    let large = pseudo_random(300_000, 7);
    let small = b"tiny text".to_vec();
    let s = Synapse::new();
    let alice = "@alice:localhost";
    s.add_local(Local {
        id: "AAAAphotoJPEGaaaaaaaaaaa",
        user: alice,
        bytes: Some(&photo),
        media_type: "image/jpeg",
        name: Some("photo.jpg"),
        ..Local::default()
    });
    s.add_local(Local {
        id: "BBBBunicodeNameeeeeeeeee",
        user: alice,
        bytes: Some(&small),
        media_type: "text/plain",
        name: Some("résumé ☃.txt"),
        ..Local::default()
    });
    s.add_local(Local {
        id: "CCCClargeFileeeeeeeeeeee",
        user: alice,
        bytes: Some(&large),
        media_type: "application/octet-stream",
        name: Some("large.bin"),
        ..Local::default()
    });
    // The same bytes again: one blob for both.
    s.add_local(Local {
        id: "DDDDsameBytesAsLargeeeee",
        user: alice,
        bytes: Some(&large),
        media_type: "application/octet-stream",
        ..Local::default()
    });
    s.add_local(Local {
        id: "EEEEquarantinedddddddddd",
        user: alice,
        bytes: Some(&small),
        media_type: "text/plain",
        quarantined_by: Some("@admin:localhost"),
        ..Local::default()
    });
    s.add_local(Local {
        id: "FFFFpendingUploadddddddd",
        user: alice,
        media_type: "",
        ..Local::default()
    });
    s.add_local(Local {
        id: "GGGGurlPreviewwwwwwwwwww",
        user: alice,
        bytes: Some(&small),
        media_type: "text/html",
        url_cache: true,
        ..Local::default()
    });
    s.add_local(Local {
        id: "HHHHmissingFileeeeeeeeee",
        user: alice,
        bytes: Some(&small),
        media_type: "text/plain",
        no_file: true,
        ..Local::default()
    });
    s.add_local(Local {
        id: "IIIIhashMismatchhhhhhhhh",
        user: alice,
        bytes: Some(&large[..50_000]),
        media_type: "text/plain",
        wrong_sha256: true,
        ..Local::default()
    });
    s.add_remote(
        "remote.example",
        "RemoteMediaId",
        "XyZwfilesystemid",
        &photo,
        "their.jpg",
    );

    let out = import(&s, server.dir.path(), &["--remote"]);
    let text = format!("{}{}", stdout(&out), stderr(&out));
    assert_eq!(out.status.code(), Some(1), "problems make exit 1:\n{text}");
    assert!(text.contains("through the running server"), "{text}");
    assert_eq!(count(&out, "imported:"), 5, "{text}");
    assert_eq!(count(&out, "quarantined:"), 1, "{text}");
    assert_eq!(count(&out, "missing file:"), 1, "{text}");
    assert_eq!(count(&out, "hash mismatch:"), 1, "{text}");
    assert_eq!(count(&out, "failed:"), 0, "{text}");
    let saved = 300_000 + u64::try_from(photo.len()).unwrap();
    assert_eq!(count(&out, "saved by dedupe:"), saved, "{text}");
    assert_eq!(
        server.stored_files(),
        (2, 0),
        "one blob file each for the photo and the large file, nothing left staged"
    );
    assert!(text.contains("1 URL preview"), "{text}");
    assert!(text.contains("1 async upload never completed"), "{text}");
    let problems =
        std::fs::read_to_string(s.dir.path().join("mxmedia-import-problems.txt")).unwrap();
    assert!(
        problems.contains("mxc://localhost/HHHHmissingFileeeeeeeeee\tmissing file"),
        "{problems}"
    );
    assert!(
        problems.contains("mxc://localhost/IIIIhashMismatchhhhhhhhh\tsha256 mismatch"),
        "{problems}"
    );
    assert_eq!(problems.lines().count(), 2, "{problems}");

    let base = &server.base;
    let (status, body, ct, cd) = download(base, "localhost", "AAAAphotoJPEGaaaaaaaaaaa").await;
    assert_eq!((status, ct.as_deref()), (200, Some("image/jpeg")));
    assert!(body == photo, "the photo comes back byte for byte");
    assert!(cd.unwrap().contains("photo.jpg"));
    let (status, body, _, cd) = download(base, "localhost", "BBBBunicodeNameeeeeeeeee").await;
    assert_eq!((status, body.as_slice()), (200, small.as_slice()));
    assert!(
        cd.as_deref()
            .unwrap()
            .contains("r%C3%A9sum%C3%A9%20%E2%98%83.txt"),
        "the unicode name survives: {cd:?}"
    );
    for id in ["CCCClargeFileeeeeeeeeeee", "DDDDsameBytesAsLargeeeee"] {
        let (status, body, _, _) = download(base, "localhost", id).await;
        assert_eq!(status, 200, "{id}");
        assert!(body == large, "{id} byte for byte");
    }
    let (status, body, _, _) = download(base, "remote.example", "RemoteMediaId").await;
    assert_eq!(
        status, 200,
        "remote media is served from the import, not fetched"
    );
    assert!(body == photo);
    let thumb = "/_matrix/client/v1/media/thumbnail/localhost/AAAAphotoJPEGaaaaaaaaaaa\
                 ?width=96&height=96&method=crop";
    let (status, body, ct, _) = get(base, thumb, Some(ALICE)).await;
    assert_eq!((status, ct.as_deref()), (200, Some("image/jpeg")));
    assert!(image::load_from_memory(&body).unwrap().width() <= 96);
    for id in [
        "EEEEquarantinedddddddddd",
        "FFFFpendingUploadddddddd",
        "GGGGurlPreviewwwwwwwwwww",
        "HHHHmissingFileeeeeeeeee",
        "IIIIhashMismatchhhhhhhhh",
    ] {
        let (status, ..) = download(base, "localhost", id).await;
        assert_eq!(status, 404, "{id} is not served");
    }
    // Media uploaded before Synapse's freeze stays on the deprecated unauthenticated
    // endpoint; media Synapse served only with authentication does not.
    let (status, body, ..) = get(
        base,
        "/_matrix/media/v3/download/localhost/BBBBunicodeNameeeeeeeeee",
        None,
    )
    .await;
    assert_eq!((status, body.as_slice()), (200, small.as_slice()));
    let (status, ..) = get(
        base,
        "/_matrix/media/v3/download/remote.example/RemoteMediaId",
        None,
    )
    .await;
    assert_eq!(status, 404, "authenticated media stays frozen");

    // Between the runs, Synapse takes one more upload.
    let later = pseudo_random(20_000, 9);
    s.add_local(Local {
        id: "JJJJuploadedBetweenRunss",
        user: alice,
        bytes: Some(&later),
        media_type: "image/png",
        ..Local::default()
    });
    let again = import(&s, server.dir.path(), &["--remote"]);
    let text = format!("{}{}", stdout(&again), stderr(&again));
    assert_eq!(
        count(&again, "imported:"),
        1,
        "only the new upload:\n{text}"
    );
    assert_eq!(count(&again, "quarantined:"), 0, "{text}");
    assert_eq!(count(&again, "already there:"), 6, "{text}");
    assert_eq!(count(&again, "bytes copied:"), 20_000, "{text}");
    let (status, body, ..) = download(base, "localhost", "JJJJuploadedBetweenRunss").await;
    assert_eq!(status, 200);
    assert!(body == later);
}

/// Imported media counts against its uploader's quota as their uploads do: after importing
/// two files for alice, a two-file quota refuses her next upload and the usage endpoint reports
/// the imported bytes.
#[actix_web::test]
async fn imported_media_counts_against_the_quota() {
    let server = TestServer::start_with(|c| c.media.user_quota_files = 2).await;
    let s = Synapse::new();
    for (id, seed) in [
        ("QQQQimportedOneeeeeeeeee", 31),
        ("QQQQimportedTwoooooooooo", 32),
    ] {
        s.add_local(Local {
            id,
            user: "@alice:localhost",
            bytes: Some(&pseudo_random(5_000, seed)),
            media_type: "application/pdf",
            ..Local::default()
        });
    }
    let out = import(&s, server.dir.path(), &[]);
    let text = format!("{}{}", stdout(&out), stderr(&out));
    assert_eq!(count(&out, "imported:"), 2, "{text}");

    let mut usage = server
        .get_as(
            server.url("/_matrix/media/unstable/org.matrix.msc4034/usage"),
            ALICE,
        )
        .await;
    assert_eq!(usage.status(), 200);
    let usage: serde_json::Value = usage.json().await.unwrap();
    assert_eq!(usage["org.matrix.msc4034.storage.files"], 2, "{usage}");
    assert_eq!(usage["org.matrix.msc4034.storage.used"], 10_000, "{usage}");
    let mut res = server
        .client
        .post(server.url("/_matrix/media/v3/upload"))
        .bearer_auth(ALICE)
        .insert_header(("content-type", "application/pdf"))
        .send_body(vec![1u8; 100])
        .await
        .unwrap();
    assert_eq!(res.status(), 403, "the quota holds the imported files");
    let body: serde_json::Value = res.json().await.unwrap();
    assert_eq!(body["errcode"], "M_USER_LIMIT_EXCEEDED", "{body}");
}

/// Media Synapse protected from quarantine (`safe_from_quarantine`) is protected in mxmedia
/// once imported: the admin API says so, and quarantining its uploader's media passes it by
/// while it takes the unprotected item.
#[actix_web::test]
async fn imported_protection_from_quarantine_is_kept() {
    let server = TestServer::start_with(|c| {
        c.auth.admins = vec!["@alice:localhost".into()];
    })
    .await;
    let s = Synapse::new();
    let (sticker, other) = (pseudo_random(5_000, 21), pseudo_random(5_000, 22));
    for (id, bytes, safe) in [
        ("SSSSprotectedStickerrrrr", &sticker, true),
        ("UUUUunprotectedddddddddd", &other, false),
    ] {
        s.add_local(Local {
            safe,
            ..alice_png(id, bytes)
        });
    }
    let out = import(&s, server.dir.path(), &[]);
    let text = format!("{}{}", stdout(&out), stderr(&out));
    assert_eq!(out.status.code(), Some(0), "{text}");
    assert_eq!(count(&out, "imported:"), 2, "{text}");

    let base = &server.base;
    let info = |id: &str| format!("/_synapse/admin/v1/media/localhost/{id}");
    for (id, safe) in [
        ("SSSSprotectedStickerrrrr", true),
        ("UUUUunprotectedddddddddd", false),
    ] {
        let (status, body, ..) = get(base, &info(id), Some(ALICE)).await;
        assert_eq!(status, 200, "{id}");
        let body: serde_json::Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(
            body["media_info"]["safe_from_quarantine"],
            serde_json::json!(safe),
            "{id}: {body}"
        );
    }
    let mut res = client()
        .post(format!(
            "{base}/_synapse/admin/v1/user/@alice:localhost/media/quarantine"
        ))
        .bearer_auth(ALICE)
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    let body: serde_json::Value = res.json().await.unwrap();
    assert_eq!(
        body["num_quarantined"], 1,
        "the protected item is passed by: {body}"
    );
    let (status, body, ..) = download(base, "localhost", "SSSSprotectedStickerrrrr").await;
    assert_eq!(status, 200, "protected, still served");
    assert!(body == sticker);
    let (status, ..) = download(base, "localhost", "UUUUunprotectedddddddddd").await;
    assert_eq!(status, 404, "the unprotected item is quarantined");
}

/// Rows of users on another server mean the wrong database or `SERVER_NAME`: the import
/// stops with a message naming them before it stores anything.
#[actix_web::test]
async fn foreign_server_name_stops_before_importing() {
    let s = Synapse::new();
    s.add_local(Local {
        id: "AAAAfineeeeeeeeeeeeeeeee",
        user: "@alice:localhost",
        bytes: Some(b"one"),
        media_type: "text/plain",
        ..Local::default()
    });
    s.add_local(Local {
        id: "BBBBforeignnnnnnnnnnnnnn",
        user: "@bob:other.example",
        bytes: Some(b"two"),
        media_type: "text/plain",
        ..Local::default()
    });
    let data = tempfile::tempdir().unwrap();
    let out = import(&s, data.path(), &[]);
    let text = stderr(&out);
    assert_eq!(out.status.code(), Some(2), "{text}");
    assert!(text.contains("@bob:other.example"), "{text}");
    assert!(text.contains("nothing imported"), "{text}");
    assert!(
        !data.path().join("db").exists(),
        "the data dir was not even opened"
    );
}

/// A database path that is missing, not a database, or not Synapse's is refused with a
/// message saying so, and nothing is written.
#[actix_web::test]
async fn bad_database_paths_are_refused() {
    let s = Synapse::new();
    let data = tempfile::tempdir().unwrap();
    let garbage = s.dir.path().join("garbage.db");
    std::fs::write(&garbage, pseudo_random(8192, 3)).unwrap();
    let other = s.dir.path().join("other.db");
    rusqlite::Connection::open(&other)
        .unwrap()
        .execute_batch("CREATE TABLE t (x);")
        .unwrap();
    for (db, expect) in [
        (
            s.dir.path().join("nonexistent.db"),
            "not a readable SQLite database",
        ),
        (garbage, "not a readable SQLite database"),
        (other, "no table local_media_repository"),
    ] {
        let out = Command::new(BIN)
            .env_clear()
            .env("MXMEDIA_DATA_DIR", data.path())
            .args(["import", "synapse", "--media-store"])
            .arg(s.store())
            .arg("--database")
            .arg(&db)
            .output()
            .unwrap();
        let text = stderr(&out);
        assert_eq!(out.status.code(), Some(2), "{}: {text}", db.display());
        assert!(text.contains(expect), "{}: {text}", db.display());
        assert!(!db.with_extension("db-journal").exists());
    }
    assert!(
        !s.dir.path().join("nonexistent.db").exists(),
        "never created"
    );
    assert_eq!(
        count_files(data.path()),
        0,
        "nothing written to the data dir"
    );
}

/// An import killed with SIGKILL midway, into a stopped data dir, then run again, ends with
/// every item served whole by the server started afterwards, each blob stored once and no
/// staged file left behind; `--link` stores no second copy of the bytes.
#[actix_web::test]
async fn killed_import_resumes_to_the_same_result() {
    let s = Synapse::new();
    let mut items = Vec::new();
    for i in 0..400u64 {
        // Every fourth item repeats an earlier one's bytes.
        let seed = if i % 4 == 3 { i - 1 } else { i };
        let bytes = pseudo_random(40_000 + usize::try_from(seed).unwrap() * 10, seed);
        let id = format!("K{i:04}killedImportttttttt");
        s.add_local(Local {
            id: &id,
            user: "@alice:localhost",
            bytes: Some(&bytes),
            media_type: "application/octet-stream",
            ..Local::default()
        });
        items.push((id, bytes));
    }
    let data = tempfile::tempdir().unwrap();
    let mut child = Command::new(BIN)
        .env_clear()
        .env("MXMEDIA_DATA_DIR", data.path())
        .env("MXMEDIA_SERVER_NAME", "localhost")
        .args(["import", "synapse", "--link", "--media-store"])
        .arg(s.store())
        .arg("--database")
        .arg(s.db_path())
        .current_dir(s.dir.path())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    // Killed once it has staged or committed some files, well before the end.
    let deadline = Instant::now() + Duration::from_secs(30);
    while count_files(&data.path().join("blobs")) < 20 && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(2));
    }
    child.kill().unwrap();
    let status = child.wait().unwrap();
    assert!(!status.success(), "killed midway, not finished: {status:?}");
    let partial = count_files(&data.path().join("blobs"));
    assert!(partial < 300, "killed midway: {partial} blobs");

    let out = import(&s, data.path(), &["--link"]);
    let text = format!("{}{}", stdout(&out), stderr(&out));
    assert_eq!(out.status.code(), Some(0), "{text}");
    assert_eq!(
        count(&out, "imported:") + count(&out, "already there:"),
        400,
        "{text}"
    );
    assert_eq!(
        count(&out, "bytes copied:"),
        0,
        "--link copies nothing: {text}"
    );
    let (original, blob) = (
        s.store().join("local_content/K0/00/0killedImportttttttt"),
        data.path().join("blobs"),
    );
    use std::os::unix::fs::MetadataExt as _;
    assert!(
        std::fs::metadata(&original).unwrap().nlink() >= 2,
        "{} is linked into {}",
        original.display(),
        blob.display()
    );

    let port = free_port();
    let _proc = spawn(data.path(), port, true);
    let base = format!("http://127.0.0.1:{port}");
    wait_ready(&base).await;
    for (id, bytes) in &items {
        let (status, body, ..) = download(&base, "localhost", id).await;
        assert_eq!(status, 200, "{id}");
        assert!(body == *bytes, "{id} byte for byte");
    }
    assert_eq!(
        count_files(&data.path().join("blobs")),
        300,
        "each blob once"
    );
    assert_eq!(
        count_files(&data.path().join("tmp")),
        0,
        "no staged file left"
    );
}

/// A JPEG of `width`×`height` noisy pixels of `seed`, unlike anything our renderer makes.
fn noisy_jpeg(width: u32, height: u32, seed: u8) -> Vec<u8> {
    let image = image::RgbImage::from_fn(width, height, |x, y| {
        image::Rgb([seed, (x * 7 + y * 13) as u8, (x ^ y) as u8])
    });
    let mut out = std::io::Cursor::new(Vec::new());
    image.write_to(&mut out, image::ImageFormat::Jpeg).unwrap();
    out.into_inner()
}

/// The counts of the summary's thumbnail line: imported, already there, left out, failed.
fn thumbnail_counts(out: &Output) -> [u64; 4] {
    let text = stdout(out);
    let line = text
        .lines()
        .find(|l| l.trim_start().starts_with("thumbnails:"))
        .unwrap_or_else(|| panic!("no thumbnail line in the summary:\n{text}"));
    let numbers: Vec<u64> = line
        .split(|c: char| !c.is_ascii_digit())
        .filter(|s| !s.is_empty())
        .map(|s| s.parse().unwrap())
        .collect();
    [numbers[0], numbers[1], numbers[2], numbers[3]]
}

/// With `--thumbnails`, the thumbnails Synapse stored are served as they were where they are
/// what this server serves (a 96×96 crop; a 320×240 scale of a 640×480 photo, over the inline
/// threshold), instead of being rendered again; one of a size not served here, one of a type
/// not rendered here and one whose source is served as it is are left out, a missing file is
/// counted; a second run adds nothing.
#[actix_web::test]
async fn synapse_thumbnails_are_kept_where_they_match_ours() {
    let server = TestServer::start_with(|c| {
        c.store.inline_blob_max = bytesize::ByteSize::kib(4);
    })
    .await;
    let photo = std::fs::read(PHOTO).unwrap();
    let s = Synapse::new();
    let id = "TTTTthumbnailedPhotoooo";
    s.add_local(Local {
        id,
        user: "@alice:localhost",
        bytes: Some(&photo),
        media_type: "image/jpeg",
        ..Local::default()
    });
    let crop = noisy_jpeg(96, 96, 1);
    let scale = noisy_jpeg(320, 240, 2);
    assert!(scale.len() > 4096, "stored as a blob file");
    s.add_local_thumbnail(id, (96, 96), "image/jpeg", "crop", Some(&crop));
    s.add_local_thumbnail(id, (320, 240), "image/jpeg", "scale", Some(&scale));
    let odd = noisy_jpeg(123, 77, 3);
    s.add_local_thumbnail(id, (123, 77), "image/jpeg", "scale", Some(&odd));
    s.add_local_thumbnail(id, (32, 32), "image/webp", "crop", Some(&crop));
    s.add_local_thumbnail(id, (640, 480), "image/jpeg", "scale", Some(&odd));
    s.add_local_thumbnail(id, (32, 32), "image/jpeg", "crop", None);

    let out = import(&s, server.dir.path(), &["--thumbnails"]);
    let text = format!("{}{}", stdout(&out), stderr(&out));
    assert_eq!(out.status.code(), Some(0), "{text}");
    assert_eq!(count(&out, "imported:"), 1, "{text}");
    assert_eq!(thumbnail_counts(&out), [2, 0, 3, 1], "{text}");

    let thumb = |query: &str| format!("/_matrix/client/v1/media/thumbnail/localhost/{id}?{query}");
    let (status, body, ct, _) = get(
        &server.base,
        &thumb("width=96&height=96&method=crop"),
        Some(ALICE),
    )
    .await;
    assert_eq!((status, ct.as_deref()), (200, Some("image/jpeg")));
    assert!(
        body == crop,
        "Synapse's crop is served, not one rendered here"
    );
    let (status, body, ..) = get(
        &server.base,
        &thumb("width=300&height=200&method=scale"),
        Some(ALICE),
    )
    .await;
    assert_eq!(status, 200);
    assert!(
        body == scale,
        "Synapse's 320x240 scale is served for the 320x240 size"
    );
    let (status, body, ..) = get(
        &server.base,
        &thumb("width=32&height=32&method=crop"),
        Some(ALICE),
    )
    .await;
    assert_eq!(status, 200);
    assert!(body != crop, "the 32x32 crop is rendered here");
    assert_eq!(image::load_from_memory(&body).unwrap().width(), 32);

    let again = import(&s, server.dir.path(), &["--thumbnails"]);
    let text = format!("{}{}", stdout(&again), stderr(&again));
    assert_eq!(again.status.code(), Some(0), "{text}");
    assert_eq!(count(&again, "imported:"), 0, "{text}");
    assert_eq!(thumbnail_counts(&again), [0, 2, 3, 1], "{text}");
}

/// Imported media keeps Synapse's last access: the admin API shows it for local and remote
/// media (the creation time where Synapse has none), and deleting local media not accessed
/// since a date, like purging the remote cache, goes by it.
#[actix_web::test]
async fn imported_last_access_is_kept_and_used() {
    let server = TestServer::start_with(|c| {
        c.auth.admins = vec!["@alice:localhost".into()];
    })
    .await;
    let s = Synapse::new();
    let (used, unused, remote) = (
        pseudo_random(3_000, 31),
        pseudo_random(3_000, 32),
        pseudo_random(3_000, 33),
    );
    for (id, bytes, never_accessed) in [
        ("UUUUusedLateeeeeeeeeeeee", &used, false),
        ("NNNNneverAccessedddddddd", &unused, true),
    ] {
        s.add_local(Local {
            never_accessed,
            ..alice_png(id, bytes)
        });
    }
    s.add_remote(
        "other.example",
        "RRRRremoteeeeeeeeeeeeeee",
        "fsidremote",
        &remote,
        "r.jpg",
    );
    let out = import(&s, server.dir.path(), &["--remote"]);
    let text = format!("{}{}", stdout(&out), stderr(&out));
    assert_eq!(out.status.code(), Some(0), "{text}");
    assert_eq!(count(&out, "imported:"), 3, "{text}");

    let base = &server.base;
    for (server_name, id, last) in [
        (
            "localhost",
            "UUUUusedLateeeeeeeeeeeee",
            1_700_000_000_000_u64,
        ),
        ("localhost", "NNNNneverAccessedddddddd", 1_600_000_000_000),
        (
            "other.example",
            "RRRRremoteeeeeeeeeeeeeee",
            1_700_000_000_000,
        ),
    ] {
        let path = format!("/_synapse/admin/v1/media/{server_name}/{id}");
        let (status, body, ..) = get(base, &path, Some(ALICE)).await;
        assert_eq!(status, 200, "{id}");
        let body: serde_json::Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(
            body["media_info"]["last_access_ts"],
            serde_json::json!(last),
            "{id}: {body}"
        );
    }
    let (status, body, ..) = get(
        base,
        "/_synapse/admin/v1/users/@alice:localhost/media",
        Some(ALICE),
    )
    .await;
    assert_eq!(status, 200);
    let body: serde_json::Value = serde_json::from_slice(&body).unwrap();
    let mut listed: Vec<_> = body["media"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["last_access_ts"].clone())
        .collect();
    listed.sort_by_key(|v| v.as_u64());
    assert_eq!(
        listed,
        [1_600_000_000_000_u64, 1_700_000_000_000].map(|t| serde_json::json!(t))
    );

    // Between the creation and the last access: only what was not used since goes.
    let before = 1_650_000_000_000_u64;
    for (path, deleted) in [
        (
            format!("/_synapse/admin/v1/media/delete?before_ts={before}&keep_profiles=false"),
            serde_json::json!(["NNNNneverAccessedddddddd"]),
        ),
        (
            format!("/_synapse/admin/v1/purge_media_cache?before_ts={before}"),
            serde_json::json!(0),
        ),
    ] {
        let mut res = client()
            .post(format!("{base}{path}"))
            .bearer_auth(ALICE)
            .send()
            .await
            .unwrap();
        assert_eq!(res.status(), 200, "{path}");
        let body: serde_json::Value = res.json().await.unwrap();
        let got = body.get("deleted_media").unwrap_or(&body["deleted"]);
        assert_eq!(got, &deleted, "{path}: {body}");
    }
    let (status, ..) = download(base, "localhost", "UUUUusedLateeeeeeeeeeeee").await;
    assert_eq!(status, 200, "accessed after the date: kept");
    let (status, ..) = download(base, "localhost", "NNNNneverAccessedddddddd").await;
    assert_eq!(status, 404, "not accessed since: deleted");
}
