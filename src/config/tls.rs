//! The `[tls]` section: HTTPS on the main listener, certificate and key paths.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::ConfigError;

/// HTTPS on the main listener. Set both paths or neither; unset, the listener speaks plain HTTP
/// (the usual setup behind a reverse proxy that terminates TLS).
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TlsConfig {
    /// PEM certificate chain, leaf first. Re-read on SIGHUP, so a renewed certificate is served
    /// to new connections without a restart.
    pub cert: Option<PathBuf>,
    /// PEM private key (PKCS#8, PKCS#1 or SEC1) matching the certificate. Re-read with it.
    pub key: Option<PathBuf>,
}

impl TlsConfig {
    /// The certificate and key paths when HTTPS is on.
    pub fn paths(&self) -> Option<(&Path, &Path)> {
        match (&self.cert, &self.key) {
            (Some(cert), Some(key)) => Some((cert, key)),
            _ => None,
        }
    }

    pub(super) fn validate(&self) -> Result<(), ConfigError> {
        if self.cert.is_some() != self.key.is_some() {
            return Err(ConfigError::invalid(
                "MXMEDIA_TLS__CERT and MXMEDIA_TLS__KEY",
                "set both (HTTPS) or neither (plain HTTP)",
            ));
        }
        Ok(())
    }
}
