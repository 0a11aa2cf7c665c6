//! Integration tests: a real mxmedia on loopback with a temporary data dir, spoken to over HTTP.

// Tests fail loudly by design: unwrap is the assertion.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod admin;
mod async_upload;
mod auth;
mod backup;
mod common;
mod doctor;
mod download;
mod fake_dns;
mod fake_media;
mod fake_remote;
mod federation;
mod head;
mod moderation;
mod preview;
mod process;
mod remote;
mod slow_clients;
mod thumbnail;
mod thumbnail_budget;
mod tls;
mod upload;
