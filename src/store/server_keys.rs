//! Remote servers' key responses kept across restarts (`servername_keys`), and their sweep.
//!
//! Any server can make us fetch and keep its keys by signing a request, so the tree is bounded:
//! each record carries until when it may be kept and when it was fetched, the periodic sweep
//! drops records past that time, then the oldest fetched beyond `KeyBounds` (count and bytes).
//! Losing a record costs at most one more fetch; the key ring asks again when it finds none.
//!
//! Value layout: keep-until (ms, big-endian), fetched-at (ms, big-endian), then the record the
//! key ring wrote. Records kept before the stamps existed are the record alone, a JSON object
//! (so they start with `{`, never with the zero high byte of a stamp): the sweep asks the
//! caller for their stamps.

use super::{Result, Store, read_u64};

/// Size of the two stamps in front of a record.
const STAMPS: usize = 16;

/// A record larger than this is used from memory but not kept: a genuine key response is about
/// a kilobyte (a few keys and signatures), while the fetch allows 512 KiB, which would let a few
/// hostile servers fill the byte bound with one response each.
pub const SERVER_KEY_RECORD_MAX: usize = 16 * 1024;

/// What the sweep keeps at most, newest fetched first.
#[derive(Debug, Clone, Copy)]
pub struct KeyBounds {
    pub count: usize,
    pub bytes: u64,
}

impl Default for KeyBounds {
    /// 20,000 origins (more than a media repository serving a large federation talks to in a
    /// week) and 32 MiB: at about a kilobyte a record, the count binds first for genuine
    /// servers, the bytes for large hostile ones.
    fn default() -> Self {
        Self {
            count: 20_000,
            bytes: 32 * 1024 * 1024,
        }
    }
}

/// What a sweep of the key records did.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct SweptKeys {
    /// Past their keep-until time, or unreadable.
    pub expired: usize,
    /// Beyond the bounds, oldest fetched first.
    pub evicted: usize,
    pub kept: usize,
    pub kept_bytes: u64,
}

/// A stored value split into its parts: stamps (`None` for a record kept before they existed)
/// and the record.
fn split(value: &[u8]) -> (Option<(u64, u64)>, &[u8]) {
    match value.first() {
        Some(b'{') | None => (None, value),
        Some(_) => match value.split_at_checked(STAMPS) {
            Some((stamps, record)) => {
                let (until, fetched) = stamps.split_at(8);
                (Some((read_u64(until), read_u64(fetched))), record)
            }
            None => (None, value),
        },
    }
}

impl Store {
    /// The key record kept for `server`, as given to `put_server_keys`.
    pub fn get_server_keys(&self, server: &str) -> Result<Option<Vec<u8>>> {
        Ok(self
            .inner
            .server_keys
            .get(server)?
            .map(|v| split(&v).1.to_vec()))
    }

    /// Keeps a server's key record fetched at `fetched_at_ms` until `keep_until_ms`, flushed:
    /// fetches are rare, and a restart after a crash should not make every origin's keys be
    /// fetched again at once. A record over `SERVER_KEY_RECORD_MAX` is not kept (`false`).
    pub fn put_server_keys(
        &self,
        server: &str,
        record: &[u8],
        fetched_at_ms: u64,
        keep_until_ms: u64,
    ) -> Result<bool> {
        if record.len() > SERVER_KEY_RECORD_MAX {
            return Ok(false);
        }
        let mut value = Vec::with_capacity(STAMPS + record.len());
        value.extend_from_slice(&keep_until_ms.to_be_bytes());
        value.extend_from_slice(&fetched_at_ms.to_be_bytes());
        value.extend_from_slice(record);
        let _gate = self.writing()?;
        self.inner.server_keys.insert(server, value)?;
        self.inner.server_keys.flush()?;
        Ok(true)
    }

    /// Removes the records past their keep-until time at `now_ms`, then the oldest fetched
    /// beyond `bounds`. `legacy` gives `(keep_until, fetched_at)` for a record kept without
    /// stamps (`None`: it is unreadable and goes). A record replaced while the sweep runs is
    /// left for the next one.
    pub fn sweep_server_keys(
        &self,
        now_ms: u64,
        bounds: KeyBounds,
        legacy: impl Fn(&[u8]) -> Option<(u64, u64)>,
    ) -> Result<SweptKeys> {
        let _gate = self.writing()?;
        let tree = &self.inner.server_keys;
        let mut swept = SweptKeys::default();
        let mut live = Vec::new();
        for entry in tree.iter() {
            let (key, value) = entry?;
            let (stamps, record) = split(&value);
            match stamps.or_else(|| legacy(record)) {
                Some((until, fetched)) if now_ms < until => {
                    live.push((fetched, key, u64::try_from(value.len()).unwrap_or(u64::MAX)));
                }
                _ => {
                    if tree
                        .compare_and_swap(&key, Some(&value), None::<&[u8]>)?
                        .is_ok()
                    {
                        swept.expired += 1;
                    }
                }
            }
        }
        // Newest first: servers that keep talking to us are fetched again and stay.
        live.sort_unstable_by_key(|entry| std::cmp::Reverse(entry.0));
        let mut full = false;
        for (fetched, key, len) in live {
            let bytes = swept.kept_bytes.saturating_add(len);
            full = full || swept.kept >= bounds.count || bytes > bounds.bytes;
            if !full {
                swept.kept += 1;
                swept.kept_bytes = bytes;
                continue;
            }
            let Some(current) = tree.get(&key)? else {
                continue;
            };
            let (stamps, record) = split(&current);
            if stamps.or_else(|| legacy(record)).map(|(_, f)| f) == Some(fetched)
                && tree
                    .compare_and_swap(&key, Some(&current), None::<&[u8]>)?
                    .is_ok()
            {
                swept.evicted += 1;
            }
        }
        Ok(swept)
    }
}
