//! Per-user quotas on local media: most bytes and most files a user may store
//! (`media.user_quota_bytes`, `media.user_quota_files`; an admin may set other limits per user).
//!
//! What a user stores comes from the store (`userid_usage`); what their uploads in flight will
//! add is held here, so concurrent uploads cannot together overshoot: each upload holds its
//! declared length before a byte is read, and holds more as more arrives. A full quota is 403
//! `M_USER_LIMIT_EXCEEDED` with an `info_uri` (Matrix v1.18, MSC4335).
//!
//! Entries exist only while a user has uploads in flight, so memory is bounded by the uploads
//! running; each new first upload reads the stored usage afresh.

use std::{
    collections::HashMap,
    sync::{Arc, Mutex},
};

use crate::{
    config::MediaConfig,
    error::{Error, Result},
    store::{
        Store,
        usage::{QuotaOverride, Usage},
    },
};

/// The limits that apply to one user; 0 is unlimited.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    pub max_bytes: u64,
    pub max_files: u64,
}

impl Limits {
    fn with(self, admin: Option<QuotaOverride>) -> Self {
        let admin = admin.unwrap_or_default();
        Self {
            max_bytes: admin.max_bytes.unwrap_or(self.max_bytes),
            max_files: admin.max_files.unwrap_or(self.max_files),
        }
    }

    fn is_off(self) -> bool {
        self.max_bytes == 0 && self.max_files == 0
    }
}

#[derive(Debug)]
struct Live {
    /// Read from the store when the first upload began, plus what uploads committed since.
    stored: Usage,
    held_bytes: u64,
    held_files: u64,
    uploads: usize,
}

pub struct Quotas {
    defaults: Limits,
    info_uri: String,
    live: Arc<Mutex<HashMap<String, Live>>>,
}

/// What one upload holds against its user's quota; released on drop, kept as stored usage
/// once `committed`.
pub struct QuotaHold {
    live: Arc<Mutex<HashMap<String, Live>>>,
    user: String,
    limits: Limits,
    info_uri: String,
    bytes: u64,
    committed: bool,
}

impl Quotas {
    pub fn new(config: &MediaConfig) -> Self {
        Self {
            defaults: Limits {
                max_bytes: config.user_quota_bytes.as_u64(),
                max_files: config.user_quota_files,
            },
            info_uri: config.user_quota_info_uri.clone(),
            live: Arc::new(Mutex::new(HashMap::new())),
        }
    }

    /// The limits for `user` and what they store.
    pub async fn status(&self, store: &Store, user: &str) -> Result<(Limits, Usage)> {
        let (defaults, user) = (self.defaults, user.to_owned());
        store
            .blocking(move |s| Ok((defaults.with(s.quota_override(&user)?), s.usage(&user)?)))
            .await
    }

    /// Holds one file of `declared` bytes (0 when unknown) for an upload by `user`, or refuses
    /// it when the quota cannot take it. `None` when no limit applies to `user`.
    pub async fn begin(
        &self,
        store: &Store,
        user: &str,
        declared: Option<u64>,
    ) -> Result<Option<QuotaHold>> {
        let (limits, stored) = self.status(store, user).await?;
        if limits.is_off() {
            return Ok(None);
        }
        let declared = declared.unwrap_or(0);
        let mut live = self.lock()?;
        let entry = live.entry(user.to_owned()).or_insert(Live {
            stored,
            held_bytes: 0,
            held_files: 0,
            uploads: 0,
        });
        let files = entry.stored.files + entry.held_files;
        if limits.max_files > 0 && files >= limits.max_files {
            let message = format!(
                "You have reached your limit of {} files: delete some media before uploading more",
                limits.max_files
            );
            if entry.uploads == 0 {
                live.remove(user);
            }
            return Err(self.exceeded(message));
        }
        if limits.max_bytes > 0
            && entry.stored.bytes + entry.held_bytes + declared > limits.max_bytes
        {
            let message = bytes_message(limits.max_bytes);
            if entry.uploads == 0 {
                live.remove(user);
            }
            return Err(self.exceeded(message));
        }
        entry.held_bytes += declared;
        entry.held_files += 1;
        entry.uploads += 1;
        Ok(Some(QuotaHold {
            live: Arc::clone(&self.live),
            user: user.to_owned(),
            limits,
            info_uri: self.info_uri.clone(),
            bytes: declared,
            committed: false,
        }))
    }

    fn lock(&self) -> Result<std::sync::MutexGuard<'_, HashMap<String, Live>>> {
        self.live
            .lock()
            .map_err(|_| Error::internal("quota map poisoned"))
    }

    fn exceeded(&self, message: String) -> Error {
        Error::UserLimitExceeded {
            message,
            info_uri: self.info_uri.clone(),
        }
    }
}

fn bytes_message(max: u64) -> String {
    format!(
        "This upload would take you over your storage limit of {}: delete some media first",
        bytesize::ByteSize::b(max).display().iec()
    )
}

impl QuotaHold {
    /// Holds `received` bytes in all (more than declared, or nothing was), or refuses the upload
    /// once that would go over the quota.
    pub fn cover(&mut self, received: u64) -> Result<()> {
        if received <= self.bytes {
            return Ok(());
        }
        let extra = received - self.bytes;
        let mut live = self
            .live
            .lock()
            .map_err(|_| Error::internal("quota map poisoned"))?;
        let Some(entry) = live.get_mut(&self.user) else {
            return Err(Error::internal("quota hold without entry"));
        };
        if self.limits.max_bytes > 0
            && entry.stored.bytes + entry.held_bytes + extra > self.limits.max_bytes
        {
            return Err(Error::UserLimitExceeded {
                message: bytes_message(self.limits.max_bytes),
                info_uri: self.info_uri.clone(),
            });
        }
        entry.held_bytes += extra;
        self.bytes = received;
        Ok(())
    }

    /// The upload is stored: what it holds becomes stored usage when the hold is dropped.
    pub fn committed(&mut self) {
        self.committed = true;
    }
}

impl Drop for QuotaHold {
    fn drop(&mut self) {
        let Ok(mut live) = self.live.lock() else {
            return;
        };
        let Some(entry) = live.get_mut(&self.user) else {
            return;
        };
        entry.held_bytes = entry.held_bytes.saturating_sub(self.bytes);
        entry.held_files = entry.held_files.saturating_sub(1);
        if self.committed {
            entry.stored.bytes += self.bytes;
            entry.stored.files += 1;
        }
        entry.uploads = entry.uploads.saturating_sub(1);
        if entry.uploads == 0 {
            live.remove(&self.user);
        }
    }
}

impl super::MediaService {
    /// The limits that apply to `user`, what they store, and the admin's override if any.
    pub async fn quota(&self, user: &str) -> Result<(Limits, Usage, Option<QuotaOverride>)> {
        let (limits, usage) = self.quotas.status(&self.store, user).await?;
        let lookup = user.to_owned();
        let admin = self
            .store
            .blocking(move |s| s.quota_override(&lookup))
            .await?;
        Ok((limits, usage, admin))
    }

    /// Sets (or with `None`, removes) an admin's limits for `user`.
    pub async fn set_quota(
        &self,
        user: &str,
        limits: Option<QuotaOverride>,
        by: &str,
    ) -> Result<()> {
        let target = user.to_owned();
        self.store
            .blocking(move |s| s.set_quota_override(&target, limits))
            .await?;
        let action = if limits.is_some() {
            "set_quota"
        } else {
            "reset_quota"
        };
        tracing::info!(
            actor = by,
            action,
            target = user,
            count = 1,
            ?limits,
            "admin action"
        );
        Ok(())
    }
}
