//! Remote servers' key records: expired ones and the oldest beyond the bounds are swept, records
//! kept before the stamps existed are judged by what they say.

use super::store;
use crate::store::server_keys::{KeyBounds, SERVER_KEY_RECORD_MAX, SweptKeys};

/// Stamps of a record written before them: `{"until":..,"fetched":..}` in this test.
fn legacy(bytes: &[u8]) -> Option<(u64, u64)> {
    let v: serde_json::Value = serde_json::from_slice(bytes).ok()?;
    Some((v.get("until")?.as_u64()?, v.get("fetched")?.as_u64()?))
}

/// The sweep keeps only records still valid, the newest fetched first within the count and
/// byte bounds; records from before the stamps and unreadable ones are judged too.
#[test]
fn server_keys_past_validity_or_bounds_are_swept_oldest_first() {
    let (_dir, store) = store(4096);
    let now = 1_000_000;
    for (i, name) in ["a", "b", "c", "d", "e"].into_iter().enumerate() {
        let fetched = now - 100 + u64::try_from(i).unwrap();
        assert!(
            store
                .put_server_keys(name, b"{}", fetched, now + 10)
                .unwrap()
        );
    }
    assert!(store.put_server_keys("gone", b"{}", now - 50, now).unwrap());
    let raw = store.inner.server_keys.clone();
    raw.insert(
        "old-valid",
        br#"{"until":2000000,"fetched":999999}"#.to_vec(),
    )
    .unwrap();
    raw.insert("old-expired", br#"{"until":5,"fetched":1}"#.to_vec())
        .unwrap();
    raw.insert("garbage", b"{not json".to_vec()).unwrap();
    let bounds = KeyBounds {
        count: 4,
        bytes: u64::MAX,
    };
    let swept = store.sweep_server_keys(now, bounds, legacy).unwrap();
    assert_eq!(
        (swept.expired, swept.evicted, swept.kept),
        (3, 2, 4),
        "{swept:?}"
    );
    let kept: Vec<String> = raw
        .iter()
        .keys()
        .map(|k| String::from_utf8(k.unwrap().to_vec()).unwrap())
        .collect();
    assert_eq!(kept, ["c", "d", "e", "old-valid"]);
    assert_eq!(
        store.get_server_keys("e").unwrap().as_deref(),
        Some(&b"{}"[..])
    );
    assert_eq!(
        store.get_server_keys("old-valid").unwrap().as_deref(),
        Some(&br#"{"until":2000000,"fetched":999999}"#[..])
    );

    // The byte bound: the newest is the 34-byte legacy record, then a stamped `{}` of 18
    // bytes; 52 bytes keep those two and nothing older.
    let bytes = KeyBounds {
        count: 10,
        bytes: 52,
    };
    let swept = store.sweep_server_keys(now, bytes, legacy).unwrap();
    assert_eq!(
        swept,
        SweptKeys {
            expired: 0,
            evicted: 2,
            kept: 2,
            kept_bytes: 18 + 34,
        }
    );
}

/// A response too large to be genuine is not kept on disk.
#[test]
fn oversized_server_key_records_are_not_kept() {
    let (_dir, store) = store(4096);
    let big = vec![b' '; SERVER_KEY_RECORD_MAX + 1];
    assert!(!store.put_server_keys("big", &big, 1, 2).unwrap());
    assert_eq!(store.get_server_keys("big").unwrap(), None);
}
