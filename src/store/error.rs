//! What the store fails with: the cases its callers tell apart (missing, taken, blocked, full,
//! not theirs) and the failures underneath it (sled, the file system, a record that does not
//! decode). It says nothing to clients: `error/convert.rs` writes what they are told.

/// A store operation's failure.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// No such media or blob, or it was deleted while being read or written.
    #[error("not found")]
    NotFound,
    /// The media id has content already (or, for a reservation, exists at all).
    #[error("the media id already has content")]
    Exists,
    /// An upload to a reserved id by someone other than the user who reserved it.
    #[error("the media id was reserved by another user")]
    NotUploader,
    /// An admin blocked the media id; nothing was kept.
    #[error("the media id is blocked")]
    Blocked,
    /// The disk is below its free-space floor.
    #[error("not enough free disk space")]
    NoSpace,
    #[error("sled: {0}")]
    Sled(#[from] sled::Error),
    #[error("io: {0}")]
    Io(std::io::Error),
    /// The blob backend (an S3 bucket) is unreachable or failing: not the store's own fault,
    /// and worth retrying later.
    #[error("blob backend: {0}")]
    Backend(String),
    /// A stored record that does not decode, or stored bytes that disagree with their record.
    #[error("corrupt store: {0}")]
    Corrupt(String),
    /// A record that could not be encoded.
    #[error("encoding a record: {0}")]
    Encode(#[source] serde_json::Error),
    /// A lock poisoned by a panic elsewhere: its data may be half changed.
    #[error("{0} poisoned")]
    Poisoned(&'static str),
    /// Blocking store work that panicked or was cancelled.
    #[error("store task lost: {0}")]
    TaskLost(#[from] tokio::task::JoinError),
    /// A caller broke a rule of the store's API (a bug in the crate, not a bad request).
    #[error("store misuse: {0}")]
    Misuse(&'static str),
}

impl From<std::io::Error> for StoreError {
    fn from(err: std::io::Error) -> Self {
        match err
            .get_ref()
            .and_then(|inner| inner.downcast_ref::<super::s3::BackendError>())
        {
            Some(backend) => Self::Backend(backend.to_string()),
            None => Self::Io(err),
        }
    }
}
