//! What the admin API lists and removes in bulk: a user's local media and usage per user (from
//! the `userid_media` index, so their cost follows what is listed, not the store), local media
//! by age and size, remote media by last access (scans, for admin requests only).

use std::collections::BTreeMap;

use super::{Result, Store, ThumbRecord, decode, keys, read_u64};
use crate::model::{
    id::MediaKey,
    meta::{MediaMeta, MediaState},
};

/// One stored media id, as the admin API describes it.
#[derive(Debug, Clone)]
pub struct Item {
    pub key: MediaKey,
    pub meta: MediaMeta,
}

impl Store {
    /// Every media id of the server `own` (local media), optionally only those `uploader`
    /// created: all in key order, one user's oldest first.
    pub fn local_media(&self, own: &str, uploader: Option<&str>) -> Result<Vec<Item>> {
        let mut prefix = own.as_bytes().to_vec();
        prefix.push(b'/');
        let mut out = Vec::new();
        let Some(uploader) = uploader else {
            for item in self.inner.meta.scan_prefix(&prefix) {
                let (db_key, raw) = item?;
                if let Some(key) = keys::parse_media(&db_key) {
                    out.push(Item {
                        key,
                        meta: decode(&raw)?,
                    });
                }
            }
            return Ok(out);
        };
        for db_key in self.user_media_keys(uploader)? {
            if !db_key.starts_with(&prefix) {
                continue;
            }
            let (Some(key), Some(raw)) =
                (keys::parse_media(&db_key), self.inner.meta.get(&db_key)?)
            else {
                continue;
            };
            let meta: MediaMeta = decode(&raw)?;
            // The index and the record are written together; a mismatch is a bug, not theirs.
            if meta.uploader == uploader {
                out.push(Item { key, meta });
            }
        }
        Ok(out)
    }

    /// Complete local media (server `own`) per uploader, created within `from_ms..=until_ms`:
    /// (files, bytes) by user id, read from the index alone.
    pub fn usage_by_user(
        &self,
        own: &str,
        from_ms: Option<u64>,
        until_ms: Option<u64>,
    ) -> Result<BTreeMap<String, (u64, u64)>> {
        let mut prefix = own.as_bytes().to_vec();
        prefix.push(b'/');
        let mut out: BTreeMap<String, (u64, u64)> = BTreeMap::new();
        let mut last: Option<(Vec<u8>, String)> = None;
        self.each_user_media(|user, at, len, db_key| {
            if !db_key.starts_with(&prefix)
                || from_ms.is_some_and(|from| at < from)
                || until_ms.is_some_and(|until| at > until)
            {
                return;
            }
            // Entries come grouped by user: decode each user id once.
            let name = match &last {
                Some((raw, name)) if raw.as_slice() == user => name.clone(),
                _ => {
                    let name = String::from_utf8_lossy(user).into_owned();
                    last = Some((user.to_vec(), name.clone()));
                    name
                }
            };
            let entry = out.entry(name).or_default();
            entry.0 = entry.0.saturating_add(1);
            entry.1 = entry.1.saturating_add(len);
        })?;
        Ok(out)
    }

    /// Deletes each of `media` with its thumbnails (and with the last reference, its bytes) and
    /// returns those that existed. Durable when it returns; one flush for all.
    pub fn delete_many(&self, media: &[MediaKey]) -> Result<Vec<MediaKey>> {
        let mut files = Vec::new();
        let mut deleted = Vec::new();
        for key in media {
            let removed = self.remove_entry(&keys::media(key), None)?;
            if removed.existed {
                deleted.push(key.clone());
            }
            files.extend(removed.files);
        }
        self.settle(&files)?;
        Ok(deleted)
    }

    /// Remote media (any server but `own`) last asked for before `before_ms`, quarantined media
    /// excepted (kept for review): originals and the thumbnails kept from their origins.
    pub fn remote_idle_since(&self, own: &str, before_ms: u64) -> Result<Vec<MediaKey>> {
        // Last access, or the fetch time for media not asked for since the access tree began.
        let mut last: BTreeMap<Vec<u8>, Option<u64>> = BTreeMap::new();
        for item in &self.inner.meta {
            let (db_key, raw) = item?;
            if keys::media_server(&db_key) == own.as_bytes() {
                continue;
            }
            let meta: MediaMeta = decode(&raw)?;
            if let MediaState::Complete(_) = meta.state {
                last.insert(db_key.to_vec(), Some(meta.created_at));
            }
        }
        for item in self.inner.thumbs.scan_prefix(keys::REMOTE_THUMB_PREFIX) {
            let (thumb_key, raw) = item?;
            let _: ThumbRecord = decode(&raw)?;
            if let Some(media) = keys::remote_thumb_media(&thumb_key) {
                last.entry(media.to_vec()).or_insert(None);
            }
        }
        let mut out = Vec::new();
        for (db_key, fetched) in last {
            let at = match self.inner.access.get(&db_key)? {
                Some(ms) => Some(read_u64(&ms)),
                None => fetched,
            };
            // Thumbnails only, never asked for since: as old as anything.
            if at.is_none_or(|at| at < before_ms)
                && !self.inner.quarantine.contains_key(&db_key)?
                && let Some(key) = keys::parse_media(&db_key)
            {
                out.push(key);
            }
        }
        Ok(out)
    }
}
