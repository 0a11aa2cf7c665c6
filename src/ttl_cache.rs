//! A bounded cache whose entries also expire: the one shape for every in-memory map keyed by
//! something an outsider chooses (server names, tokens, media ids).
//!
//! Size is bounded by `quick_cache` (scan-resistant, close to LRU: a name used again and again
//! survives a flood of names used once), never by clearing everything when full. Each entry
//! carries its own deadline, checked on read, so a lifetime set by the remote side (a DNS TTL,
//! `Cache-Control`) is honoured. Reads and writes take the current instant as an argument in
//! their `_at` forms so tests can move time without sleeping.

use std::{hash::Hash, time::Instant};

use quick_cache::{Weighter, sync::Cache};

/// Each entry weighs 1: the capacity is a count of entries.
#[derive(Clone, Copy, Default)]
pub struct Count;

impl<K, V> Weighter<K, (Instant, V)> for Count {
    fn weight(&self, _key: &K, _value: &(Instant, V)) -> u64 {
        1
    }
}

pub struct TtlCache<K, V, W = Count> {
    inner: Cache<K, (Instant, V), W>,
}

impl<K: Eq + Hash + Clone, V: Clone> TtlCache<K, V> {
    /// At most `capacity` entries.
    pub fn new(capacity: usize) -> Self {
        Self {
            inner: Cache::with_weighter(
                capacity,
                u64::try_from(capacity).unwrap_or(u64::MAX),
                Count,
            ),
        }
    }
}

impl<K, V, W> TtlCache<K, V, W>
where
    K: Eq + Hash + Clone,
    V: Clone,
    W: Weighter<K, (Instant, V)> + Clone,
{
    /// At most `budget` in total weight (e.g. bytes), for entries whose size an outsider
    /// chooses; `estimated_items` only sizes the table.
    pub fn weighted(estimated_items: usize, budget: u64, weighter: W) -> Self {
        Self {
            inner: Cache::with_weighter(estimated_items, budget, weighter),
        }
    }

    pub fn get(&self, key: &K) -> Option<V> {
        self.get_at(key, Instant::now())
    }

    /// The value if it is still fresh at `now`; a stale one is dropped.
    pub fn get_at(&self, key: &K, now: Instant) -> Option<V> {
        let (until, value) = self.inner.get(key)?;
        if until > now {
            Some(value)
        } else {
            self.inner.remove_if(key, |(until, _)| *until <= now);
            None
        }
    }

    /// Keeps `value` until `until` (or until evicted to make room).
    pub fn insert(&self, key: K, value: V, until: Instant) {
        self.inner.insert(key, (until, value));
    }

    pub fn remove(&self, key: &K) {
        self.inner.remove(key);
    }

    /// Entries held, fresh or not yet noticed stale.
    pub fn len(&self) -> usize {
        self.inner.len()
    }

    pub fn is_empty(&self) -> bool {
        self.inner.is_empty()
    }

    /// The bound, in entries (or weight for a weighted cache).
    pub fn capacity(&self) -> u64 {
        self.inner.capacity()
    }
}

#[cfg(test)]
mod tests {
    use std::time::{Duration, Instant};

    use super::TtlCache;

    /// However many distinct names arrive, the cache holds at most its capacity, and a name
    /// in steady use stays while one-time names are evicted.
    #[test]
    fn bounded_and_keeps_what_is_used() {
        let cache = TtlCache::<String, u32>::new(64);
        let until = Instant::now() + Duration::from_secs(60);
        cache.insert("busy.example".into(), 0, until);
        for i in 0..10_000 {
            cache.insert(format!("flood{i}.example"), i, until);
            if i % 8 == 0 {
                assert_eq!(cache.get(&"busy.example".into()), Some(0), "after {i}");
            }
            assert!(cache.len() <= 64, "{} entries after {i}", cache.len());
        }
        assert_eq!(cache.get(&"busy.example".into()), Some(0));
    }

    /// An entry is served until its own deadline and never after.
    #[test]
    fn entries_expire_at_their_deadline() {
        let cache = TtlCache::<&str, u32>::new(8);
        let t0 = Instant::now();
        cache.insert("short", 1, t0 + Duration::from_secs(5));
        cache.insert("long", 2, t0 + Duration::from_secs(3600));
        assert_eq!(cache.get_at(&"short", t0 + Duration::from_secs(4)), Some(1));
        assert_eq!(cache.get_at(&"short", t0 + Duration::from_secs(5)), None);
        assert_eq!(cache.len(), 1, "the stale entry is dropped when noticed");
        assert_eq!(cache.get_at(&"long", t0 + Duration::from_secs(5)), Some(2));
    }
}
