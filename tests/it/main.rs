//! Integration tests: a real mxmedia on loopback with a temporary data dir, spoken to over HTTP.

#![allow(
    unreachable_pub,
    reason = "a test binary has no outside: its helpers are pub for the sibling modules"
)]
#![allow(
    clippy::indexing_slicing,
    clippy::as_conversions,
    reason = "test code: an index or a cast of a small literal that fails is a test failure"
)]
// Tests fail loudly by design: unwrap is the assertion.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod admin;
mod async_upload;
mod auth;
mod backup;
mod common;
mod doctor;
mod download;
mod export;
mod fake_dns;
mod fake_media;
mod fake_remote;
mod federation;
mod garage;
mod head;
mod import;
mod media_usage;
mod migrate;
mod moderation;
mod preview;
mod process;
mod redirect;
mod refused_body;
mod remote;
mod remote_stream;
mod s3;
mod s3_cache;
mod s3_engine;
mod s3_tidy;
mod s3_upload;
mod seaweed;
mod slow_clients;
mod thumbnail;
mod thumbnail_budget;
mod tls;
mod upload;
