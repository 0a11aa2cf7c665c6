//! The one error type that crosses the HTTP boundary, and its mapping to Matrix errors.
//!
//! Every variant names what went wrong *for the client*. Lower layers have their own errors
//! (`StoreError`, `PoolError`, ...), which say what happened, not what to answer; `convert.rs`
//! turns each into one of these, and is the only place their client messages are written.
//! Internal causes are logged, never sent. The two exhaustive matches below have no `_` arm on
//! purpose: a new variant must decide its status and errcode or the crate does not compile.

use std::time::Duration;

use actix_web::{HttpResponse, ResponseError, http::StatusCode};
use serde_json::json;

pub type Result<T, E = Error> = std::result::Result<T, E>;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("Not found")]
    NotFound,
    #[error("{0}")]
    TooLarge(String),
    #[error("Content has not yet been uploaded")]
    NotYetUploaded,
    #[error("Media already has content")]
    CannotOverwrite,
    #[error("Too many requests")]
    RateLimited { retry_after: Duration },
    #[error("Missing access token")]
    MissingToken,
    /// `soft_logout` relays the homeserver's hint that the session can be refreshed.
    #[error("Unknown access token")]
    UnknownToken { soft_logout: bool },
    #[error("{0}")]
    Forbidden(String),
    #[error("Guests may not use this endpoint")]
    GuestForbidden,
    #[error("{0}")]
    Unauthorized(String),
    #[error("{0}")]
    MissingParam(String),
    #[error("{0}")]
    InvalidParam(String),
    #[error("{0}")]
    NotJson(String),
    #[error("Unrecognized request")]
    Unrecognized,
    #[error("Method not allowed")]
    MethodNotAllowed,
    #[error("{0}")]
    CannotThumbnail(String),
    #[error("{0}")]
    BadGateway(String),
    /// Remote media beyond `media.max_remote_size`: 502 `M_TOO_LARGE`, as the spec asks.
    #[error("Remote content is too large")]
    RemoteTooLarge,
    /// A remote server did not answer in time.
    #[error("Timed out fetching remote media")]
    GatewayTimeout,
    #[error("Not enough free disk space to store media")]
    InsufficientStorage,
    /// A per-user quota is full (Matrix v1.18, MSC4335): `info_uri` tells the user where to
    /// read about it.
    #[error("{message}")]
    UserLimitExceeded { message: String, info_uri: String },
    #[error("Internal server error")]
    Internal(#[source] Box<dyn std::error::Error + Send + Sync>),
}

impl Error {
    /// A failure of ours: `err` goes to the log, the client gets a 500 and no detail.
    pub fn internal(err: impl Into<Box<dyn std::error::Error + Send + Sync>>) -> Self {
        Self::Internal(err.into())
    }

    pub fn errcode(&self) -> &'static str {
        match self {
            Self::NotFound => "M_NOT_FOUND",
            Self::TooLarge(_) | Self::RemoteTooLarge => "M_TOO_LARGE",
            Self::NotYetUploaded => "M_NOT_YET_UPLOADED",
            Self::CannotOverwrite => "M_CANNOT_OVERWRITE_MEDIA",
            Self::RateLimited { .. } => "M_LIMIT_EXCEEDED",
            Self::UserLimitExceeded { .. } => "M_USER_LIMIT_EXCEEDED",
            Self::MissingToken => "M_MISSING_TOKEN",
            Self::UnknownToken { .. } => "M_UNKNOWN_TOKEN",
            Self::Forbidden(_) => "M_FORBIDDEN",
            Self::GuestForbidden => "M_GUEST_ACCESS_FORBIDDEN",
            Self::Unauthorized(_) => "M_UNAUTHORIZED",
            Self::MissingParam(_) => "M_MISSING_PARAM",
            Self::InvalidParam(_) => "M_INVALID_PARAM",
            Self::NotJson(_) => "M_NOT_JSON",
            Self::Unrecognized | Self::MethodNotAllowed => "M_UNRECOGNIZED",
            Self::CannotThumbnail(_)
            | Self::BadGateway(_)
            | Self::GatewayTimeout
            | Self::InsufficientStorage
            | Self::Internal(_) => "M_UNKNOWN",
        }
    }

    pub fn status(&self) -> StatusCode {
        match self {
            Self::NotFound | Self::Unrecognized => StatusCode::NOT_FOUND,
            Self::TooLarge(_) => StatusCode::PAYLOAD_TOO_LARGE,
            Self::NotYetUploaded | Self::GatewayTimeout => StatusCode::GATEWAY_TIMEOUT,
            Self::CannotOverwrite => StatusCode::CONFLICT,
            Self::RateLimited { .. } => StatusCode::TOO_MANY_REQUESTS,
            Self::MissingToken | Self::UnknownToken { .. } | Self::Unauthorized(_) => {
                StatusCode::UNAUTHORIZED
            }
            Self::Forbidden(_) | Self::GuestForbidden | Self::UserLimitExceeded { .. } => {
                StatusCode::FORBIDDEN
            }
            Self::MissingParam(_)
            | Self::InvalidParam(_)
            | Self::NotJson(_)
            | Self::CannotThumbnail(_) => StatusCode::BAD_REQUEST,
            Self::MethodNotAllowed => StatusCode::METHOD_NOT_ALLOWED,
            Self::BadGateway(_) | Self::RemoteTooLarge => StatusCode::BAD_GATEWAY,
            Self::InsufficientStorage => StatusCode::INSUFFICIENT_STORAGE,
            Self::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    /// The JSON body sent to the client. Internal causes stay in the log.
    pub fn body(&self) -> serde_json::Value {
        let mut body = serde_json::Map::new();
        body.insert("errcode".into(), json!(self.errcode()));
        body.insert("error".into(), json!(self.to_string()));
        if let Self::UnknownToken { soft_logout: true } = self {
            body.insert("soft_logout".into(), json!(true));
        }
        if let Self::UserLimitExceeded { info_uri, .. } = self {
            body.insert("info_uri".into(), json!(info_uri));
        }
        if let Self::RateLimited { retry_after } = self {
            body.insert(
                "retry_after_ms".into(),
                json!(u64::try_from(retry_after.as_millis()).unwrap_or(u64::MAX)),
            );
        }
        serde_json::Value::Object(body)
    }
}

impl ResponseError for Error {
    fn status_code(&self) -> StatusCode {
        self.status()
    }

    fn error_response(&self) -> HttpResponse {
        if let Self::Internal(source) = self {
            tracing::error!(error = ?source, "internal error");
        }
        let mut response = HttpResponse::build(self.status());
        if let Self::RateLimited { retry_after } = self {
            // Retry-After is whole seconds; round up so clients never retry too early.
            let secs = retry_after.as_millis().div_ceil(1000).max(1);
            response.insert_header(("Retry-After", secs.to_string()));
        }
        response.json(self.body())
    }
}

mod convert;
#[cfg(test)]
mod tests;
