//! `MxcUri`: `mxc://<server-name>/<media-id>` ([spec: mxc URIs](https://spec.matrix.org/v1.16/client-server-api/#matrix-content-mxc-uris)), split into its two validated halves.

use std::str::FromStr;

use crate::error::{Error, Result};
use crate::ids::{MediaId, ServerName};

/// A parsed `mxc://` URI. Its text form is rebuilt from the parts, which round-trips exactly
/// because neither part can contain `/`.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct MxcUri {
    text: String,
    server_name: ServerName,
    media_id: MediaId,
}

impl MxcUri {
    /// Builds `mxc://{server_name}/{media_id}`.
    pub fn new(server_name: ServerName, media_id: MediaId) -> Self {
        let text = format!("mxc://{server_name}/{media_id}");
        Self {
            text,
            server_name,
            media_id,
        }
    }

    /// The origin server of the media.
    pub fn server_name(&self) -> &ServerName {
        &self.server_name
    }

    /// The media ID on that server.
    pub fn media_id(&self) -> &MediaId {
        &self.media_id
    }

    /// The URI as text.
    pub fn as_str(&self) -> &str {
        &self.text
    }

    /// Splits into (server name, media ID).
    pub fn into_parts(self) -> (ServerName, MediaId) {
        (self.server_name, self.media_id)
    }
}

impl FromStr for MxcUri {
    type Err = Error;

    fn from_str(s: &str) -> Result<Self> {
        let Some(rest) = s.strip_prefix("mxc://") else {
            return Err(Error::InvalidMxcUri("does not start with mxc://"));
        };
        let Some((server, media)) = rest.split_once('/') else {
            return Err(Error::InvalidMxcUri("no media id"));
        };
        let server_name = server
            .parse()
            .map_err(|_| Error::InvalidMxcUri("invalid server name"))?;
        let media_id = media
            .parse()
            .map_err(|_| Error::InvalidMxcUri("invalid media id"))?;
        Ok(Self::new(server_name, media_id))
    }
}

super::string_newtype!(MxcUri);
