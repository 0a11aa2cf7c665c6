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
