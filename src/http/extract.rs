//! Request extractors: the authenticated user, and validated media paths. Everything a handler
//! receives from here is already checked, so handlers stay thin.

use std::{future::Future, pin::Pin};

use actix_web::{FromRequest, HttpRequest, dev::Payload, http::Method, web};
use mxmedia_proto::ids::{MediaId, ServerName};
use serde::Deserialize;

use crate::{
    auth::User,
    error::Error,
    model::id::MediaKey,
    state::{AppState, WorkerState},
};

/// The caller, authenticated by access token.
pub struct AuthedUser(pub User);

impl AuthedUser {
    /// Refuses guests, for the endpoints the spec does not open to them.
    pub fn not_guest(self) -> Result<User, Error> {
        if self.0.is_guest {
            Err(Error::GuestForbidden)
        } else {
            Ok(self.0)
        }
    }
}

impl FromRequest for AuthedUser {
    type Error = Error;
    type Future = Pin<Box<dyn Future<Output = Result<Self, Error>>>>;

    fn from_request(req: &HttpRequest, _: &mut Payload) -> Self::Future {
        let req = req.clone();
        Box::pin(async move { Ok(Self(authenticate(&req).await?.0)) })
    }
}

/// The caller's user and the access token they sent.
async fn authenticate(req: &HttpRequest) -> Result<(User, String), Error> {
    let (state, worker) = app_state(req)?;
    let query = web::Query::<TokenQuery>::from_query(req.query_string())
        .map(web::Query::into_inner)
        .unwrap_or_default();
    let token = access_token(
        req,
        query.access_token.as_deref(),
        state.config.auth.allow_query_token,
    )?;
    let user = state
        .auth
        .authenticate(&worker.http, &token, query.user_id.as_deref())
        .await?;
    Ok((user, token))
}

/// A server admin (see `auth::admins`), with the token they called with: the homeserver's
/// admin API is asked with it on their behalf.
pub struct AdminUser {
    pub user: User,
    pub token: String,
}

impl FromRequest for AdminUser {
    type Error = Error;
    type Future = Pin<Box<dyn Future<Output = Result<Self, Error>>>>;

    fn from_request(req: &HttpRequest, _: &mut Payload) -> Self::Future {
        let req = req.clone();
        Box::pin(async move {
            let (user, token) = authenticate(&req).await?;
            let (state, worker) = app_state(&req)?;
            state
                .auth
                .require_admin(&worker.http, &token, &user)
                .await?;
            Ok(Self { user, token })
        })
    }
}

/// The shared and the per-worker state, which every app built by `start` has.
pub(super) fn app_state(req: &HttpRequest) -> Result<(&AppState, &WorkerState), Error> {
    match (
        req.app_data::<web::Data<AppState>>(),
        req.app_data::<web::Data<WorkerState>>(),
    ) {
        (Some(state), Some(worker)) => Ok((state, worker)),
        _ => Err(Error::internal("app state missing")),
    }
}

#[derive(Deserialize, Default)]
struct TokenQuery {
    access_token: Option<String>,
    /// An appservice acting as one of its users.
    user_id: Option<String>,
}

fn access_token(
    req: &HttpRequest,
    query_token: Option<&str>,
    allow_query: bool,
) -> Result<String, Error> {
    let mut headers = req
        .headers()
        .get_all(actix_web::http::header::AUTHORIZATION);
    let header = headers.next();
    if headers.next().is_some() {
        return Err(Error::MissingToken);
    }
    match (header, query_token) {
        (Some(_), Some(_)) => Err(Error::MissingToken),
        (Some(value), None) => {
            let token = value
                .to_str()
                .ok()
                .and_then(|v| v.strip_prefix("Bearer "))
                .filter(|t| !t.is_empty());
            token.map(str::to_owned).ok_or(Error::MissingToken)
        }
        (None, Some(token)) if allow_query && !token.is_empty() => Ok(token.to_owned()),
        _ => Err(Error::MissingToken),
    }
}

