//! Remote media as a cache: last-access times, and sweeps that remove idle media or what goes
//! beyond a size budget, with their thumbnails and unreferenced blobs.

use super::{Expect, Store, Upload, blob_files, read, store};
use crate::model::id::MediaKey;
use crate::store::keys;
use crate::store::retention::{RetentionPolicy, Swept};

const DAY: u64 = 24 * 60 * 60 * 1000;

fn media(server: &str, id: &str) -> MediaKey {
    MediaKey {
        server_name: server.parse().unwrap(),
        media_id: id.parse().unwrap(),
    }
}

fn fetch(store: &Store, key: &MediaKey, bytes: &[u8], at: u64) -> String {
    let mut staging = store.stage().unwrap();
    staging.write(bytes).unwrap();
    let staged = staging.finish().unwrap();
    let sha256 = staged.sha256.clone();
    let upload = Upload {
        content_type: "image/png".into(),
        filename: None,
        uploader: "",
        created_at: at,
        expect: Expect::Absent,
    };
    store.commit_upload(key, staged, upload).unwrap();
    sha256
}

fn idle(days: u64) -> RetentionPolicy {
    RetentionPolicy {
        max_idle_ms: Some(days * DAY),
        max_bytes: None,
    }
}

/// Remote media idle past the lifetime goes with its kept thumbnails, the thumbnails made
/// from it and its blob files; recently asked-for, thumbnail-only and local media stay.
#[test]
fn idle_remote_media_goes_with_its_thumbnails() {
    let (dir, store) = store(16);
    let local = media("localhost", "mine");
    let old = media("remote.example", "old");
    let recent = media("remote.example", "recent");
    fetch(&store, &local, b"local bytes, kept forever", 0);
    let old_sha = fetch(&store, &old, b"old remote bytes, 40 days idle", 0);
    fetch(&store, &recent, b"fetched long ago, asked for lately", 0);
    store
        .put_thumbnail(
            "remote:remote.example/old/96x96/crop/false",
            &[1; 40],
            "image/jpeg",
        )
        .unwrap();
    store
        .put_thumbnail(
            &format!("{old_sha}/32x32/crop/false"),
            &[2; 40],
            "image/jpeg",
        )
        .unwrap();
    store
        .put_thumbnail(
            "remote:other.example/only/96x96/crop/false",
            &[3; 40],
            "image/jpeg",
        )
        .unwrap();
    store
        .record_access(&[(keys::media(&recent), 35 * DAY)])
        .unwrap();
    assert_eq!(blob_files(&dir), 6);

    let swept = store
        .sweep_remote("localhost", 40 * DAY, &idle(30), |_| {})
        .unwrap();
    assert_eq!(swept.removed, 1);
    assert_eq!(swept.removed_bytes, 30 + 40);
    assert!(store.get_meta(&old).unwrap().is_none());
    assert!(store.get_meta(&recent).unwrap().is_some());
    assert!(store.get_meta(&local).unwrap().is_some());
    assert_eq!(
        store
            .get_thumbnail("remote:remote.example/old/96x96/crop/false")
            .unwrap(),
        None
    );
    assert_eq!(
        store
            .get_thumbnail(&format!("{old_sha}/32x32/crop/false"))
            .unwrap(),
        None
    );
    assert!(
        store
            .get_thumbnail("remote:other.example/only/96x96/crop/false")
            .unwrap()
            .is_some()
    );
    assert_eq!(
        blob_files(&dir),
        3,
        "local, recent and the thumbnail-only one"
    );

    // The thumbnail-only id was first seen by that sweep: it ages from then.
    let later = store
        .sweep_remote("localhost", 69 * DAY, &idle(30), |_| {})
        .unwrap();
    assert_eq!(later.removed, 1, "recent: asked for on day 35");
    let last = store
        .sweep_remote("localhost", 70 * DAY, &idle(30), |_| {})
        .unwrap();
    assert_eq!(
        last,
        Swept {
            removed: 1,
            removed_bytes: 40,
            kept_bytes: 0
        }
    );
    assert!(store.get_meta(&local).unwrap().is_some());
    assert_eq!(blob_files(&dir), 1);
}

