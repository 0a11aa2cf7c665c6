//! The store on real sled files in temporary directories: deduplication and reference counts,
//! inline chunks, the orphan sweep, reservations, backups, previews and thumbnails.

#![allow(
    clippy::indexing_slicing,
    clippy::as_conversions,
    reason = "test code: an index or a cast of a small literal that fails is a test failure"
)]

use mxmedia_proto::ids::{MediaId, ServerName};

use super::{BlobReader, Expect, Store, StoreError, Upload};

use crate::{
    config::Config,
    model::{
        id::MediaKey,
        meta::{MediaMeta, MediaState},
    },
};

fn store(inline_max: u64) -> (tempfile::TempDir, Store) {
    let dir = tempfile::tempdir().unwrap();
    let mut config = Config {
        data_dir: dir.path().to_path_buf(),
        ..Config::default()
    };
    config.store.inline_blob_max = bytesize::ByteSize::b(inline_max);
    (dir, Store::open(&config).unwrap())
}

fn key() -> MediaKey {
    MediaKey {
        server_name: "localhost".parse::<ServerName>().unwrap(),
        media_id: MediaId::generate(),
    }
}

fn put(store: &Store, key: &MediaKey, bytes: &[u8]) {
    let mut staging = store.stage().unwrap();
    staging.write(bytes).unwrap();
    let staged = staging.finish().unwrap();
    let upload = Upload {
        content_type: "text/plain".into(),
        filename: None,
        uploader: "@a:localhost",
        created_at: 1,
        expect: Expect::Absent,
    };
    store.commit_upload(key, staged, upload).unwrap();
}

fn read(store: &Store, sha256: &str) -> Vec<u8> {
    match store.open_blob(sha256).unwrap() {
        BlobReader::Inline(b) => b.to_vec(),
        BlobReader::Stream(mut r) => {
            let mut out = Vec::new();
            std::io::Read::read_to_end(&mut r, &mut out).unwrap();
            out
        }
    }
}

fn sha(store: &Store, key: &MediaKey) -> String {
    match store.get_meta(key).unwrap().unwrap().state {
        MediaState::Complete(c) => c.sha256,
        MediaState::Pending { .. } => panic!("pending"),
    }
}

fn blob_files(dir: &tempfile::TempDir) -> usize {
    walk(&dir.path().join("blobs"))
}

fn walk(path: &std::path::Path) -> usize {
    std::fs::read_dir(path)
        .unwrap()
        .map(|e| {
            let e = e.unwrap();
            if e.file_type().unwrap().is_dir() {
                walk(&e.path())
            } else {
                1
            }
        })
        .sum()
}

/// Identical content under two ids is stored once, and survives until the last id goes.
#[test]
fn dedupe_and_refcount_for_files_and_inline() {
    for (inline_max, big) in [(16, true), (1 << 20, false)] {
        let (dir, store) = store(inline_max);
        let (a, b) = (key(), key());
        let bytes = vec![7u8; 600_000];
        put(&store, &a, &bytes);
        put(&store, &b, &bytes);
        assert_eq!(sha(&store, &a), sha(&store, &b));
        assert_eq!(blob_files(&dir), usize::from(big));
        assert!(store.delete_media(&a).unwrap());
        assert_eq!(
            read(&store, &sha(&store, &b)),
            bytes,
            "still readable after one delete"
        );
        let hash = sha(&store, &b);
        assert!(store.delete_media(&b).unwrap());
        assert_eq!(blob_files(&dir), 0, "last reference removes the file");
        assert!(store.open_blob(&hash).is_err());
        assert!(!store.delete_media(&b).unwrap());
    }
}

/// Inline blobs spanning several sled chunks come back whole.
#[test]
fn multi_chunk_inline_roundtrip() {
    let (_dir, store) = store(4 << 20);
    let k = key();
    let bytes: Vec<u8> = (0..1_000_000u32).map(|i| (i % 251) as u8).collect();
    put(&store, &k, &bytes);
    assert_eq!(read(&store, &sha(&store, &k)), bytes);
}

