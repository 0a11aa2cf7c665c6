//! The wall clock as the crate stores it: milliseconds since the Unix epoch. Every stored time
//! (creation, expiry, last access, key validity) uses this one reading, so they compare.

use std::time::{SystemTime, UNIX_EPOCH};

/// Milliseconds since the epoch now; 0 before 1970 and `u64::MAX` far in the future.
pub fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
        .unwrap_or(0)
}