/// Over the size limit, the least recently asked-for media goes first, and only as much as
/// needed; bytes shared with local media stay.
#[test]
fn size_limit_removes_least_recent_first() {
    let (dir, store) = store(16);
    let local = media("localhost", "mine");
    let shared = b"the same bytes, uploaded here and fetched from afar";
    fetch(&store, &local, shared, 0);
    let (a, b, c) = (
        media("a.example", "a"),
        media("b.example", "b"),
        media("c.example", "c"),
    );
    let shared_sha = fetch(&store, &a, shared, 1);
    fetch(&store, &b, &[7; 100], 2);
    fetch(&store, &c, &[8; 100], 3);
    store
        .put_thumbnail(
            &format!("{shared_sha}/32x32/crop/false"),
            &[2; 40],
            "image/jpeg",
        )
        .unwrap();
    store
        .record_access(&[(keys::media(&b), 10), (keys::media(&c), 5)])
        .unwrap();
    let policy = RetentionPolicy {
        max_idle_ms: None,
        max_bytes: Some(150),
    };
    let swept = store
        .sweep_remote("localhost", 20, &policy, |_| {})
        .unwrap();
    assert_eq!(swept.removed, 2, "a (oldest), then c");
    assert_eq!(swept.kept_bytes, 100);
    assert!(store.get_meta(&b).unwrap().is_some());
    assert!(store.get_meta(&a).unwrap().is_none() && store.get_meta(&c).unwrap().is_none());
    assert_eq!(
        read(&store, &shared_sha),
        shared,
        "still local media's bytes"
    );
    assert!(
        store
            .get_thumbnail(&format!("{shared_sha}/32x32/crop/false"))
            .unwrap()
            .is_some()
    );
    assert_eq!(blob_files(&dir), 3, "shared, b's and the thumbnail");
    assert_eq!(
        store
            .sweep_remote("localhost", 20, &policy, |_| {})
            .unwrap()
            .removed,
        0
    );
}

/// Quarantined remote media, original or thumbnails only, is kept by every sweep however idle
/// and whatever the size limit, for an admin to review; it does not count against the limit.
/// Released from quarantine, it is cache again and goes.
#[test]
fn sweeps_keep_quarantined_remote_media() {
    use crate::store::quarantine::Quarantined;

    let (dir, store) = store(16);
    let held = media("remote.example", "held");
    let thumbs_only = media("other.example", "only");
    let plain = media("remote.example", "plain");
    fetch(&store, &held, b"abusive bytes an admin must review", 0);
    fetch(&store, &plain, b"ordinary remote bytes, idle too", 0);
    store
        .put_thumbnail(
            "remote:other.example/only/96x96/crop/false",
            &[3; 40],
            "image/jpeg",
        )
        .unwrap();
    let by = Quarantined {
        by: "@admin:localhost".into(),
        at: 1,
    };
    store
        .quarantine_media(&[held.clone(), thumbs_only.clone()], &by)
        .unwrap();
    let both = RetentionPolicy {
        max_idle_ms: Some(DAY),
        max_bytes: Some(1),
    };
    let swept = store
        .sweep_remote("localhost", 400 * DAY, &both, |_| {})
        .unwrap();
    assert_eq!((swept.removed, swept.kept_bytes), (1, 0), "{swept:?}");
    assert!(store.get_meta(&plain).unwrap().is_none());
    assert!(store.get_meta(&held).unwrap().is_some(), "kept for review");
    assert!(
        store
            .get_thumbnail("remote:other.example/only/96x96/crop/false")
            .unwrap()
            .is_some()
    );
    assert_eq!(blob_files(&dir), 2);
    assert!(
        store
            .remote_idle_since("localhost", 400 * DAY)
            .unwrap()
            .is_empty(),
        "purge_media_cache keeps them too"
    );

    store.unquarantine_media(&held).unwrap();
    let swept = store
        .sweep_remote("localhost", 400 * DAY, &both, |_| {})
        .unwrap();
    assert_eq!(swept.removed, 1, "released: cache again");
    assert!(store.get_meta(&held).unwrap().is_none());
}