/// A store written with a larger inline limit (an older default was 256 KiB), opened with
/// today's, moves the inline blobs above the limit to files once: every media and thumbnail
/// serves the same bytes, and no inline chunk above the limit is left. A move interrupted
/// after the file was written is finished at the next open.
#[test]
fn inline_blobs_above_the_limit_move_to_files_at_open() {
    let dir = tempfile::tempdir().unwrap();
    let open = |inline_max: u64| {
        let mut config = Config {
            data_dir: dir.path().to_path_buf(),
            ..Config::default()
        };
        config.store.inline_blob_max = bytesize::ByteSize::b(inline_max);
        Store::open(&config).unwrap()
    };
    let multi_chunk: Vec<u8> = (0..600_000u32).map(|i| (i % 251) as u8).collect();
    let (large, small, thumb) = (vec![3u8; 100_000], vec![4u8; 3_000], vec![5u8; 50_000]);
    let (keys, thumb_sha) = {
        let store = open(1 << 20);
        let keys = [key(), key(), key()];
        for (key, bytes) in keys.iter().zip([&multi_chunk, &large, &small]) {
            put(&store, key, bytes);
        }
        let thumb_key = format!("{}/1x1/crop/false", sha(&store, &keys[2]));
        let record = store
            .put_thumbnail(&thumb_key, &thumb, "image/png")
            .unwrap();
        assert_eq!(blob_files(&dir), 0, "all inline");
        (keys, record.sha256)
    };
    // An earlier open was killed after writing the large blob's file, before its transaction.
    {
        let store = open(1 << 20);
        let hash = sha(&store, &keys[1]);
        let path = super::blob::file_path(&dir.path().join("blobs"), &hash);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(&path, &large).unwrap();
    }
    let default = Config::default().store.inline_blob_max.as_u64();
    let store = open(default);
    assert_eq!(blob_files(&dir), 3, "the three large blobs are files");
    for (key, bytes) in keys.iter().zip([&multi_chunk, &large, &small]) {
        assert_eq!(&read(&store, &sha(&store, key)), bytes);
    }
    assert_eq!(read(&store, &thumb_sha), thumb);
    for item in &store.inner.blobs {
        let (hash, raw) = item.unwrap();
        let record: super::refs::BlobRecord = super::decode(&raw).unwrap();
        let chunk_bytes: usize = store
            .inner
            .chunks
            .scan_prefix(hex::decode(&hash).unwrap())
            .map(|c| c.unwrap().1.len())
            .sum();
        match record.placement {
            super::Placement::Inline => {
                assert!(record.len <= default, "{record:?}");
                assert_eq!(chunk_bytes as u64, record.len);
            }
            super::Placement::File => assert_eq!(chunk_bytes, 0, "chunks dropped"),
        }
    }
    assert_eq!(store.spill_large_inline_blobs_once().unwrap(), 0, "once");
}

/// An unreferenced blob file (a crash between rename and commit) is swept; referenced ones stay.
#[test]
fn sweep_removes_only_orphans() {
    let (dir, store) = store(16);
    let k = key();
    put(&store, &k, b"referenced content");
    let orphan = dir
        .path()
        .join("blobs/ab/abababababababababababababababababababababababababababababababab");
    std::fs::create_dir_all(orphan.parent().unwrap()).unwrap();
    std::fs::write(&orphan, b"orphan").unwrap();
    assert_eq!(store.sweep_orphans().unwrap(), 1);
    assert!(!orphan.exists());
    assert_eq!(read(&store, &sha(&store, &k)), b"referenced content");
}

