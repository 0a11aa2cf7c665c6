//! The uploader and hash indexes: kept with the records, built for a store from before them
//! (resuming an interrupted build), and what they make cheap.

use std::time::Instant;

use super::{Expect, Store, Upload, key, store};
use crate::{
    config::Config,
    model::{
        id::MediaKey,
        meta::{Content, MediaMeta, MediaState},
    },
    store::{keys, quarantine::Quarantined},
};

fn commit(store: &Store, key: &MediaKey, bytes: &[u8], uploader: &str, at: u64) {
    let mut staging = store.stage().unwrap();
    staging.write(bytes).unwrap();
    let upload = Upload {
        content_type: "image/png".into(),
        filename: None,
        uploader,
        created_at: at,
        expect: Expect::Absent,
    };
    store
        .commit_upload(key, staging.finish().unwrap(), upload)
        .unwrap();
}

fn reopen(dir: &tempfile::TempDir) -> Store {
    let mut config = Config {
        data_dir: dir.path().to_path_buf(),
        ..Config::default()
    };
    config.store.inline_blob_max = bytesize::ByteSize::b(16);
    Store::open(&config).unwrap()
}

fn dump(tree: &sled::Tree) -> Vec<(Vec<u8>, Vec<u8>)> {
    tree.iter()
        .map(|e| {
            let (k, v) = e.unwrap();
            (k.to_vec(), v.to_vec())
        })
        .collect()
}

fn ids(store: &Store, user: &str) -> Vec<String> {
    store
        .local_media("localhost", Some(user))
        .unwrap()
        .into_iter()
        .map(|item| item.key.media_id.as_str().to_owned())
        .collect()
}

fn remote(id: &str) -> MediaKey {
    MediaKey {
        server_name: "remote.example".parse().unwrap(),
        media_id: id.parse().unwrap(),
    }
}

/// A store written before the indexes existed is indexed when opened, and an interrupted
/// build resumes where it stopped: listings, usage statistics and hash quarantine then find
/// exactly what the records hold (a user's media oldest first, remote thumbnails by their
/// bytes), and the indexes follow reservations, uploads and deletions.
#[test]
fn indexes_are_built_for_an_older_store_and_resume() {
    let (dir, store) = store(16);
    let (a, b, c) = (key(), key(), key());
    commit(&store, &b, b"bob's second, older", "@bob:localhost", 5);
    commit(&store, &a, b"bob's first", "@bob:localhost", 9);
    commit(&store, &c, b"carol's", "@carol:localhost", 7);
    let pending = key();
    store
        .insert_pending(
            &pending,
            &MediaMeta {
                uploader: "@bob:localhost".into(),
                created_at: 11,
                state: MediaState::Pending {
                    unused_expires_at: 1000,
                },
            },
        )
        .unwrap();
    let fetched = remote("orig");
    commit(&store, &fetched, b"fetched from afar", "remote.example", 3);
    let thumb = store
        .put_thumbnail(
            "remote:remote.example/thumbonly/32x32/crop/false",
            b"a remote origin's own thumbnail",
            "image/png",
        )
        .unwrap();
    let bob_ids = vec![
        b.media_id.as_str().to_owned(),
        a.media_id.as_str().to_owned(),
        pending.media_id.as_str().to_owned(),
    ];
    assert_eq!(ids(&store, "@bob:localhost"), bob_ids, "oldest first");
    let users = dump(&store.inner.user_index);
    let hashes = dump(&store.inner.hash_index);
    assert_eq!(
        hashes.len(),
        5,
        "four complete media and one remote thumbnail"
    );

    // As a store from before the indexes; then a build interrupted after one record.
    store.inner.user_index.clear().unwrap();
    store.inner.hash_index.clear().unwrap();
    assert!(!store.build_indexes_step(1).unwrap());
    store.flush().unwrap();
    drop(store);
    let store = reopen(&dir);
    assert_eq!(dump(&store.inner.hash_index), hashes);
    let mut rebuilt = dump(&store.inner.user_index);
    rebuilt.retain(|(k, _)| !k.starts_with(b"\0"));
    let mut before = users.clone();
    before.retain(|(k, _)| !k.starts_with(b"\0"));
    assert_eq!(rebuilt, before);
    assert_eq!(ids(&store, "@bob:localhost"), bob_ids);
    let usage = store.usage_by_user("localhost", None, None).unwrap();
    assert_eq!(usage["@bob:localhost"], (2, 30));
    assert_eq!(usage["@carol:localhost"], (1, 7));
    let usage = store.usage_by_user("localhost", Some(6), Some(8)).unwrap();
    assert_eq!(usage.keys().collect::<Vec<_>>(), ["@carol:localhost"]);

    // Hash quarantine finds a remote origin's thumbnail through the index.
    let by = Quarantined {
        by: "@admin:localhost".into(),
        at: 1,
    };
    let (_, marked) = store
        .quarantine_hashes(std::slice::from_ref(&thumb.sha256), &by)
        .unwrap();
    assert_eq!(marked.stored, 1);
    assert!(store.is_withheld(&remote("thumbonly")).unwrap());

    // Deletions and expiries leave nothing behind in either index.
    store.expire_pending(2000).unwrap();
    for gone in [&a, &b, &c, &fetched, &remote("thumbonly")] {
        store.delete_media(gone).unwrap();
    }
    assert!(ids(&store, "@bob:localhost").is_empty());
    assert!(dump(&store.inner.hash_index).is_empty());
    assert!(
        dump(&store.inner.user_index)
            .iter()
            .all(|(k, _)| k.starts_with(b"\0"))
    );
}

