//! What we know about one piece of media besides its bytes.

use serde::{Deserialize, Serialize};

/// The `uploader` of images stored for URL previews. They are nobody's uploads: no user's quota,
/// media list, statistics or deletion sees them, and they expire with the preview cache. The
/// name can be neither a user id (no `@`) nor a server name (remote media's uploader).
pub const PREVIEW_UPLOADER: &str = "(url preview)";

/// Stored as JSON in the `mediaid_meta` tree, keyed by `server/mediaId`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MediaMeta {
    /// The user who uploaded it, or who reserved the id with `/create`; remote media's server
    /// name; `PREVIEW_UPLOADER` for a URL preview's image.
    pub uploader: String,
    /// Milliseconds since the epoch when the id was created.
    pub created_at: u64,
    #[serde(flatten)]
    pub state: MediaState,
}

impl MediaMeta {
    /// Whether this is an image stored for a URL preview rather than anybody's upload.
    pub fn is_preview_image(&self) -> bool {
        self.uploader == PREVIEW_UPLOADER
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "state", rename_all = "snake_case")]
pub enum MediaState {
    /// Reserved by `/create`, no bytes yet.
    Pending { unused_expires_at: u64 },
    /// Bytes stored.
    Complete(Content),
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Content {
    /// The type the uploader declared, stored verbatim (`application/octet-stream` when absent).
    pub content_type: String,
    pub filename: Option<String>,
    pub len: u64,
    /// Hex sha256 of the bytes: the blob's address and the strong ETag.
    pub sha256: String,
}
