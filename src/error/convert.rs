//! Each layer's error turned into the Matrix error a client sees: the one place where what a
//! store, thumbnailer or remote fetch failure means for a request is decided, and its message
//! written.
//! Status codes and errcodes are those of the spec's
//! [standard error responses](https://spec.matrix.org/v1.16/client-server-api/#standard-error-response).

use super::Error;
use crate::{
    federation::media::FetchFailure,
    store::StoreError,
    thumbnail::{self, PoolError},
};

impl From<StoreError> for Error {
    fn from(err: StoreError) -> Self {
        match err {
            // A blocked id answers as a missing one: the uploader learns nothing of the block.
            StoreError::NotFound | StoreError::Blocked => Self::NotFound,
            StoreError::Exists => Self::CannotOverwrite,
            StoreError::NotUploader => {
                Self::Forbidden("Only the user who created this media id may upload to it".into())
            }
            StoreError::NoSpace => Self::InsufficientStorage,
            StoreError::Backend(detail) => {
                // The operator's detail (endpoint, S3's answer) goes to the log, not the client.
                tracing::warn!(error = %detail, "the blob backend failed");
                Self::BadGateway("The media storage backend is unavailable; try again later".into())
            }
            err @ (StoreError::Sled(_)
            | StoreError::Io(_)
            | StoreError::Corrupt(_)
            | StoreError::Encode(_)
            | StoreError::Poisoned(_)
            | StoreError::TaskLost(_)
            | StoreError::Misuse(_)) => Self::internal(err),
        }
    }
}

impl From<sled::Error> for Error {
    fn from(err: sled::Error) -> Self {
        Self::internal(err)
    }
}

impl From<std::io::Error> for Error {
    fn from(err: std::io::Error) -> Self {
        Self::internal(err)
    }
}

impl From<PoolError> for Error {
    fn from(err: PoolError) -> Self {
        match err {
            PoolError::CannotThumbnail => {
                Self::CannotThumbnail("Cannot generate thumbnails for the requested content".into())
            }
            PoolError::TooLarge => Self::TooLarge("The image is too large to thumbnail".into()),
            PoolError::TooCostly(why) => {
                Self::TooLarge(format!("The image is too costly to thumbnail: {why}"))
            }
            PoolError::TimedOut(budget) => Self::TooLarge(format!(
                "The image takes longer than {budget:?} to thumbnail"
            )),
            PoolError::Busy => Self::RateLimited {
                retry_after: thumbnail::RETRY_AFTER,
            },
            PoolError::Gone => Self::NotFound,
            PoolError::Unavailable => {
                Self::BadGateway("The media storage backend is unavailable; try again later".into())
            }
            err @ PoolError::Internal(_) => Self::internal(err),
        }
    }
}

/// Remote fetch failures as the spec asks a server to answer them
/// (https://spec.matrix.org/v1.16/client-server-api/#get_matrixclientv1mediadownloadservernamemediaid).
impl From<FetchFailure> for Error {
    fn from(failure: FetchFailure) -> Self {
        match failure {
            FetchFailure::NotFound => Self::NotFound,
            FetchFailure::TooLarge => Self::RemoteTooLarge,
            FetchFailure::Timeout => Self::GatewayTimeout,
            FetchFailure::NotYetUploaded => Self::NotYetUploaded,
            // What went wrong is in the log; the client only learns that the origin failed.
            FetchFailure::Unrecognized | FetchFailure::Remote(_) => {
                Self::BadGateway("Failed to fetch remote media".into())
            }
            FetchFailure::Local(message) => Self::internal(message),
            FetchFailure::NoSpace => Self::InsufficientStorage,
        }
    }
}
