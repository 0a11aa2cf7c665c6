//! What the Synapse admin API asks about stored media: one item's details, a user's media
//! (listed and deleted page by page, in Synapse's orders), local media by age and size, remote
//! media by last access, and per-user usage. Orders and pages are decided here; the store only
//! looks up (by index where it has one).

use std::cmp::Ordering;

use super::MediaService;
use crate::{
    error::{Error, Result},
    model::{
        id::MediaKey,
        meta::{MediaMeta, MediaState, PREVIEW_UPLOADER},
    },
    store::{inventory::Item, quarantine::QuarantineState},
};

/// Synapse's `order_by` for a user's media.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MediaOrder {
    MediaId,
    UploadName,
    CreatedTs,
    LastAccessTs,
    MediaLength,
    MediaType,
    QuarantinedBy,
    SafeFromQuarantine,
}

impl MediaOrder {
    pub fn parse(raw: &str) -> Option<Self> {
        Some(match raw {
            "media_id" => Self::MediaId,
            "upload_name" => Self::UploadName,
            "created_ts" => Self::CreatedTs,
            "last_access_ts" => Self::LastAccessTs,
            "media_length" => Self::MediaLength,
            "media_type" => Self::MediaType,
            "quarantined_by" => Self::QuarantinedBy,
            "safe_from_quarantine" => Self::SafeFromQuarantine,
            _ => return None,
        })
    }
}

/// Synapse's `order_by` for usage statistics.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UserOrder {
    UserId,
    Displayname,
    MediaLength,
    MediaCount,
}

impl UserOrder {
    pub fn parse(raw: &str) -> Option<Self> {
        Some(match raw {
            "user_id" => Self::UserId,
            "displayname" => Self::Displayname,
            "media_length" => Self::MediaLength,
            "media_count" => Self::MediaCount,
            _ => return None,
        })
    }
}

/// A page: offset, size, and direction (`backwards` reverses the order).
#[derive(Debug, Clone, Copy)]
pub struct Page {
    pub from: usize,
    pub limit: usize,
    pub backwards: bool,
}

/// One media item as the admin API shows it.
#[derive(Debug, Clone)]
pub struct MediaInfo {
    pub key: MediaKey,
    pub meta: MediaMeta,
    pub local: bool,
    pub last_access_ts: Option<u64>,
    pub quarantine: QuarantineState,
}

impl MediaInfo {
    pub fn content_type(&self) -> Option<&str> {
        match &self.meta.state {
            MediaState::Complete(content) => Some(&content.content_type),
            MediaState::Pending { .. } => None,
        }
    }

    pub fn media_length(&self) -> Option<u64> {
        match &self.meta.state {
            MediaState::Complete(content) => Some(content.len),
            MediaState::Pending { .. } => None,
        }
    }

    pub fn upload_name(&self) -> Option<&str> {
        match &self.meta.state {
            MediaState::Complete(content) => content.filename.as_deref(),
            MediaState::Pending { .. } => None,
        }
    }

    pub fn sha256(&self) -> Option<&str> {
        match &self.meta.state {
            MediaState::Complete(content) => Some(&content.sha256),
            MediaState::Pending { .. } => None,
        }
    }
}

/// One user's usage.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UserUsage {
    pub user_id: String,
    pub media_count: u64,
    pub media_length: u64,
}

/// Filters of the usage statistics.
#[derive(Debug, Clone, Default)]
pub struct UsageFilter {
    pub from_ts: Option<u64>,
    pub until_ts: Option<u64>,
    pub search_term: Option<String>,
}

impl MediaService {
    /// Details of one stored item; `None` when nothing is stored under the id.
    pub async fn media_info(&self, key: &MediaKey) -> Result<Option<MediaInfo>> {
        let (lookup, local) = (key.clone(), self.is_local(&key.server_name));
        self.store
            .blocking(move |s| {
                let Some(meta) = s.get_meta(&lookup)? else {
                    return Ok(None);
                };
                Ok(Some(MediaInfo {
                    // Local media has one only when imported with it.
                    last_access_ts: s.last_access(&lookup)?,
                    quarantine: s.quarantine_state(&lookup)?,
                    key: lookup,
                    meta,
                    local,
                }))
            })
            .await
    }

    /// A page of the local media `user` created, in `order` (then by media id), and how many
    /// there are in all.
    pub async fn user_media(
        &self,
        user: &str,
        order: MediaOrder,
        page: Page,
    ) -> Result<(Vec<MediaInfo>, usize)> {
        let mut all = self.user_media_all(user).await?;
        all.sort_by(|a, b| {
            let primary = compare(order, a, b);
            let primary = if page.backwards {
                primary.reverse()
            } else {
                primary
            };
            primary.then_with(|| a.key.media_id.as_str().cmp(b.key.media_id.as_str()))
        });
        let total = all.len();
        let page = all.into_iter().skip(page.from).take(page.limit).collect();
        Ok((page, total))
    }

    async fn user_media_all(&self, user: &str) -> Result<Vec<MediaInfo>> {
        let (own, user) = (self.server_name.as_str().to_owned(), user.to_owned());
        self.store
            .blocking(move |s| {
                let items = s.local_media(&own, Some(&user))?;
                items
                    .into_iter()
                    .map(|Item { key, meta }| {
                        Ok(MediaInfo {
                            quarantine: s.quarantine_state(&key)?,
                            last_access_ts: s.last_access(&key)?,
                            key,
                            meta,
                            local: true,
                        })
                    })
                    .collect()
            })
            .await
    }

