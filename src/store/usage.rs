//! What each local user stores, and the quota an admin set for them.
//!
//! - `userid_usage`: user id -> bytes and files of their complete media (two big-endian u64),
//!   kept in step with `mediaid_meta` by the transactions that add and remove media, so a quota
//!   check costs one read instead of a scan. Counted from `mediaid_meta` once, at the first
//!   start that has this tree (marked by `COUNTED`).
//! - `userid_quota`: user id -> `QuotaOverride` (JSON), an admin's limits for one user.
//!
//! Only users (ids starting with `@`) are counted: remote media is kept under its server's name.

use serde::{Deserialize, Serialize};
use sled::transaction::{ConflictableTransactionError, TransactionalTree};

use super::{Result, Store, StoreError, decode, encode, read_u64};
use crate::model::meta::{MediaMeta, MediaState};

/// Present once `userid_usage` has been counted from `mediaid_meta`. No user id starts with NUL.
const COUNTED: &[u8] = b"\0counted";

/// Bytes and files a user stores.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Usage {
    pub bytes: u64,
    pub files: u64,
}

/// An admin's limits for one user; `None` keeps the configured default. 0 is unlimited.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct QuotaOverride {
    pub max_bytes: Option<u64>,
    pub max_files: Option<u64>,
}

fn decode_usage(raw: &[u8]) -> Usage {
    let (bytes, files) = raw.split_at_checked(8).unwrap_or((&[], &[]));
    Usage {
        bytes: read_u64(bytes),
        files: read_u64(files),
    }
}

fn encode_usage(usage: Usage) -> [u8; 16] {
    let mut out = [0; 16];
    let (bytes, files) = out.split_at_mut(8);
    bytes.copy_from_slice(&usage.bytes.to_be_bytes());
    files.copy_from_slice(&usage.files.to_be_bytes());
    out
}

/// Adds (`grow`) or takes away one file of `len` bytes from `user`'s usage, in a transaction.
pub(super) fn count(
    tree: &TransactionalTree,
    user: &str,
    len: u64,
    grow: bool,
) -> Result<(), ConflictableTransactionError<StoreError>> {
    if !user.starts_with('@') {
        return Ok(());
    }
    let mut usage = tree
        .get(user.as_bytes())?
        .map(|raw| decode_usage(&raw))
        .unwrap_or_default();
    if grow {
        usage.bytes = usage.bytes.saturating_add(len);
        usage.files = usage.files.saturating_add(1);
    } else {
        usage.bytes = usage.bytes.saturating_sub(len);
        usage.files = usage.files.saturating_sub(1);
    }
    tree.insert(user.as_bytes(), &encode_usage(usage))?;
    Ok(())
}

impl Store {
    /// Counts `userid_usage` from `mediaid_meta` unless done before. Run at open, before any
    /// writer.
    pub(super) fn count_usage_once(&self) -> Result<()> {
        if self.inner.usage.contains_key(COUNTED)? {
            return Ok(());
        }
        let mut totals: std::collections::BTreeMap<String, Usage> = Default::default();
        for item in &self.inner.meta {
            let (_, raw) = item?;
            let meta: MediaMeta = decode(&raw)?;
            if let MediaState::Complete(content) = meta.state
                && meta.uploader.starts_with('@')
            {
                let usage = totals.entry(meta.uploader).or_default();
                usage.bytes = usage.bytes.saturating_add(content.len);
                usage.files = usage.files.saturating_add(1);
            }
        }
        let mut batch = sled::Batch::default();
        for (user, usage) in totals {
            batch.insert(user.as_bytes(), &encode_usage(usage));
        }
        batch.insert(COUNTED, &[]);
        self.inner.usage.apply_batch(batch)?;
        self.flush()
    }

    /// What `user` stores now.
    pub fn usage(&self, user: &str) -> Result<Usage> {
        Ok(self
            .inner
            .usage
            .get(user.as_bytes())?
            .map(|raw| decode_usage(&raw))
            .unwrap_or_default())
    }

    pub fn quota_override(&self, user: &str) -> Result<Option<QuotaOverride>> {
        self.inner
            .quotas
            .get(user.as_bytes())?
            .map(|raw| decode(&raw))
            .transpose()
    }

    /// Sets (or with `None`, removes) an admin's limits for `user`. Durable when it returns.
    pub fn set_quota_override(&self, user: &str, limits: Option<QuotaOverride>) -> Result<()> {
        let _writing = self.writing()?;
        match limits {
            Some(limits) => {
                self.inner
                    .quotas
                    .insert(user.as_bytes(), encode(&limits)?)?;
            }
            None => {
                self.inner.quotas.remove(user.as_bytes())?;
            }
        }
        self.flush()
    }
}

#[cfg(test)]
mod tests {
    use super::{Usage, decode_usage, encode_usage};

    /// Usage survives its encoding, and a damaged value reads as nothing stored, never a panic.
    #[test]
    fn usage_round_trips() {
        let usage = Usage {
            bytes: 1 << 40,
            files: 7,
        };
        assert_eq!(decode_usage(&encode_usage(usage)), usage);
        assert_eq!(decode_usage(b"short"), Usage::default());
    }
}