/// A reservation expires: its metadata goes and it no longer counts as pending.
#[test]
fn pending_expiry() {
    let (_dir, store) = store(16);
    let k = key();
    let meta = MediaMeta {
        uploader: "@a:localhost".into(),
        created_at: 0,
        state: MediaState::Pending {
            unused_expires_at: 1000,
        },
    };
    store.insert_pending(&k, &meta).unwrap();
    assert_eq!(
        store.pending_expiries("@a:localhost", 500).unwrap(),
        vec![1000]
    );
    assert_eq!(
        store.pending_expiries("@b:localhost", 500).unwrap(),
        Vec::<u64>::new()
    );
    assert_eq!(store.expire_pending(999).unwrap(), 0);
    assert_eq!(store.expire_pending(1000).unwrap(), 1);
    assert!(store.get_meta(&k).unwrap().is_none());
}

/// Filling a reservation checks owner, expiry and that it is still empty.
#[test]
fn pending_commit_rules() {
    let (_dir, store) = store(1 << 20);
    let k = key();
    let meta = MediaMeta {
        uploader: "@a:localhost".into(),
        created_at: 5,
        state: MediaState::Pending {
            unused_expires_at: 1000,
        },
    };
    store.insert_pending(&k, &meta).unwrap();
    let commit = |user: &str, now_ms| {
        let mut staging = store.stage().unwrap();
        staging.write(b"x").unwrap();
        let upload = Upload {
            content_type: "a/b".into(),
            filename: None,
            uploader: user,
            created_at: 9,
            expect: Expect::PendingFor { user, now_ms },
        };
        store.commit_upload(&k, staging.finish().unwrap(), upload)
    };
    // What clients are told for each (403, 404, 409) is checked in `error/tests.rs`.
    assert!(matches!(
        commit("@b:localhost", 10),
        Err(StoreError::NotUploader)
    ));
    assert!(matches!(
        commit("@a:localhost", 1000),
        Err(StoreError::NotFound)
    ));
    commit("@a:localhost", 10).unwrap();
    assert!(matches!(
        commit("@a:localhost", 10),
        Err(StoreError::Exists)
    ));
    let stored = store.get_meta(&k).unwrap().unwrap();
    assert_eq!(stored.created_at, 5, "creation time is the reservation's");
    assert!(
        store
            .pending_expiries("@a:localhost", 10)
            .unwrap()
            .is_empty()
    );
}

/// While a backup holds blob files, deleting the last reference keeps the file; when the hold
/// ends it goes, unless the same bytes were stored again meanwhile.
#[test]
fn backup_hold_defers_file_removal() {
    let (dir, store) = store(16);
    let (a, b) = (key(), key());
    put(&store, &a, b"first blob, larger than inline");
    put(&store, &b, b"second blob, larger than inline");
    let hold = store.hold_blob_files().unwrap();
    assert!(store.delete_media(&a).unwrap());
    assert!(store.delete_media(&b).unwrap());
    assert_eq!(blob_files(&dir), 2, "kept for the backup");
    let again = key();
    put(&store, &again, b"second blob, larger than inline");
    drop(hold);
    assert_eq!(blob_files(&dir), 1, "only the unreferenced one goes");
    assert_eq!(
        read(&store, &sha(&store, &again)),
        b"second blob, larger than inline"
    );
}

/// A dump rebuilt elsewhere holds every tree and entry, and names the blob files to copy.
#[test]
fn dump_restores_into_a_new_database() {
    let (_dir, store) = store(16);
    let (small, large) = (key(), key());
    let restored_dir = tempfile::tempdir().unwrap();
    put(&store, &large, &[9u8; 1000]);
    put(&store, &small, b"tiny");
    store.put_thumbnail("t", &[3u8; 100], "image/png").unwrap();
    let mut dump = Vec::new();
    let stats = store.dump(&mut dump).unwrap();
    let restored =
        super::backup::restore_dump(&mut dump.as_slice(), &restored_dir.path().join("db")).unwrap();
    assert_eq!(restored.stats.entries, stats.entries);
    assert_eq!(restored.stats.trees, stats.trees);
    assert_eq!(restored.files.len(), 2, "the upload and the thumbnail");
    let mut config = Config {
        data_dir: restored_dir.path().to_path_buf(),
        ..Config::default()
    };
    config.store.inline_blob_max = bytesize::ByteSize::b(16);
    let copy = Store::open(&config).unwrap();
    for k in [&small, &large] {
        assert_eq!(copy.get_meta(k).unwrap(), store.get_meta(k).unwrap());
    }
    assert_eq!(read(&copy, &sha(&copy, &small)), b"tiny");
    assert_eq!(
        copy.get_thumbnail("t").unwrap(),
        store.get_thumbnail("t").unwrap()
    );

    // A stream cut short is an error, never a half database taken for whole.
    let cut = tempfile::tempdir().unwrap();
    let err = super::backup::restore_dump(&mut &dump[..dump.len() - 1], &cut.path().join("db"))
        .unwrap_err();
    assert!(err.to_string().contains("end mark"), "{err}");
}

