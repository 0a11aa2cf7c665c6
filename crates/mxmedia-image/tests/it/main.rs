//! Integration tests of the public API: fixtures, generated images, animations.
//!
//! One binary (so one link); the bomb test with its memory measurement has its own, `bombs.rs`.

#![allow(
    unreachable_pub,
    reason = "a test binary has no outside: its helpers are pub for the sibling modules"
)]
#![allow(
    clippy::indexing_slicing,
    clippy::as_conversions,
    reason = "test code: an index or a cast of a small literal that fails is a test failure"
)]
// Helpers outside `#[test]` functions are test code too: a panic there is a test failure.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod animated;
mod common;
mod costly;
mod fixtures;
mod generated;
