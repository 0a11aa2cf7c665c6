//! Quarantine: media kept on disk for an admin to review, but served to nobody.
//!
//! - `mediaid_quarantine`: `server/mediaId` -> `Quarantined` (JSON): quarantined ids, local or
//!   remote, stored here or not (a remote id quarantined before it was ever fetched stays
//!   unserved when it is fetched later).
//! - `mediaid_protected`: `server/mediaId` -> when (ms, big-endian): local media an admin
//!   protected from quarantine (stickers, shared emotes): bulk quarantines pass it by.
//! - `sha256_quarantine`: hex sha256 -> `Quarantined` (JSON): quarantined bytes. Every media id
//!   holding them is quarantined, and so is every later upload or remote fetch of them, in the
//!   same transaction that stores it (`commit_upload`), so nobody can download it in between.
//!
//! The ids that hold some bytes are found in `sha256_holder` (see `index`): the media stored
//! with them, and remote media whose origin sent a thumbnail made of them, which is quarantined
//! as a whole.

use std::collections::HashSet;

use serde::{Deserialize, Serialize};

use super::{Result, Store, decode, encode, index::Holder, keys};
use crate::model::{
    id::MediaKey,
    meta::{MediaMeta, MediaState},
};

/// Who quarantined media or bytes, and when.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Quarantined {
    pub by: String,
    /// Milliseconds since the epoch.
    pub at: u64,
}

/// Where an item stands with respect to quarantine.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct QuarantineState {
    pub quarantined: Option<Quarantined>,
    pub protected: bool,
}

/// What a quarantine (or its undoing) changed.
#[derive(Debug, Default)]
pub struct Marked {
    /// Ids whose state changed, with the bytes they hold (to forget from memory caches).
    pub keys: Vec<(MediaKey, Option<String>)>,
    /// How many of them are stored here (complete or reserved), as Synapse counts.
    pub stored: usize,
}

impl Store {
    /// Quarantine state of one id.
    pub fn quarantine_state(&self, key: &MediaKey) -> Result<QuarantineState> {
        let db_key = keys::media(key);
        Ok(QuarantineState {
            quarantined: self
                .inner
                .quarantine
                .get(&db_key)?
                .map(|v| decode(&v))
                .transpose()?,
            protected: self.inner.protected.contains_key(&db_key)?,
        })
    }

    /// Whether `key` may not be served: quarantined, or blocked by an admin.
    pub fn is_withheld(&self, key: &MediaKey) -> Result<bool> {
        let db_key = keys::media(key);
        Ok(self.inner.quarantine.contains_key(&db_key)?
            || self.inner.blocked.contains_key(&db_key)?)
    }

    /// Metadata of `key` unless it is quarantined: what downloads may see.
    pub fn get_servable_meta(&self, key: &MediaKey) -> Result<Option<MediaMeta>> {
        let meta = self.get_meta(key)?;
        if meta.is_some() && self.inner.quarantine.contains_key(keys::media(key))? {
            return Ok(None);
        }
        Ok(meta)
    }

    /// Quarantines `media` (protected ones excepted) and, of those stored complete, their bytes:
    /// every other id holding the same bytes, and every later upload or fetch of them.
    /// Durable when it returns.
    pub fn quarantine_media(&self, media: &[MediaKey], by: &Quarantined) -> Result<Marked> {
        let _writing = self.writing()?;
        let value = encode(by)?;
        let mut hashes = HashSet::new();
        let mut direct = Vec::new();
        for key in media {
            let db_key = keys::media(key);
            if self.inner.protected.contains_key(&db_key)? {
                continue;
            }
            if let Some(meta) = self.get_meta(key)?
                && let MediaState::Complete(content) = meta.state
            {
                hashes.insert(content.sha256);
            }
            direct.push((key.clone(), db_key));
        }
        // The hashes first: an upload of these bytes committing from now on is quarantined
        // by its own transaction, and one committed before is found by the scan below.
        for sha256 in &hashes {
            if !self.inner.hash_quarantine.contains_key(sha256)? {
                self.inner
                    .hash_quarantine
                    .insert(sha256.as_bytes(), value.as_slice())?;
            }
        }
        let mut marked = Marked::default();
        for (key, db_key) in direct {
            let stored = self.inner.meta.contains_key(&db_key)?;
            if self
                .inner
                .quarantine
                .insert(&db_key, value.as_slice())?
                .is_none()
            {
                marked.stored += usize::from(stored);
                marked.keys.push((key, None));
            }
        }
        let same_bytes = self.quarantine_holders(&hashes, &value)?;
        marked.stored += same_bytes.stored;
        marked.keys.extend(same_bytes.keys);
        self.flush()?;
        Ok(marked)
    }

    /// Quarantines bytes by hash, as an admin adding to the shared block list: the hashes, and
    /// every id holding them now. Durable when it returns.
    pub fn quarantine_hashes(
        &self,
        hashes: &[String],
        by: &Quarantined,
    ) -> Result<(usize, Marked)> {
        let _writing = self.writing()?;
        let value = encode(by)?;
        let mut added = 0;
        for sha256 in hashes {
            if self
                .inner
                .hash_quarantine
                .insert(sha256.as_bytes(), value.as_slice())?
                .is_none()
            {
                added += 1;
            }
        }
        let wanted: HashSet<String> = hashes.iter().cloned().collect();
        let marked = self.quarantine_holders(&wanted, &value)?;
        self.flush()?;
        Ok((added, marked))
    }

