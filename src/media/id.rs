//! Media identifiers: the `{serverName}/{mediaId}` pair of an `mxc://` URI, validated once at the
//! edge so that nothing unchecked ever reaches storage or an outgoing URL. The grammar lives in
//! `mxmedia_proto::ids`; this module maps its errors to the client errors the spec suggests.

use std::fmt;

pub use mxmedia_proto::ids::{HostKind, MediaId, ServerName};

use crate::error::Error;

/// A server name from a path or config: malformed is 400 `M_INVALID_PARAM`.
pub fn parse_server_name(raw: &str) -> Result<ServerName, Error> {
    raw.parse()
        .map_err(|_| Error::InvalidParam("Invalid server name".into()))
}

/// A media id from a path: one outside the grammar cannot exist here, so it is 404.
pub fn parse_media_id(raw: &str) -> Result<MediaId, Error> {
    raw.parse().map_err(|_| Error::NotFound)
}

/// Identifies one piece of media: where it comes from and its id there.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct MediaKey {
    pub server_name: ServerName,
    pub media_id: MediaId,
}

impl MediaKey {
    /// The sled key: `server_name` and `media_id` joined by `/`, which neither may contain.
    pub fn db_key(&self) -> Vec<u8> {
        format!("{}/{}", self.server_name.as_str(), self.media_id.as_str()).into_bytes()
    }
}

impl fmt::Display for MediaKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "mxc://{}/{}",
            self.server_name.as_str(),
            self.media_id.as_str()
        )
    }
}

#[cfg(test)]
mod tests {
    use super::{parse_media_id, parse_server_name};

    /// Path input maps to the errcodes clients get: bad server names 400, impossible ids 404.
    #[test]
    fn parse_errors_map_to_client_errors() {
        assert_eq!(
            parse_server_name("exa mple.org").unwrap_err().errcode(),
            "M_INVALID_PARAM"
        );
        assert_eq!(
            parse_media_id("../etc").unwrap_err().errcode(),
            "M_NOT_FOUND"
        );
        assert!(parse_server_name("example.org:8448").is_ok());
        assert!(parse_media_id("abcDEF123_-").is_ok());
    }
}
