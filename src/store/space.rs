//! The free-space floor, shared by everything that brings new bytes in (uploads and remote
//! fetches): sled is known to corrupt itself on a full disk, so the data dir's file system keeps
//! `min_free_space` free.
//!
//! Checking the disk once per request is not enough: twenty uploads that each fit start at
//! once, and chunked ones declare no length. So every stream reserves bytes as it receives
//! them, in steps, against one shared budget: the last free-space reading minus what streams
//! have reserved and the reading does not show yet. The reading (`statvfs`) is cached briefly,
//! and taken again before refusing anyone, so a refusal never rests on a stale number.
//!
//! Accounting: a stream's reservation covers bytes it has received and bytes it is about to
//! write. Once bytes are written, the next reading shows them as used, so a reading subtracts
//! the bytes written before it began from what is reserved. When a stream ends, what it
//! reserved but never wrote is given back at once; its written bytes stay counted until a
//! reading shows them (committed) or shows them gone (discarded: the next reservation takes a
//! fresh reading instead of waiting for the cache to age).
//!
//! This module does not know about HTTP or federation: callers map `InsufficientStorage`.

use std::{
    path::{Path, PathBuf},
    sync::{Arc, Mutex, MutexGuard},
    time::{Duration, Instant},
};

use super::{Result, StoreError};
use crate::config::FreeSpace;

/// How long a free-space reading is trusted while nothing was discarded.
const READING_TTL: Duration = Duration::from_secs(1);

/// Streams reserve in steps of this many bytes, so the shared lock is taken once per step, not
/// once per network chunk. A stream holds at most this much more than it received.
pub const RESERVE_STEP: u64 = 1024 * 1024;

/// The shared budget; cheap to clone.
#[derive(Clone)]
pub struct DiskBudget {
    inner: Arc<Inner>,
}

/// Reads (available, total) bytes of the file system holding a path.
type Probe = fn(&Path) -> Result<(u64, u64)>;

struct Inner {
    dir: PathBuf,
    floor: FreeSpace,
    ttl: Duration,
    probe: Probe,
    state: Mutex<State>,
    /// One reading at a time: two overlapping readings would both subtract the same written
    /// bytes from `reserved`.
    refresh: tokio::sync::Mutex<()>,
}

#[derive(Default)]
struct State {
    reading: Option<Reading>,
    /// Bytes reserved by streams that the last reading does not show as used.
    reserved: u64,
    /// Of `reserved`, bytes written since the last reading began: the next one shows them.
    written_since: u64,
    /// Streams ended without keeping their bytes; a reading taken before the last of these is
    /// not trusted, since it counts bytes that are gone.
    discards: u64,
}

#[derive(Clone, Copy)]
struct Reading {
    taken: Instant,
    available: u64,
    floor: u64,
    discards: u64,
}

impl State {
    fn fits(&self, reading: &Reading, more: u64) -> bool {
        reading
            .floor
            .saturating_add(self.reserved)
            .saturating_add(more)
            <= reading.available
    }

    fn fresh(&self, ttl: Duration) -> Option<Reading> {
        self.reading
            .filter(|r| r.discards == self.discards && r.taken.elapsed() < ttl)
    }
}

impl DiskBudget {
    pub fn new(dir: PathBuf, floor: FreeSpace) -> Self {
        Self::with_probe(dir, floor, READING_TTL, statvfs)
    }

    fn with_probe(dir: PathBuf, floor: FreeSpace, ttl: Duration, probe: Probe) -> Self {
        Self {
            inner: Arc::new(Inner {
                dir,
                floor,
                ttl,
                probe,
                state: Mutex::new(State::default()),
                refresh: tokio::sync::Mutex::new(()),
            }),
        }
    }

    /// A new, empty reservation for one stream.
    pub fn reservation(&self) -> Reservation {
        Reservation {
            budget: self.clone(),
            reserved: 0,
            written: 0,
            kept: false,
        }
    }

    /// Refuses unless `incoming` more bytes would fit now, reserving nothing: for a declared
    /// length, so a request that cannot fit is refused before its body is read.
    pub async fn check(&self, incoming: u64) -> Result<()> {
        self.admit(incoming, false).await
    }

    /// Bytes currently reserved and not yet shown by a reading (for tests and metrics).
    pub fn reserved(&self) -> u64 {
        self.lock().map(|s| s.reserved).unwrap_or(0)
    }