/// Cost of listing one user's media as the store grows: with the index it stays flat, where
/// the scan it replaced grows with every record. Prints the figures; run with
/// `cargo test -p mxmedia --lib store::tests::index::listing -- --ignored --nocapture`.
#[test]
#[ignore = "a measurement: 100k records take a while in a debug build"]
fn listing_cost_does_not_grow_with_the_store() {
    let (dir, store) = store(16);
    for i in 0..10u64 {
        commit(&store, &key(), &i.to_be_bytes(), "@target:localhost", i);
    }
    let mut figures = Vec::new();
    let mut written = 10u64;
    for total in [1_000u64, 10_000, 100_000] {
        let mut batch = sled::Batch::default();
        while written < total {
            let meta = MediaMeta {
                uploader: format!("@user{}:localhost", written % 997),
                created_at: written,
                state: MediaState::Complete(Content {
                    content_type: "image/png".into(),
                    filename: None,
                    len: 100,
                    sha256: format!("{written:064x}"),
                }),
            };
            batch.insert(keys::media(&key()), serde_json::to_vec(&meta).unwrap());
            written += 1;
        }
        // Written as an older version would have: the next open indexes them.
        store.inner.meta.apply_batch(batch).unwrap();
        store.inner.user_index.clear().unwrap();
        store.flush().unwrap();
        let started = Instant::now();
        store.build_indexes_once().unwrap();
        let build = started.elapsed();

        let started = Instant::now();
        let listed = store
            .local_media("localhost", Some("@target:localhost"))
            .unwrap();
        let indexed = started.elapsed();
        assert_eq!(listed.len(), 10);
        let started = Instant::now();
        let scanned = store
            .local_media("localhost", None)
            .unwrap()
            .into_iter()
            .filter(|item| item.meta.uploader == "@target:localhost")
            .count();
        let scan = started.elapsed();
        assert_eq!(scanned, 10);
        figures.push((total, indexed, scan, build));
    }
    for (total, indexed, scan, build) in &figures {
        println!(
            "{total:>7} records: user listing {indexed:?} (index) vs {scan:?} (full scan); index build {build:?}"
        );
    }
    let (small, large) = (figures[0].1, figures[2].1);
    assert!(
        large < small * 20 + std::time::Duration::from_millis(5),
        "the indexed listing grew with the store: {small:?} -> {large:?}"
    );
    drop(dir);
}