    /// Deletes `media` (bytes, thumbnails), returning the ids that existed.
    pub async fn delete_many(
        &self,
        media: Vec<MediaKey>,
        by: &str,
        action: &'static str,
        target: &str,
    ) -> Result<Vec<MediaKey>> {
        let deleted = self.store.blocking(move |s| s.delete_many(&media)).await?;
        for key in &deleted {
            self.cache.forget(key, None);
        }
        tracing::info!(
            actor = by,
            action,
            target,
            count = deleted.len(),
            "admin action"
        );
        Ok(deleted)
    }

    /// Local media last accessed (imported media) or created before `before_ms` and larger than
    /// `size_gt` bytes, protected and quarantined media excepted (as Synapse keeps them).
    pub async fn old_local_media(&self, before_ms: u64, size_gt: u64) -> Result<Vec<MediaKey>> {
        let own = self.server_name.as_str().to_owned();
        self.store
            .blocking(move |s| {
                let mut out = Vec::new();
                for Item { key, meta } in s.local_media(&own, None)? {
                    let MediaState::Complete(content) = &meta.state else {
                        continue;
                    };
                    // By last access, as Synapse; only imported media has one here.
                    let last = s.last_access(&key)?.unwrap_or(meta.created_at);
                    if last >= before_ms || content.len <= size_gt {
                        continue;
                    }
                    let state = s.quarantine_state(&key)?;
                    if state.protected || state.quarantined.is_some() {
                        continue;
                    }
                    out.push(key);
                }
                Ok(out)
            })
            .await
    }

    /// Removes remote media last asked for before `before_ms` (quarantined media kept).
    pub async fn purge_remote(&self, before_ms: u64, by: &str) -> Result<usize> {
        self.record_access().await?;
        let own = self.server_name.as_str().to_owned();
        let idle = self
            .store
            .blocking(move |s| s.remote_idle_since(&own, before_ms))
            .await?;
        let deleted = self
            .delete_many(
                idle,
                by,
                "purge_media_cache",
                &format!("before_ts={before_ms}"),
            )
            .await?;
        Ok(deleted.len())
    }

    /// Local media usage per uploader, filtered, ordered (then by user id) and paged; with the
    /// number of users after filtering.
    pub async fn usage(
        &self,
        filter: UsageFilter,
        order: UserOrder,
        page: Page,
    ) -> Result<(Vec<UserUsage>, usize)> {
        let own = self.server_name.as_str().to_owned();
        let (from, until) = (filter.from_ts, filter.until_ts);
        let totals = self
            .store
            .blocking(move |s| s.usage_by_user(&own, from, until))
            .await?;
        let mut all: Vec<UserUsage> = totals
            .into_iter()
            // Nobody's uploads: Synapse leaves `url_cache` media out of user statistics too.
            .filter(|(user, _)| user != PREVIEW_UPLOADER)
            .filter(|(user, _)| {
                filter
                    .search_term
                    .as_ref()
                    .is_none_or(|term| localpart(user).contains(term.as_str()))
            })
            .map(|(user_id, (media_count, media_length))| UserUsage {
                user_id,
                media_count,
                media_length,
            })
            .collect();
        all.sort_by(|a, b| {
            let primary = match order {
                // No display names here: the user id stands in for it.
                UserOrder::UserId | UserOrder::Displayname => Ordering::Equal,
                UserOrder::MediaLength => a.media_length.cmp(&b.media_length),
                UserOrder::MediaCount => a.media_count.cmp(&b.media_count),
            };
            let ordered = primary.then_with(|| a.user_id.cmp(&b.user_id));
            if page.backwards {
                ordered.reverse()
            } else {
                ordered
            }
        });
        let total = all.len();
        Ok((
            all.into_iter().skip(page.from).take(page.limit).collect(),
            total,
        ))
    }

    /// Whether `key` can be deleted by the local-media admin API (it names our server).
    pub fn require_local(&self, key: &MediaKey) -> Result<()> {
        if self.is_local(&key.server_name) {
            Ok(())
        } else {
            Err(Error::InvalidParam("Can only delete local media".into()))
        }
    }
}

fn localpart(user_id: &str) -> &str {
    user_id
        .strip_prefix('@')
        .and_then(|rest| rest.split(':').next())
        .unwrap_or(user_id)
}

fn compare(order: MediaOrder, a: &MediaInfo, b: &MediaInfo) -> Ordering {
    match order {
        MediaOrder::MediaId => a.key.media_id.as_str().cmp(b.key.media_id.as_str()),
        MediaOrder::UploadName => a.upload_name().cmp(&b.upload_name()),
        MediaOrder::CreatedTs => a.meta.created_at.cmp(&b.meta.created_at),
        MediaOrder::LastAccessTs => a.last_access_ts.cmp(&b.last_access_ts),
        MediaOrder::MediaLength => a.media_length().cmp(&b.media_length()),
        MediaOrder::MediaType => a.content_type().cmp(&b.content_type()),
        MediaOrder::QuarantinedBy => a
            .quarantine
            .quarantined
            .as_ref()
            .map(|q| &q.by)
            .cmp(&b.quarantine.quarantined.as_ref().map(|q| &q.by)),
        MediaOrder::SafeFromQuarantine => a.quarantine.protected.cmp(&b.quarantine.protected),
    }
}
