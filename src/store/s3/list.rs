//! Listing the blobs in the bucket: every key under the prefix that names a blob, for the
//! sweep (only those older than its grace period) and for tools.

use std::{
    io,
    time::{Duration, Instant, SystemTime},
};

use futures_util::StreamExt as _;
use object_store::{ObjectStore as _, path::Path};

use super::{S3Blobs, backend_error, from_object_store};

impl S3Blobs {
    /// Every blob under the prefix, however young (for tools and tests; the sweep uses
    /// `list`, which leaves out the young).
    pub fn list_all(&self) -> io::Result<Vec<String>> {
        self.list_older_than(Duration::ZERO)
    }

    /// The blobs under the prefix at least `grace` old.
    pub(super) fn list_older_than(&self, grace: Duration) -> io::Result<Vec<String>> {
        let store = self.client();
        let prefix = list_prefix(&self.shared.prefix);
        let root = self.shared.prefix.clone();
        let read_timeout = self.shared.read_timeout;
        self.run(async move {
            let started = Instant::now();
            let mut listing = store.list(prefix.as_ref());
            let mut out = Vec::new();
            let now = SystemTime::now();
            loop {
                let next = tokio::time::timeout(read_timeout, listing.next()).await;
                let Ok(next) = next else {
                    return Err(backend_error("list", "timed out"));
                };
                let Some(meta) = next else {
                    break;
                };
                let meta = meta.map_err(|e| from_object_store("list", e))?;
                let Some(sha256) = sha256_of(&root, meta.location.as_ref()) else {
                    continue;
                };
                let modified = u64::try_from(meta.last_modified.timestamp_millis()).unwrap_or(0);
                let age = now
                    .duration_since(SystemTime::UNIX_EPOCH)
                    .unwrap_or_default()
                    .saturating_sub(Duration::from_millis(modified));
                if age >= grace {
                    out.push(sha256);
                }
            }
            metrics::histogram!("mxmedia_s3_request_duration_seconds", "op" => "list")
                .record(started.elapsed().as_secs_f64());
            Ok(out)
        })?
    }
}

fn list_prefix(prefix: &str) -> Option<Path> {
    let trimmed = prefix.trim_end_matches('/');
    (!trimmed.is_empty()).then(|| Path::from(trimmed))
}

/// The hash a listed key names, if it is a blob key (not a probe or someone else's object).
fn sha256_of(prefix: &str, key: &str) -> Option<String> {
    let rest = key.strip_prefix(prefix)?;
    let (shard, sha256) = rest.split_once('/')?;
    let is_hex = sha256.len() == 64
        && sha256
            .bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b));
    (is_hex && sha256.get(..2) == Some(shard)).then(|| sha256.to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::s3::object_key;

    #[test]
    fn keys_are_sharded_by_the_first_two_hex_digits_under_the_prefix() {
        let sha = "ab".repeat(32);
        assert_eq!(
            object_key("mx/", &sha).as_ref(),
            format!("mx/ab/{sha}").as_str()
        );
        assert_eq!(object_key("", &sha).as_ref(), format!("ab/{sha}").as_str());
        assert_eq!(sha256_of("mx/", &format!("mx/ab/{sha}")), Some(sha.clone()));
        assert_eq!(sha256_of("mx/", &format!("mx/cd/{sha}")), None);
        assert_eq!(sha256_of("mx/", "mx/.probe-1"), None);
        assert_eq!(sha256_of("", &format!("other/ab/{sha}")), None);
    }
}
