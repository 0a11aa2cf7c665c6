//! Shared application state, built once before the HTTP workers start.

use std::sync::Arc;

use crate::{auth::Authenticator, config::Config, media::MediaService};

pub struct AppState {
    pub config: Config,
    pub media: MediaService,
    pub auth: Authenticator,
}

/// Per-worker state: awc's client is tied to the thread that made it.
pub struct WorkerState {
    pub http: awc::Client,
}

impl WorkerState {
    pub fn new(tls: Arc<rustls::ClientConfig>) -> Self {
        let http = awc::Client::builder()
            .connector(awc::Connector::new().rustls_0_23(tls))
            .add_default_header(("user-agent", concat!("mxmedia/", env!("CARGO_PKG_VERSION"))))
            .disable_redirects()
            .finish();
        Self { http }
    }
}
