//! Why the thumbnailer gave no thumbnail. Said as what happened to the source or the job; the
//! client's answer is written in `error/convert.rs`.

use std::{sync::Arc, time::Duration};

use super::pool::Refused;
use crate::store::StoreError;

/// Why no thumbnail came out. The first four are about the source and are remembered per
/// source, so a bad file is decoded only once in a while; the others are about this moment.
#[derive(Debug, Clone, thiserror::Error)]
pub enum PoolError {
    /// The engine cannot decode the source, or does not support its format.
    #[error("the source cannot be thumbnailed")]
    CannotThumbnail,
    /// Over the source size cap, or too many pixels or frames.
    #[error("the source is too large to thumbnail")]
    TooLarge,
    /// The source's structure promises too much decoding work; says why.
    #[error("the source is too costly to thumbnail: {0}")]
    TooCostly(Arc<str>),
    /// A job on this source ran past the time budget.
    #[error("a job on the source ran past its budget of {0:?}")]
    TimedOut(Duration),
    /// The queue is full.
    #[error("the thumbnail queue is full")]
    Busy,
    /// A failure of ours (logged where it happened): a lost job, a store failure.
    #[error("{0}")]
    Internal(&'static str),
    /// The source was deleted meanwhile: nothing was stored.
    #[error("the source is gone")]
    Gone,
    /// The blob backend (an S3 bucket) failed reading the source or storing the thumbnail.
    #[error("the blob backend is unavailable")]
    Unavailable,
}

impl PoolError {
    pub(super) fn about_the_source(&self) -> bool {
        matches!(
            self,
            Self::CannotThumbnail | Self::TooLarge | Self::TooCostly(_) | Self::TimedOut(_)
        )
    }
}

impl From<StoreError> for PoolError {
    fn from(err: StoreError) -> Self {
        if let StoreError::NotFound | StoreError::Blocked = err {
            return Self::Gone;
        }
        if let StoreError::Backend(detail) = &err {
            tracing::warn!(error = %detail, "thumbnail job: the blob backend failed");
            return Self::Unavailable;
        }
        tracing::error!(error = %err, source = ?std::error::Error::source(&err), "thumbnail job failed");
        Self::Internal("thumbnail rendering failed")
    }
}

impl From<std::io::Error> for PoolError {
    fn from(err: std::io::Error) -> Self {
        Self::from(StoreError::from(err))
    }
}

impl From<Refused> for PoolError {
    fn from(refused: Refused) -> Self {
        match refused {
            Refused::Busy => Self::Busy,
            Refused::TimedOut(budget) => Self::TimedOut(budget),
            Refused::Lost => Self::Internal("thumbnail rendering failed"),
        }
    }
}

/// What the engine's refusal means for the source.
pub(super) fn from_engine(err: &mxmedia_image::Error) -> PoolError {
    match err {
        mxmedia_image::Error::TooLarge { .. } | mxmedia_image::Error::TooManyFrames { .. } => {
            PoolError::TooLarge
        }
        mxmedia_image::Error::TooCostly(why) => {
            tracing::info!(why, "refusing a source too costly to thumbnail");
            PoolError::TooCostly(why.as_str().into())
        }
        mxmedia_image::Error::TimedOut(budget) => PoolError::TimedOut(*budget),
        mxmedia_image::Error::Unsupported
        | mxmedia_image::Error::Corrupt(_)
        | mxmedia_image::Error::Internal(_) => {
            tracing::debug!(error = %err, "cannot thumbnail");
            PoolError::CannotThumbnail
        }
    }
}