    async fn admit(&self, more: u64, reserve: bool) -> Result<()> {
        let asked = Instant::now();
        {
            let mut state = self.lock()?;
            if let Some(reading) = state.fresh(self.inner.ttl)
                && state.fits(&reading, more)
            {
                if reserve {
                    state.reserved = state.reserved.saturating_add(more);
                }
                return Ok(());
            }
        }
        // Stale, untrusted or short: look at the disk before deciding.
        let reading = self.refresh(asked).await?;
        let mut state = self.lock()?;
        if state.fits(&reading, more) {
            if reserve {
                state.reserved = state.reserved.saturating_add(more);
            }
            return Ok(());
        }
        tracing::warn!(
            available = reading.available,
            floor = reading.floor,
            in_flight = state.reserved,
            wanted = more,
            "refusing new media: free disk space would go below MXMEDIA_STORE__MIN_FREE_SPACE"
        );
        Err(StoreError::NoSpace)
    }

    /// A reading taken after `asked`: one another request just took, or a new one.
    async fn refresh(&self, asked: Instant) -> Result<Reading> {
        let _gate = self.inner.refresh.lock().await;
        let snapshot = {
            let state = self.lock()?;
            if let Some(reading) = state.reading
                && reading.taken >= asked
            {
                return Ok(reading);
            }
            (state.written_since, state.discards)
        };
        let taken = Instant::now();
        let dir = self.inner.dir.clone();
        let probe = self.inner.probe;
        let (available, total) = tokio::task::spawn_blocking(move || probe(&dir))
            .await
            .map_err(StoreError::TaskLost)??;
        let floor = self.inner.floor.bytes(total);
        let mut state = self.lock()?;
        let (written, discards) = snapshot;
        // Written before the snapshot, so on disk when statvfs looked: no longer in flight.
        state.reserved = state.reserved.saturating_sub(written);
        state.written_since = state.written_since.saturating_sub(written);
        let reading = Reading {
            taken,
            available,
            floor,
            discards,
        };
        state.reading = Some(reading);
        Ok(reading)
    }

    fn lock(&self) -> Result<MutexGuard<'_, State>> {
        self.inner
            .state
            .lock()
            .map_err(|_| StoreError::Poisoned("disk budget"))
    }
}

fn statvfs(dir: &Path) -> Result<(u64, u64)> {
    let stat = nix::sys::statvfs::statvfs(dir).map_err(std::io::Error::from)?;
    let frsize = stat.fragment_size();
    Ok((
        stat.blocks_available().saturating_mul(frsize),
        stat.blocks().saturating_mul(frsize),
    ))
}

/// One stream's share of the budget. Dropped without `keep`, its bytes count as discarded.
pub struct Reservation {
    budget: DiskBudget,
    reserved: u64,
    written: u64,
    kept: bool,
}

impl Reservation {
    /// Makes sure `total` bytes of this stream are covered, reserving the next step if not:
    /// 507 `InsufficientStorage` when that would take the disk below the floor.
    pub async fn cover(&mut self, total: u64) -> Result<()> {
        if total <= self.reserved {
            return Ok(());
        }
        let wanted = total
            .div_ceil(RESERVE_STEP)
            .saturating_mul(RESERVE_STEP)
            .saturating_sub(self.reserved);
        self.budget.admit(wanted, true).await?;
        self.reserved = self.reserved.saturating_add(wanted);
        Ok(())
    }

    /// Records that `len` more bytes reached the disk (after the write returned).
    pub fn wrote(&mut self, len: u64) {
        let len = len.min(self.reserved.saturating_sub(self.written));
        self.written += len;
        if let Ok(mut state) = self.budget.lock() {
            state.written_since = state.written_since.saturating_add(len);
        }
    }

    /// The stream's bytes stay on disk (they are about to be committed): what was reserved
    /// and never written is given back.
    pub fn keep(mut self) {
        self.kept = true;
    }
}

impl Drop for Reservation {
    fn drop(&mut self) {
        let unwritten = self.reserved.saturating_sub(self.written);
        if let Ok(mut state) = self.budget.lock() {
            state.reserved = state.reserved.saturating_sub(unwritten);
            if !self.kept && self.written > 0 {
                state.discards += 1;
            }
        }
    }
}

#[cfg(test)]
mod tests;
