//! `MediaKey`: the `{serverName}/{mediaId}` pair of an `mxc://` URI. Its parts are validated
//! when parsed (`mxmedia_proto::ids`), so nothing unchecked reaches storage or a URL.

use std::fmt;

use mxmedia_proto::ids::{MediaId, ServerName};

/// Identifies one piece of media: where it comes from and its id there.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct MediaKey {
    pub server_name: ServerName,
    pub media_id: MediaId,
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
