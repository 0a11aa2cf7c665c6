//! Shared application state, built once before the HTTP workers start.

use std::sync::Arc;

use crate::{
    auth::Authenticator,
    config::Config,
    federation::{Federation, identity::Identity, keyring::KeyRing},
    media::MediaService,
    preview::Previews,
};

pub struct AppState {
    pub config: Config,
    /// Shared with `preview`, which stores preview images as local media.
    pub media: Arc<MediaService>,
    pub auth: Authenticator,
    pub federation: Federation,
    pub federation_identity: Arc<Identity>,
    pub key_ring: KeyRing,
    pub preview: Previews,
}

/// Per-worker state: awc's clients are tied to the thread that made them.
pub struct WorkerState {
    /// Talks to our homeserver (token checks).
    pub http: awc::Client,
    /// Talks to other servers, through the SSRF guard.
    pub federation: awc::Client,
    /// Fetches pages for URL previews, through the preview guard; `None` when previews are off.
    pub preview: Option<awc::Client>,
}

impl WorkerState {
    pub fn new(
        tls: Arc<rustls::ClientConfig>,
        federation: &Federation,
        previews: &Previews,
    ) -> Self {
        Self {
            http: homeserver_client(tls),
            federation: federation.client(),
            preview: previews.client(),
        }
    }
}

/// A client for our own homeserver (token checks, its published keys): plain TLS with `tls`,
/// no redirects followed.
pub fn homeserver_client(tls: Arc<rustls::ClientConfig>) -> awc::Client {
    awc::Client::builder()
        .connector(awc::Connector::new().rustls_0_23(tls))
        .add_default_header(("user-agent", concat!("mxmedia/", env!("CARGO_PKG_VERSION"))))
        .disable_redirects()
        .finish()
}