/// `{serverName}/{mediaId}[/{fileName}]` from the path, validated.
///
/// Download routes are scopes whose remaining path is parsed here rather than by the router's
/// patterns: downloads are the hottest path and the router matches patterns with regexes.
/// Only `GET` and `HEAD` reach a download, so the method is checked here too, before auth.
pub struct MediaPath {
    server_name: String,
    media_id: String,
    file_name: Option<String>,
}

impl MediaPath {
    pub fn key(&self) -> Result<MediaKey, Error> {
        Ok(MediaKey {
            server_name: parse_server_name(&self.server_name)?,
            media_id: parse_media_id(&self.media_id)?,
        })
    }

    pub fn file_name(&self) -> Option<&str> {
        self.file_name.as_deref()
    }

    fn from_request_sync(req: &HttpRequest) -> Result<Self, Error> {
        let info = req.match_info();
        if let (Some(server_name), Some(media_id)) = (info.get("server_name"), info.get("media_id"))
        {
            return Ok(Self {
                server_name: server_name.to_owned(),
                media_id: media_id.to_owned(),
                file_name: None,
            });
        }
        if req.method() != Method::GET && req.method() != Method::HEAD {
            return Err(Error::MethodNotAllowed);
        }
        let mut segments = info
            .unprocessed()
            .trim_start_matches('/')
            .split('/')
            .map(decode_segment);
        match (
            segments.next(),
            segments.next(),
            segments.next(),
            segments.next(),
        ) {
            (Some(server_name), Some(media_id), file_name, None) => Ok(Self {
                server_name: server_name?,
                media_id: media_id?,
                file_name: file_name.transpose()?.filter(|n| !n.is_empty()),
            }),
            _ => Err(Error::Unrecognized),
        }
    }
}

fn decode_segment(raw: &str) -> Result<String, Error> {
    percent_encoding::percent_decode_str(raw)
        .decode_utf8()
        .map(|s| s.into_owned())
        .map_err(|_| Error::NotFound)
}

impl FromRequest for MediaPath {
    type Error = Error;
    type Future = std::future::Ready<Result<Self, Error>>;

    fn from_request(req: &HttpRequest, _: &mut Payload) -> Self::Future {
        std::future::ready(Self::from_request_sync(req))
    }
}

pub fn query_config() -> web::QueryConfig {
    web::QueryConfig::default().error_handler(|err, _| {
        Error::InvalidParam(format!("Invalid query parameter: {err}")).into()
    })
}

/// A query parameter that must be a boolean (`true`/`false`), as the spec's booleans are.
pub fn parse_bool(name: &str, raw: Option<&str>) -> Result<Option<bool>, Error> {
    match raw {
        None => Ok(None),
        Some("true") => Ok(Some(true)),
        Some("false") => Ok(Some(false)),
        Some(_) => Err(Error::InvalidParam(format!("{name} must be true or false"))),
    }
}

/// A server name from a path: malformed is 400 `M_INVALID_PARAM`.
pub fn parse_server_name(raw: &str) -> Result<ServerName, Error> {
    raw.parse()
        .map_err(|_| Error::InvalidParam("Invalid server name".into()))
}

/// A media id from a path: one outside the grammar cannot exist here, so it is 404.
pub fn parse_media_id(raw: &str) -> Result<MediaId, Error> {
    raw.parse().map_err(|_| Error::NotFound)
}

#[cfg(test)]
mod tests {
    use super::{parse_media_id, parse_server_name};

    /// Path input maps to the errcodes clients get: bad server names 400, impossible ids 404.
    #[test]
    fn parse_errors_map_to_client_errors() {
        assert_eq!(
            parse_server_name("exa mple.org").unwrap_err().errcode(),
            "M_INVALID_PARAM"
        );
        assert_eq!(
            parse_media_id("../etc").unwrap_err().errcode(),
            "M_NOT_FOUND"
        );
        assert!(parse_server_name("example.org:8448").is_ok());
        assert!(parse_media_id("abcDEF123_-").is_ok());
    }
}
