//! Shared application state, built once before the HTTP workers start.

use std::sync::Arc;

use crate::{
    auth::Authenticator,
    config::Config,
    federation::{Federation, identity::Identity, keyring::KeyRing},
    media::MediaService,
};

pub struct AppState {
    pub config: Config,
    pub media: MediaService,
    pub auth: Authenticator,
    pub federation: Federation,
    pub federation_identity: Arc<Identity>,
    pub key_ring: KeyRing,
}

/// Per-worker state: awc's clients are tied to the thread that made them.
pub struct WorkerState {
    /// Talks to our homeserver (token checks).
    pub http: awc::Client,
    /// Talks to other servers, through the SSRF guard.
    pub federation: awc::Client,
}

impl WorkerState {
    pub fn new(tls: Arc<rustls::ClientConfig>, federation: &Federation) -> Self {
        let http = awc::Client::builder()
            .connector(awc::Connector::new().rustls_0_23(tls))
            .add_default_header(("user-agent", concat!("mxmedia/", env!("CARGO_PKG_VERSION"))))
            .disable_redirects()
            .finish();
        Self {
            http,
            federation: federation.client(),
        }
    }
}
