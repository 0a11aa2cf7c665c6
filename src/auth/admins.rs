//! Who is an admin, and what only the homeserver knows about rooms.
//!
//! Admins are the users in `auth.admins`, plus, with `auth.homeserver_url`, whoever the
//! homeserver says is a server admin: Synapse's
//! `GET /_synapse/admin/v1/users/{userId}/admin`, asked with the caller's own token (the
//! homeserver answers it for admins only, so a 200 with `"admin": true` is the proof). The
//! answer is cached per user for `token_cache_secs`, in a bounded cache: only authenticated
//! users get here, and a demoted admin keeps the role that long at most.
//!
//! Room quarantine needs the media of a room, which only the homeserver knows
//! (`GET /_synapse/admin/v1/room/{roomId}/media`), again asked with the caller's token.

use std::time::{Duration, Instant};

use percent_encoding::{NON_ALPHANUMERIC, utf8_percent_encode};
use serde::Deserialize;

use super::{Authenticator, User};
use crate::{
    error::{Error, Result},
    model::id::MediaKey,
};

/// Users whose admin answer is remembered at once.
pub(super) const ADMIN_CACHE_ENTRIES: usize = 10_000;
const ADMIN_TIMEOUT: Duration = Duration::from_secs(10);
/// A room's media list: Synapse sends every mxc URI of the room, about 60 bytes each.
const ROOM_MEDIA_MAX_BYTES: usize = 16 * 1024 * 1024;
/// Media ids of one room quarantine, local and remote together.
const ROOM_MEDIA_MAX_ITEMS: usize = 200_000;

#[derive(Deserialize)]
struct IsAdmin {
    admin: bool,
}

#[derive(Deserialize)]
struct RoomMedia {
    #[serde(default)]
    local: Vec<String>,
    #[serde(default)]
    remote: Vec<String>,
}

impl Authenticator {
    /// Refuses callers who are not admins: 403 `M_FORBIDDEN`, as Synapse answers.
    pub async fn require_admin(
        &self,
        client: &awc::Client,
        token: &str,
        user: &User,
    ) -> Result<()> {
        if !user.is_guest && self.is_admin(client, token, &user.user_id).await? {
            return Ok(());
        }
        Err(Error::Forbidden("You are not a server admin".into()))
    }

    async fn is_admin(&self, client: &awc::Client, token: &str, user_id: &str) -> Result<bool> {
        if self.admins.contains(user_id) {
            return Ok(true);
        }
        let Some(homeserver) = &self.homeserver_url else {
            return Ok(false);
        };
        if let Some(admin) = self.admin_answers.get(&user_id.to_owned()) {
            return Ok(admin);
        }
        let url = format!(
            "{homeserver}/_synapse/admin/v1/users/{}/admin",
            utf8_percent_encode(user_id, NON_ALPHANUMERIC)
        );
        let (status, body) = get(client, &url, token, 64 * 1024).await?;
        let admin = match status {
            200 => {
                serde_json::from_slice::<IsAdmin>(&body)
                    .map_err(|_| homeserver_error("an admin check answer that is not JSON"))?
                    .admin
            }
            // 403: the homeserver answers its admin API to admins only. 400 and 404: no such
            // API (not Synapse), or a user it does not host; either way, not its admin.
            400 | 403 | 404 => false,
            401 => return Err(Error::UnknownToken { soft_logout: false }),
            429 => {
                return Err(Error::RateLimited {
                    retry_after: Duration::from_secs(1),
                });
            }
            other => {
                return Err(homeserver_error(&format!(
                    "status {other} to an admin check"
                )));
            }
        };
        self.admin_answers.insert(
            user_id.to_owned(),
            admin,
            Instant::now() + self.caches.good_ttl,
        );
        Ok(admin)
    }

    /// The media the homeserver knows in `room_id`, local and remote, as media ids.
    pub async fn room_media(
        &self,
        client: &awc::Client,
        token: &str,
        room_id: &str,
    ) -> Result<Vec<MediaKey>> {
        let Some(homeserver) = &self.homeserver_url else {
            return Err(Error::InvalidParam(
                "Quarantining a room's media needs auth.homeserver_url: only the homeserver \
                 knows which media a room holds"
                    .into(),
            ));
        };
        let url = format!(
            "{homeserver}/_synapse/admin/v1/room/{}/media",
            utf8_percent_encode(room_id, NON_ALPHANUMERIC)
        );
        let (status, body) = get(client, &url, token, ROOM_MEDIA_MAX_BYTES).await?;
        match status {
            200 => {}
            404 => return Err(Error::NotFound),
            403 => return Err(Error::Forbidden("You are not a server admin".into())),
            400 => {
                return Err(Error::InvalidParam(
                    "The homeserver refused this room id".into(),
                ));
            }
            other => {
                return Err(homeserver_error(&format!(
                    "status {other} to a room media list"
                )));
            }
        }
        let listed: RoomMedia = serde_json::from_slice(&body)
            .map_err(|_| homeserver_error("a room media list that is not the expected JSON"))?;
        if listed.local.len() + listed.remote.len() > ROOM_MEDIA_MAX_ITEMS {
            return Err(homeserver_error(
                "a room media list longer than mxmedia accepts",
            ));
        }
        // An entry that is not an mxc URI names nothing we could serve: skipped.
        Ok(listed
            .local
            .iter()
            .chain(&listed.remote)
            .filter_map(|uri| parse_mxc(uri))
            .collect())
    }
}

/// `mxc://server/mediaId` as a media id.
fn parse_mxc(uri: &str) -> Option<MediaKey> {
    let (server, id) = uri.strip_prefix("mxc://")?.split_once('/')?;
    Some(MediaKey {
        server_name: server.parse().ok()?,
        media_id: id.parse().ok()?,
    })
}

fn homeserver_error(what: &str) -> Error {
    tracing::warn!(what, "homeserver admin API failed");
    Error::BadGateway(format!("The homeserver sent {what}"))
}

/// GETs `url` from the homeserver with `token`: status and body, at most `limit` bytes.
async fn get(
    client: &awc::Client,
    url: &str,
    token: &str,
    limit: usize,
) -> Result<(u16, bytes::Bytes)> {
    let mut response = client
        .get(url)
        .bearer_auth(token)
        .timeout(ADMIN_TIMEOUT)
        .send()
        .await
        .map_err(|e| {
            tracing::warn!(error = %e, "homeserver admin API unreachable");
            Error::BadGateway("Could not reach the homeserver's admin API".into())
        })?;
    let body = response.body().limit(limit).await.map_err(|e| {
        tracing::warn!(error = %e, "homeserver admin API answer unreadable");
        Error::BadGateway("Could not read the homeserver's admin API answer".into())
    })?;
    Ok((response.status().as_u16(), body))
}
