//! Query parameters and path values of Synapse's admin API, read and refused the way Synapse
//! reads them (its `parse_integer`, `parse_boolean`, `parse_string`), with its error messages.

use std::collections::HashMap;

use actix_web::{HttpRequest, web};

use crate::{
    error::Error,
    http::extract::{parse_media_id, parse_server_name},
    media::inventory::Page,
    model::id::MediaKey,
    state::AppState,
};

/// Timestamps below this are seconds passed as milliseconds (year 1970): refused, as Synapse does.
const MIN_SANE_TS_MS: u64 = 30_000_000_000;
const DEFAULT_LIMIT: u64 = 100;

/// Query parameters, read the way Synapse's `parse_integer`/`parse_boolean`/`parse_string` read
/// them.
pub(super) struct Params(HashMap<String, String>);

impl Params {
    pub(super) fn of(req: &HttpRequest) -> Result<Self, Error> {
        web::Query::<HashMap<String, String>>::from_query(req.query_string())
            .map(|q| Self(q.into_inner()))
            .map_err(|_| Error::InvalidParam("Invalid query string".into()))
    }

    pub(super) fn str(&self, name: &str) -> Option<&str> {
        self.0.get(name).map(String::as_str)
    }

    /// A non-negative integer, absent as `None`.
    pub(super) fn uint(&self, name: &str) -> Result<Option<u64>, Error> {
        let Some(raw) = self.str(name) else {
            return Ok(None);
        };
        let value: i64 = raw.parse().map_err(|_| {
            Error::InvalidParam(format!("Query parameter {name:?} must be an integer."))
        })?;
        u64::try_from(value).map(Some).map_err(|_| {
            Error::InvalidParam(format!(
                "Query parameter {name:?} must be a positive integer."
            ))
        })
    }

    pub(super) fn required_uint(&self, name: &str) -> Result<u64, Error> {
        self.uint(name)?.ok_or_else(|| {
            Error::MissingParam(format!("Missing required integer query parameter {name}"))
        })
    }

    pub(super) fn bool(&self, name: &str, default: bool) -> Result<bool, Error> {
        match self.str(name) {
            None => Ok(default),
            Some("true") => Ok(true),
            Some("false") => Ok(false),
            Some(_) => Err(Error::InvalidParam(format!(
                "Boolean query parameter {name:?} must be one of ['true', 'false']"
            ))),
        }
    }

    /// `from`, `limit` and `dir`.
    pub(super) fn page(&self) -> Result<Page, Error> {
        let backwards = match self.str("dir") {
            None | Some("f") => false,
            Some("b") => true,
            Some(_) => {
                return Err(Error::InvalidParam(
                    "Query parameter \"dir\" must be one of ['b', 'f']".into(),
                ));
            }
        };
        Ok(Page {
            from: to_usize(self.uint("from")?.unwrap_or(0)),
            limit: to_usize(self.uint("limit")?.unwrap_or(DEFAULT_LIMIT)),
            backwards,
        })
    }
}

pub(super) fn to_usize(n: u64) -> usize {
    usize::try_from(n).unwrap_or(usize::MAX)
}

pub(super) fn media_key(server_name: &str, media_id: &str) -> Result<MediaKey, Error> {
    Ok(MediaKey {
        server_name: parse_server_name(server_name)?,
        media_id: parse_media_id(media_id)?,
    })
}

pub(super) fn before_ts(params: &Params) -> Result<u64, Error> {
    let ts = params.required_uint("before_ts")?;
    if ts < MIN_SANE_TS_MS {
        return Err(Error::InvalidParam(
            "before_ts you provided is from the year 1970. Double check that you are providing \
             a timestamp in milliseconds."
                .into(),
        ));
    }
    Ok(ts)
}

/// A local user id from the path: Synapse answers 400 for others.
pub(super) fn local_user(state: &AppState, raw: &str) -> Result<String, Error> {
    let server = raw
        .strip_prefix('@')
        .and_then(|rest| rest.split_once(':'))
        .map(|(_, server)| server)
        .ok_or_else(|| Error::InvalidParam(format!("Invalid user id: {raw:?}")))?;
    if server != state.media.server_name().as_str() {
        return Err(Error::InvalidParam("Can only look up local users".into()));
    }
    Ok(raw.to_owned())
}
