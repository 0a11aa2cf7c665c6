//! The one error type of the image engine, and the conversions from the codec crates' errors.
//!
//! Variants say what went wrong with the *input* (so the HTTP layer can map them to a status without
//! looking at messages); `Internal` is the only one that means a bug or resource problem on our side.

use image::ImageError;

/// What can go wrong while probing or thumbnailing an image.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The bytes are not one of the formats we decode (JPEG, PNG, GIF, WebP), or use a feature of
    /// that format the decoders do not support (arithmetic-coded JPEG, for example).
    #[error("unsupported image format")]
    Unsupported,
    /// The bytes sniff as a supported format but cannot be decoded.
    #[error("corrupt image: {0}")]
    Corrupt(String),
    /// A frame (or, for animations, all frames together) has more pixels than the limits allow.
    #[error("image too large: {pixels} pixels")]
    TooLarge { pixels: u64 },
    /// The animation has more frames than the limits allow.
    #[error("animation has too many frames: {frames}")]
    TooManyFrames { frames: u32 },
    /// The source's structure promises more decoding work than the limits allow: too many JPEG
    /// scans, scans × pixels, or chunks. Says which.
    #[error("image too costly to decode: {0}")]
    TooCostly(String),
    /// The thumbnail took longer than the time budget of the limits.
    #[error("thumbnailing took longer than {0:?}")]
    TimedOut(std::time::Duration),
    /// Resizing or encoding failed on pixels that decoded fine: a bug or an allocation failure.
    #[error("internal image error: {0}")]
    Internal(String),
}

/// Maps an `image` decoding error. `pixels` is what the caller was about to decode, reported if the
/// decoder's own allocation limit trips (our header checks should have caught it first).
pub(crate) fn from_decode(err: ImageError, pixels: u64) -> Error {
    match err {
        ImageError::Limits(_) => Error::TooLarge { pixels },
        ImageError::Unsupported(_) => Error::Unsupported,
        ImageError::Decoding(e) => Error::Corrupt(e.to_string()),
        ImageError::IoError(e) => Error::Corrupt(e.to_string()),
        e @ (ImageError::Encoding(_) | ImageError::Parameter(_)) => Error::Corrupt(e.to_string()),
    }
}

/// Maps an `image` error raised while encoding our own, already valid pixels.
pub(crate) fn from_encode(err: ImageError) -> Error {
    Error::Internal(err.to_string())
}

pub(crate) fn from_jpeg(err: jpeg_decoder::Error) -> Error {
    match err {
        jpeg_decoder::Error::Unsupported(_) => Error::Unsupported,
        e => Error::Corrupt(e.to_string()),
    }
}
