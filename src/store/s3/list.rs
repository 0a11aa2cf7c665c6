//! What the bucket holds: every key under the prefix that names a blob, visited a page at a
//! time for the sweep (only those older than its grace period) and gathered for tools; and
//! one blob's length, by a HEAD.

use std::{
    io,
    time::{Duration, Instant, SystemTime},
};

use futures_util::{StreamExt as _, stream::BoxStream};
use object_store::{ObjectMeta, ObjectStore as _, ObjectStoreExt as _, path::Path};

use super::{S3Blobs, backend_error, from_object_store};

/// Keys taken from the listing before the caller sees them: one page of ListObjectsV2 (its
/// maximum), so memory stays that of a page however large the bucket.
const PAGE: usize = 1000;

type Listing = BoxStream<'static, object_store::Result<ObjectMeta>>;

impl S3Blobs {
    /// Every blob under the prefix, however young (for tools and tests; the sweep uses
    /// `visit`, which leaves out the young and holds no more than a page).
    pub fn list_all(&self) -> io::Result<Vec<String>> {
        let mut out = Vec::new();
        self.visit_older_than(Duration::ZERO, &mut |sha256| {
            out.push(sha256.to_owned());
            Ok(())
        })?;
        Ok(out)
    }

    /// Calls `each` with the blobs under the prefix at least `grace` old, a page at a time:
    /// the page is received on the S3 runtime, and `each` runs on the caller's thread (where
    /// it may make S3 requests of its own, such as removing what it was given).
    pub(super) fn visit_older_than(
        &self,
        grace: Duration,
        each: &mut dyn FnMut(&str) -> io::Result<()>,
    ) -> io::Result<()> {
        let started = Instant::now();
        let now = SystemTime::now()
            .duration_since(SystemTime::UNIX_EPOCH)
            .unwrap_or_default();
        let root = self.shared.prefix.clone();
        let mut listing: Option<Listing> = None;
        loop {
            let (rest, page) = self.next_page(listing.take())?;
            for meta in &page {
                let Some(sha256) = sha256_of(&root, meta.location.as_ref()) else {
                    continue;
                };
                let modified = u64::try_from(meta.last_modified.timestamp_millis()).unwrap_or(0);
                if now.saturating_sub(Duration::from_millis(modified)) >= grace {
                    each(&sha256)?;
                }
            }
            match rest {
                Some(rest) => listing = Some(rest),
                None => break,
            }
        }
        metrics::histogram!("mxmedia_s3_request_duration_seconds", "op" => "list")
            .record(started.elapsed().as_secs_f64());
        Ok(())
    }

    /// Up to `PAGE` entries of the listing (started with `None`), and the listing to go on
    /// with, `None` once it ended. Each wait for the next entry is bounded by the read timeout.
    fn next_page(
        &self,
        listing: Option<Listing>,
    ) -> io::Result<(Option<Listing>, Vec<ObjectMeta>)> {
        let store = self.client();
        let prefix = list_prefix(&self.shared.prefix);
        let read_timeout = self.shared.read_timeout;
        self.run(async move {
            let mut listing = listing.unwrap_or_else(|| store.list(prefix.as_ref()));
            let mut page = Vec::with_capacity(PAGE);
            while page.len() < PAGE {
                let Ok(next) = tokio::time::timeout(read_timeout, listing.next()).await else {
                    return Err(backend_error("list", "timed out"));
                };
                match next {
                    Some(meta) => page.push(meta.map_err(|e| from_object_store("list", e))?),
                    None => return Ok((None, page)),
                }
            }
            Ok((Some(listing), page))
        })?
    }

    /// The length of blob `sha256` from a HEAD of its object, `None` when there is none.
    pub(super) fn head_len(&self, sha256: &str) -> io::Result<Option<u64>> {
        let store = self.client();
        let key = self.key(sha256);
        match self.request("head", self.shared.op_deadline, async move {
            store.head(&key).await
        }) {
            Ok(meta) => Ok(Some(meta.size)),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(e),
        }
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
