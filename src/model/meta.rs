//! What we know about one piece of media besides its bytes.

use serde::{Deserialize, Serialize};

/// Stored as JSON in the `mediaid_meta` tree, keyed by `server/mediaId`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MediaMeta {
    /// The user who uploaded it, or who reserved the id with `/create`.
    pub uploader: String,
    /// Milliseconds since the epoch when the id was created.
    pub created_at: u64,
    #[serde(flatten)]
    pub state: MediaState,
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