    /// Marks every unprotected id holding one of `hashes` as quarantined by `value`.
    fn quarantine_holders(&self, hashes: &HashSet<String>, value: &[u8]) -> Result<Marked> {
        let mut marked = Marked::default();
        for sha256 in hashes {
            for holder in self.holders(sha256)? {
                let (db_key, bytes) = holder_key(holder, sha256);
                if self.inner.protected.contains_key(&db_key)? {
                    continue;
                }
                if self.inner.quarantine.insert(&db_key, value)?.is_none()
                    && let Some(key) = keys::parse_media(&db_key)
                {
                    marked.stored += 1;
                    marked.keys.push((key, bytes));
                }
            }
        }
        Ok(marked)
    }

    /// Takes `key` out of quarantine, and with it its bytes: the hash leaves the list and every
    /// other id quarantined for holding the same bytes is served again. Durable when it returns.
    pub fn unquarantine_media(&self, key: &MediaKey) -> Result<Marked> {
        let _writing = self.writing()?;
        let mut marked = Marked::default();
        let db_key = keys::media(key);
        let sha256 = match self.get_meta(key)? {
            Some(MediaMeta {
                state: MediaState::Complete(content),
                ..
            }) => Some(content.sha256),
            _ => None,
        };
        if self.inner.quarantine.remove(&db_key)?.is_some() {
            marked.stored += 1;
            marked.keys.push((key.clone(), sha256.clone()));
        }
        if let Some(sha256) = sha256 {
            let others = self.unquarantine_hashes_locked(&[sha256])?;
            marked.stored += others.1.stored;
            marked.keys.extend(others.1.keys);
        }
        self.flush()?;
        Ok(marked)
    }

    /// Removes hashes from the list and serves again every id quarantined for holding them.
    /// Returns how many hashes were listed. Durable when it returns.
    pub fn unquarantine_hashes(&self, hashes: &[String]) -> Result<(usize, Marked)> {
        let _writing = self.writing()?;
        let out = self.unquarantine_hashes_locked(hashes)?;
        self.flush()?;
        Ok(out)
    }

    fn unquarantine_hashes_locked(&self, hashes: &[String]) -> Result<(usize, Marked)> {
        let mut removed = 0;
        for sha256 in hashes {
            if self
                .inner
                .hash_quarantine
                .remove(sha256.as_bytes())?
                .is_some()
            {
                removed += 1;
            }
        }
        let mut marked = Marked::default();
        for sha256 in hashes {
            for holder in self.holders(sha256)? {
                let (db_key, bytes) = holder_key(holder, sha256);
                if self.inner.quarantine.remove(&db_key)?.is_some()
                    && let Some(key) = keys::parse_media(&db_key)
                {
                    marked.stored += 1;
                    marked.keys.push((key, bytes));
                }
            }
        }
        Ok((removed, marked))
    }

    /// Whether any bytes are quarantined by hash: while some are, no remote media may reach a
    /// client before its hash is known.
    pub fn has_quarantined_hashes(&self) -> Result<bool> {
        Ok(!self.inner.hash_quarantine.is_empty())
    }

    /// Who quarantined the bytes `sha256`, if they are.
    pub fn hash_quarantine(&self, sha256: &str) -> Result<Option<Quarantined>> {
        self.inner
            .hash_quarantine
            .get(sha256)?
            .map(|v| decode(&v))
            .transpose()
    }

    /// Quarantined hashes in order, from just after `after`, at most `limit`.
    pub fn list_quarantined_hashes(
        &self,
        after: Option<&str>,
        limit: usize,
    ) -> Result<Vec<String>> {
        let range = match after {
            Some(after) => self.inner.hash_quarantine.range::<&[u8], _>((
                std::ops::Bound::Excluded(after.as_bytes()),
                std::ops::Bound::Unbounded,
            )),
            None => self.inner.hash_quarantine.iter(),
        };
        let mut out = Vec::new();
        for item in range.take(limit) {
            let (key, _) = item?;
            out.push(String::from_utf8_lossy(&key).into_owned());
        }
        Ok(out)
    }

    /// Protects local media from quarantine, or lifts the protection. Unknown ids change
    /// nothing. Returns whether the id is stored here.
    pub fn set_protected(&self, key: &MediaKey, protected: bool, at: u64) -> Result<bool> {
        let _writing = self.writing()?;
        let db_key = keys::media(key);
        if !self.inner.meta.contains_key(&db_key)? {
            return Ok(false);
        }
        if protected {
            self.inner.protected.insert(&db_key, &at.to_be_bytes())?;
        } else {
            self.inner.protected.remove(&db_key)?;
        }
        self.flush()?;
        Ok(true)
    }
}

/// The `server/mediaId` key a holder of `sha256` is quarantined under, and the bytes that id
/// holds itself (to forget from memory caches), if they are these.
fn holder_key(holder: Holder, sha256: &str) -> (Vec<u8>, Option<String>) {
    match holder {
        Holder::Media(db_key) => (db_key, Some(sha256.to_owned())),
        Holder::RemoteThumb(db_key) => (db_key, None),
    }
}
