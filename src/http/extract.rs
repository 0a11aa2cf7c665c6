//! Request extractors: the authenticated user, and validated media paths. Everything a handler
//! receives from here is already checked, so handlers stay thin.

use std::{future::Future, pin::Pin};

use actix_web::{FromRequest, HttpRequest, dev::Payload, web};
use serde::Deserialize;

use crate::{
    auth::User,
    error::Error,
    media::id::{MediaId, MediaKey, ServerName},
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
        Box::pin(async move {
            let (Some(state), Some(worker)) = (
                req.app_data::<web::Data<AppState>>(),
                req.app_data::<web::Data<WorkerState>>(),
            ) else {
                return Err(Error::internal(anyhow::anyhow!("app state missing")));
            };
            let query = web::Query::<TokenQuery>::from_query(req.query_string())
                .map(web::Query::into_inner)
                .unwrap_or_default();
            let token = access_token(
                &req,
                query.access_token.as_deref(),
                state.config.auth.allow_query_token,
            )?;
            let user = state
                .auth
                .authenticate(&worker.http, &token, query.user_id.as_deref())
                .await?;
            Ok(Self(user))
        })
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

/// `{serverName}/{mediaId}` from the path, validated.
#[derive(Deserialize)]
pub struct MediaPath {
    server_name: String,
    media_id: String,
    #[serde(default)]
    file_name: Option<String>,
}

impl MediaPath {
    pub fn key(&self) -> Result<MediaKey, Error> {
        Ok(MediaKey {
            server_name: ServerName::parse(&self.server_name)?,
            media_id: MediaId::parse(&self.media_id)?,
        })
    }

    pub fn file_name(&self) -> Option<&str> {
        self.file_name.as_deref()
    }
}

pub fn query_config() -> web::QueryConfig {
    web::QueryConfig::default().error_handler(|err, _| {
        Error::InvalidParam(format!("Invalid query parameter: {err}")).into()
    })
}

pub fn path_config() -> web::PathConfig {
    web::PathConfig::default().error_handler(|_, _| Error::NotFound.into())
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
