//! Decompression bombs are refused from the header: fast, and without the memory a decode takes.
//!
//! Its own test binary, so the process's peak RSS reflects these tests only.

// Helpers outside `#[test]` functions are test code too: a panic there is a test failure.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::{Duration, Instant};

use mxmedia_image::{Error, Limits, Method, probe, thumbnail};

const BOMB: &[u8] = include_bytes!("fixtures/bomb_50000x50000.png");
const BOMB_VALID: &[u8] = include_bytes!("fixtures/bomb_valid_20000x20000.png");

/// Peak resident set size of this process in KiB, from /proc (Linux only; `None` elsewhere).
fn peak_rss_kib() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

/// Both bombs give `TooLarge` with their declared pixel count, in well under a second, and the
/// process never grows by anything like the 1.6–10 GB a decode would take.
#[test]
fn bombs_refused_from_header() {
    let before = peak_rss_kib();
    for (src, pixels) in [(BOMB, 2_500_000_000u64), (BOMB_VALID, 400_000_000)] {
        for (method, animated) in [(Method::Crop, false), (Method::Scale, true)] {
            let start = Instant::now();
            let result = thumbnail(src, 96, 96, method, animated, &Limits::default());
            let elapsed = start.elapsed();
            assert!(
                matches!(result, Err(Error::TooLarge { pixels: p }) if p == pixels),
                "{result:?}"
            );
            assert!(elapsed < Duration::from_secs(1), "took {elapsed:?}");
        }
        assert!(probe(src).is_ok(), "the header itself is readable");
    }
    if let (Some(before), Some(after)) = (before, peak_rss_kib()) {
        assert!(
            after - before < 64 * 1024,
            "peak RSS grew by {} KiB",
            after - before
        );
    }
}
