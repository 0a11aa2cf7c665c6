#![allow(
    clippy::indexing_slicing,
    reason = "a test indexes what it just asserted the shape of; a panic is a test failure"
)]
use std::time::Duration;

use super::Error;

/// Every variant renders to the status and errcode the spec (or our documented choice) names.
#[test]
fn errcode_table() {
    let cases: Vec<(Error, u16, &str)> = vec![
        (Error::NotFound, 404, "M_NOT_FOUND"),
        (Error::TooLarge("x".into()), 413, "M_TOO_LARGE"),
        (Error::NotYetUploaded, 504, "M_NOT_YET_UPLOADED"),
        (Error::CannotOverwrite, 409, "M_CANNOT_OVERWRITE_MEDIA"),
        (
            Error::RateLimited {
                retry_after: Duration::from_millis(1500),
            },
            429,
            "M_LIMIT_EXCEEDED",
        ),
        (Error::MissingToken, 401, "M_MISSING_TOKEN"),
        (
            Error::UnknownToken { soft_logout: false },
            401,
            "M_UNKNOWN_TOKEN",
        ),
        (Error::Forbidden("no".into()), 403, "M_FORBIDDEN"),
        (Error::GuestForbidden, 403, "M_GUEST_ACCESS_FORBIDDEN"),
        (Error::Unauthorized("bad sig".into()), 401, "M_UNAUTHORIZED"),
        (Error::MissingParam("width".into()), 400, "M_MISSING_PARAM"),
        (Error::InvalidParam("width".into()), 400, "M_INVALID_PARAM"),
        (Error::NotJson("x".into()), 400, "M_NOT_JSON"),
        (Error::Unrecognized, 404, "M_UNRECOGNIZED"),
        (Error::MethodNotAllowed, 405, "M_UNRECOGNIZED"),
        (Error::CannotThumbnail("x".into()), 400, "M_UNKNOWN"),
        (Error::BadGateway("x".into()), 502, "M_UNKNOWN"),
        (Error::RemoteTooLarge, 502, "M_TOO_LARGE"),
        (Error::GatewayTimeout, 504, "M_UNKNOWN"),
        (Error::InsufficientStorage, 507, "M_UNKNOWN"),
        (
            Error::internal(std::io::Error::other("disk on fire")),
            500,
            "M_UNKNOWN",
        ),
    ];
    for (err, status, errcode) in cases {
        assert_eq!(err.status().as_u16(), status, "{err:?}");
        assert_eq!(err.body()["errcode"], errcode, "{err:?}");
        assert!(err.body()["error"].is_string());
    }
}

/// Internal causes never reach the client.
#[test]
fn internal_error_hides_cause() {
    let err = Error::internal(std::io::Error::other("/secret/path unreadable"));
    assert_eq!(
        err.body(),
        serde_json::json!({"errcode": "M_UNKNOWN", "error": "Internal server error"})
    );
}

/// Rate-limit errors carry the deprecated `retry_after_ms` for older clients.
#[test]
fn rate_limited_carries_retry_after_ms() {
    let err = Error::RateLimited {
        retry_after: Duration::from_millis(2500),
    };
    assert_eq!(err.body()["retry_after_ms"], 2500);
}

/// A homeserver's soft-logout hint reaches the client, so it refreshes instead of logging out.
#[test]
fn soft_logout_is_relayed() {
    let err = Error::UnknownToken { soft_logout: true };
    assert_eq!(err.body()["soft_logout"], true);
    assert!(
        Error::UnknownToken { soft_logout: false }
            .body()
            .get("soft_logout")
            .is_none()
    );
}

/// Each store and thumbnailer failure reaches the client as the status, errcode and message
/// it was answered with when those layers built client errors themselves; causes stay hidden.
#[test]
fn layer_errors_keep_their_wire_form() {
    use crate::{store::StoreError, thumbnail::PoolError};
    let cases: Vec<(Error, u16, &str, &str)> = vec![
        (StoreError::NotFound.into(), 404, "M_NOT_FOUND", "Not found"),
        (StoreError::Blocked.into(), 404, "M_NOT_FOUND", "Not found"),
        (
            StoreError::Exists.into(),
            409,
            "M_CANNOT_OVERWRITE_MEDIA",
            "Media already has content",
        ),
        (
            StoreError::NotUploader.into(),
            403,
            "M_FORBIDDEN",
            "Only the user who created this media id may upload to it",
        ),
        (
            StoreError::NoSpace.into(),
            507,
            "M_UNKNOWN",
            "Not enough free disk space to store media",
        ),
        (
            StoreError::Backend("GET http://10.0.0.5:3900/secret-bucket refused".into()).into(),
            502,
            "M_UNKNOWN",
            "The media storage backend is unavailable; try again later",
        ),
        (
            PoolError::Unavailable.into(),
            502,
            "M_UNKNOWN",
            "The media storage backend is unavailable; try again later",
        ),
        (
            StoreError::Corrupt("/secret/blob".into()).into(),
            500,
            "M_UNKNOWN",
            "Internal server error",
        ),
        (
            PoolError::CannotThumbnail.into(),
            400,
            "M_UNKNOWN",
            "Cannot generate thumbnails for the requested content",
        ),
        (
            PoolError::TooLarge.into(),
            413,
            "M_TOO_LARGE",
            "The image is too large to thumbnail",
        ),
        (
            PoolError::TooCostly("a 90000-pixel-wide progressive scan".into()).into(),
            413,
            "M_TOO_LARGE",
            "The image is too costly to thumbnail: a 90000-pixel-wide progressive scan",
        ),
        (
            PoolError::TimedOut(Duration::from_secs(2)).into(),
            413,
            "M_TOO_LARGE",
            "The image takes longer than 2s to thumbnail",
        ),
        (
            PoolError::Busy.into(),
            429,
            "M_LIMIT_EXCEEDED",
            "Too many requests",
        ),
        (PoolError::Gone.into(), 404, "M_NOT_FOUND", "Not found"),
        (
            PoolError::Internal("thumbnail task lost").into(),
            500,
            "M_UNKNOWN",
            "Internal server error",
        ),
    ];
    for (err, status, errcode, message) in cases {
        assert_eq!(err.status().as_u16(), status, "{err:?}");
        assert_eq!(err.body()["errcode"], errcode, "{err:?}");
        assert_eq!(err.body()["error"], message, "{err:?}");
    }
    let busy = Error::from(PoolError::Busy);
    assert_eq!(busy.body()["retry_after_ms"], 1000);
}
