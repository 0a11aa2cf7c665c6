//! Integration tests of the public API: fixtures, generated images, animations.
//!
//! One binary (so one link); the bomb test with its memory measurement has its own, `bombs.rs`.

mod animated;
mod common;
mod fixtures;
mod generated;