/// A cached preview is served until its expiry, then gone, and the sweep removes expired ones.
#[test]
fn preview_cache_expires() {
    let (_dir, store) = store(1024);
    store.put_preview(b"https://a/\0\x01", b"{}", 100).unwrap();
    store
        .put_preview(b"https://b/\0\x01", b"{\"x\":1}", 50)
        .unwrap();
    assert_eq!(
        store
            .get_preview(b"https://a/\0\x01", 99)
            .unwrap()
            .as_deref(),
        Some(&b"{}"[..])
    );
    assert_eq!(store.get_preview(b"https://a/\0\x01", 100).unwrap(), None);
    assert_eq!(
        store.get_preview(b"https://a/\0\x01", 0).unwrap(),
        None,
        "removed"
    );
    assert_eq!(store.expire_previews(60).unwrap(), 1);
    assert_eq!(store.get_preview(b"https://b/\0\x01", 0).unwrap(), None);
}

/// Small thumbnails go straight into sled and large ones into blob files; both read back as
/// written, under their content hash, and storing a key again keeps the first record.
#[test]
fn thumbnails_small_and_large() {
    let (dir, store) = store(64);
    let small = store
        .put_thumbnail("s", b"small thumb", "image/jpeg")
        .unwrap();
    let large = store.put_thumbnail("l", &[7u8; 500], "image/png").unwrap();
    assert_eq!(blob_files(&dir), 1, "only the large one is a file");
    assert_eq!(
        small.sha256,
        "94f48ea4037a3cf1d39d402a65cda51a83974fdd37a45a231f5eb06993fd0516"
    );
    assert_eq!(read(&store, &small.sha256), b"small thumb");
    assert_eq!(read(&store, &large.sha256), vec![7u8; 500]);
    assert_eq!((small.len, large.len), (11, 500));

    let again = store
        .put_thumbnail("s", b"other bytes", "image/png")
        .unwrap();
    assert_eq!(again, small);
    assert_eq!(store.get_thumbnail("l").unwrap(), Some(large));
}

mod index;
mod retention;
mod server_keys;

/// Per-user usage follows uploads and deletions, and a store from before the usage tree is
/// counted once when opened: quotas see what users stored before the upgrade.
#[test]
fn usage_is_counted_and_recounted_after_an_upgrade() {
    let (dir, store) = store(1024);
    let (a, b) = (key(), key());
    put(&store, &a, &[1; 3000]);
    put(&store, &b, &[2; 10]);
    assert_eq!(
        (
            store.usage("@a:localhost").unwrap().bytes,
            store.usage("@a:localhost").unwrap().files
        ),
        (3010, 2)
    );
    assert!(store.delete_media(&b).unwrap());
    assert_eq!(store.usage("@a:localhost").unwrap().files, 1);
    // As a store written before `userid_usage` existed.
    store.inner.usage.clear().unwrap();
    store.flush().unwrap();
    drop(store);
    let mut config = Config {
        data_dir: dir.path().to_path_buf(),
        ..Config::default()
    };
    config.store.inline_blob_max = bytesize::ByteSize::b(1024);
    let store = Store::open(&config).unwrap();
    let usage = store.usage("@a:localhost").unwrap();
    assert_eq!((usage.bytes, usage.files), (3000, 1));
}
