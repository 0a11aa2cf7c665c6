//! The budget's accounting, against a file system whose free space the test fixes: a real
//! disk shared with other writers would move under the test.

use std::{
    path::Path,
    sync::atomic::{AtomicU64, Ordering},
    time::Duration,
};

use super::{DiskBudget, RESERVE_STEP};
use crate::{config::FreeSpace, store::StoreError};

const STEP: u64 = RESERVE_STEP;

/// 100 steps free of 1000; with a floor of 90 steps, 10 steps may be reserved.
fn fixed(_: &Path) -> crate::store::Result<(u64, u64)> {
    Ok((100 * STEP, 1000 * STEP))
}

fn budget(ttl: Duration, probe: super::Probe) -> DiskBudget {
    DiskBudget::with_probe(
        std::env::temp_dir(),
        FreeSpace::Bytes(90 * STEP),
        ttl,
        probe,
    )
}

fn refused(result: crate::store::Result<()>) -> bool {
    matches!(result, Err(StoreError::NoSpace))
}

/// Reservations of concurrent streams add up: once their sum would cross the floor the next
/// step is refused, and what a finished stream never wrote is free again at once.
#[tokio::test]
async fn reservations_add_up_and_are_given_back() {
    let budget = budget(Duration::from_secs(3600), fixed);
    let mut a = budget.reservation();
    let mut b = budget.reservation();
    a.cover(6 * STEP).await.unwrap();
    b.cover(4 * STEP).await.unwrap();
    assert!(refused(b.cover(4 * STEP + 1).await));
    assert!(refused(budget.check(1).await));
    // a ends having written nothing: all six steps are back at once.
    a.keep();
    assert_eq!(budget.reserved(), 4 * STEP);
    b.cover(10 * STEP).await.unwrap();
    assert!(refused(b.cover(10 * STEP + 1).await));
    drop(b);
    assert_eq!(budget.reserved(), 0);
}

/// A reservation grows in whole steps, so most chunks take no lock.
#[tokio::test]
async fn reservations_grow_in_steps() {
    let budget = budget(Duration::from_secs(3600), fixed);
    let mut a = budget.reservation();
    a.cover(1).await.unwrap();
    assert_eq!(budget.reserved(), STEP);
    a.cover(STEP).await.unwrap();
    assert_eq!(budget.reserved(), STEP);
    a.cover(STEP + 1).await.unwrap();
    assert_eq!(budget.reserved(), 2 * STEP);
}

static SHRINKING_CALLS: AtomicU64 = AtomicU64::new(0);

/// Each reading shows two more steps used, as if a stream's writes had landed.
fn shrinking(_: &Path) -> crate::store::Result<(u64, u64)> {
    let n = SHRINKING_CALLS.fetch_add(1, Ordering::SeqCst);
    Ok(((100 - 2 * n) * STEP, 1000 * STEP))
}

/// Written bytes are counted once: a reading that shows them on disk takes them off the
/// reservations, so a stream's bytes never count twice against the floor.
#[tokio::test]
async fn a_reading_takes_written_bytes_off_the_reservations() {
    let budget = budget(Duration::ZERO, shrinking);
    let mut a = budget.reservation();
    a.cover(4 * STEP).await.unwrap();
    a.wrote(2 * STEP);
    // The next admission reads the disk again (TTL zero): 98 steps free, 2 of a's 4 steps
    // are on disk, 2 still reserved: 6 steps may still be reserved, not 4.
    let mut b = budget.reservation();
    b.cover(6 * STEP).await.unwrap();
    assert_eq!(budget.reserved(), 8 * STEP);
    drop(b);
    drop(a);
    assert_eq!(budget.reserved(), 0);
}

static COUNTED_CALLS: AtomicU64 = AtomicU64::new(0);

fn counted(path: &Path) -> crate::store::Result<(u64, u64)> {
    COUNTED_CALLS.fetch_add(1, Ordering::SeqCst);
    fixed(path)
}

/// The disk is read at most once per TTL while reservations fit, and again right after a
/// stream discarded written bytes, whose space is then free.
#[tokio::test]
async fn readings_are_cached_until_bytes_are_discarded() {
    let budget = budget(Duration::from_secs(3600), counted);
    let mut a = budget.reservation();
    for step in 1..=5 {
        a.cover(step * STEP).await.unwrap();
    }
    assert_eq!(COUNTED_CALLS.load(Ordering::SeqCst), 1);
    a.wrote(STEP);
    drop(a);
    let mut b = budget.reservation();
    b.cover(STEP).await.unwrap();
    assert_eq!(COUNTED_CALLS.load(Ordering::SeqCst), 2);
}
