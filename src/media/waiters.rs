//! Downloads waiting for an async upload (`timeout_ms`,
//! https://spec.matrix.org/v1.16/client-server-api/#get_matrixclientv1mediadownloadservernamemediaid),
//! registered by media id so that a `PUT` wakes only the waiters of the id it filled.
//!
//! The registry is bounded: an entry lives while someone waits on its id and goes with the last
//! waiter, whatever ends the wait (upload, timeout, disconnect). Past `MAX_WAITED_IDS` ids, new
//! waiters share one overflow signal that every upload wakes: they re-check the store and wait
//! again, which costs a lookup, never a missed upload.

use std::{
    collections::HashMap,
    sync::{
        Arc, Mutex,
        atomic::{AtomicU64, Ordering},
    },
};

use tokio::sync::Notify;

use crate::model::id::MediaKey;

/// Distinct ids waited on at once before waiters fall back to the shared overflow signal.
const MAX_WAITED_IDS: usize = 10_000;

#[derive(Default)]
pub(crate) struct Waiters {
    by_id: Mutex<HashMap<MediaKey, Arc<Notify>>>,
    overflow: Arc<Notify>,
    wakeups: AtomicU64,
}

/// One waiter's registration; dropping it removes the id's entry if it was the last.
pub(crate) struct Waiting<'a> {
    waiters: &'a Waiters,
    key: MediaKey,
    notify: Arc<Notify>,
}

impl Waiters {
    /// Registers interest in `key`. Take it before looking at the store, so an upload that
    /// lands in between is not missed.
    pub(crate) fn register(&self, key: &MediaKey) -> Waiting<'_> {
        let notify = match self.by_id.lock() {
            Ok(mut map) => {
                if let Some(notify) = map.get(key) {
                    Arc::clone(notify)
                } else if map.len() < MAX_WAITED_IDS {
                    let notify = Arc::new(Notify::new());
                    map.insert(key.clone(), Arc::clone(&notify));
                    notify
                } else {
                    Arc::clone(&self.overflow)
                }
            }
            Err(_) => Arc::clone(&self.overflow),
        };
        Waiting {
            waiters: self,
            key: key.clone(),
            notify,
        }
    }

    /// Wakes the waiters of `key` (and any overflow waiters) after its upload was committed.
    pub(crate) fn wake(&self, key: &MediaKey) {
        if let Ok(map) = self.by_id.lock()
            && let Some(notify) = map.get(key)
        {
            notify.notify_waiters();
        }
        self.overflow.notify_waiters();
    }

    /// Ids someone is waiting on now.
    pub(crate) fn waited_ids(&self) -> usize {
        self.by_id.lock().map(|m| m.len()).unwrap_or(0)
    }

    /// Waits that ended because an upload woke them, since start.
    pub(crate) fn wakeups(&self) -> u64 {
        self.wakeups.load(Ordering::Relaxed)
    }
}

impl Waiting<'_> {
    /// The signal to wait on; `enable` it before checking the store.
    pub(crate) fn notify(&self) -> &Notify {
        &self.notify
    }

    /// Counts a wait that an upload ended.
    pub(crate) fn woken(&self) {
        self.waiters.wakeups.fetch_add(1, Ordering::Relaxed);
        metrics::counter!("mxmedia_upload_waiter_wakeups_total").increment(1);
    }
}

impl Drop for Waiting<'_> {
    fn drop(&mut self) {
        if Arc::ptr_eq(&self.notify, &self.waiters.overflow) {
            return;
        }
        if let Ok(mut map) = self.waiters.by_id.lock()
            // Clones are only made under this lock: two references left are the map's and ours.
            && Arc::strong_count(&self.notify) == 2
            && map
                .get(&self.key)
                .is_some_and(|n| Arc::ptr_eq(n, &self.notify))
        {
            map.remove(&self.key);
        }
    }
}
