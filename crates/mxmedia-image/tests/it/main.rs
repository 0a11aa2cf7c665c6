//! Integration tests of the public API: fixtures, generated images, animations.
//!
//! One binary (so one link); the bomb test with its memory measurement has its own, `bombs.rs`.

// Helpers outside `#[test]` functions are test code too: a panic there is a test failure.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod animated;
mod common;
mod costly;
mod fixtures;
mod generated;
