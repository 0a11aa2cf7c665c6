//! Images stored for URL previews, kept apart from users' media: their `mediaid_meta` record
//! names `PREVIEW_UPLOADER` (so no quota, listing or statistic of a user counts them) and they
//! are listed here, oldest first, to expire with the preview cache.
//!
//! `createdid_previewimage`: creation time (ms, big-endian) + `server/mediaId` -> the image's
//! length (u64, big-endian) + the `urlts_preview` key of the preview it was fetched for. The
//! special keys start with 0xff, which no creation time before the year 584 million does:
//! `TOTAL`, the bytes of the distinct blobs listed images hold, kept in step by the
//! transactions that list and unlist them, so the size cap costs one read per new image;
//! `BLOB` + sha256, how many listed images hold those bytes (so a page's image seen on many
//! pages counts once, as its blob is stored once); `MIGRATED`, present once the images earlier
//! versions stored as the requesting user's media were moved here; and `BY_BLOB`, present once
//! `TOTAL` was recounted by blob for a store that counted every image.

use std::collections::{HashMap, hash_map::Entry};

use sled::{
    Transactional,
    transaction::{ConflictableTransactionError, TransactionalTree},
};

use super::{Result, Store, StoreError, decode, encode, read_u64, tx_error, usage};
use crate::model::meta::{MediaMeta, MediaState, PREVIEW_UPLOADER};

const TOTAL: &[u8] = b"\xfftotal";
const MIGRATED: &[u8] = b"\xffmigrated";
const BY_BLOB: &[u8] = b"\xffby_blob";
/// Prefix of the holder counts, followed by the hex sha256.
const BLOB: &[u8] = b"\xffsha256:";
/// Every listed image's key sorts before this.
const SPECIAL: &[u8] = b"\xff";

fn entry_key(created_at: u64, db_key: &[u8]) -> Vec<u8> {
    let mut key = created_at.to_be_bytes().to_vec();
    key.extend_from_slice(db_key);
    key
}

/// The creation time and `server/mediaId` of a listed image's key.
fn parse_entry_key(key: &[u8]) -> Option<(u64, &[u8])> {
    let (created_at, db_key) = key.split_at_checked(8)?;
    Some((read_u64(created_at), db_key))
}

/// The length and preview key of a listed image.
fn parse_entry(value: &[u8]) -> (u64, &[u8]) {
    let (len, preview_key) = value.split_at_checked(8).unwrap_or((&[], &[]));
    (read_u64(len), preview_key)
}

fn add_total(
    tree: &TransactionalTree,
    len: u64,
    grow: bool,
) -> Result<(), ConflictableTransactionError<StoreError>> {
    let total = tree.get(TOTAL)?.map_or(0, |raw| read_u64(&raw));
    let total = if grow {
        total.saturating_add(len)
    } else {
        total.saturating_sub(len)
    };
    tree.insert(TOTAL, &total.to_be_bytes())?;
    Ok(())
}

fn blob_key(sha256: &str) -> Vec<u8> {
    let mut key = BLOB.to_vec();
    key.extend_from_slice(sha256.as_bytes());
    key
}

/// The image `db_key`: `len` bytes with hash `sha256`, created at `created_at`.
pub(super) struct Image<'a> {
    pub(super) db_key: &'a [u8],
    pub(super) created_at: u64,
    pub(super) sha256: &'a str,
    pub(super) len: u64,
}

/// Lists `image`, fetched for the preview cached under `preview_key`, in the transaction that
/// commits it; its bytes count towards the total unless another listed image holds them.
pub(super) fn enter(
    tree: &TransactionalTree,
    image: &Image<'_>,
    preview_key: &[u8],
) -> Result<(), ConflictableTransactionError<StoreError>> {
    let mut value = image.len.to_be_bytes().to_vec();
    value.extend_from_slice(preview_key);
    tree.insert(entry_key(image.created_at, image.db_key), value)?;
    let blob = blob_key(image.sha256);
    let holders = tree.get(&blob)?.map_or(0, |raw| read_u64(&raw));
    tree.insert(blob, &holders.saturating_add(1).to_be_bytes())?;
    if holders == 0 {
        add_total(tree, image.len, true)?;
    }
    Ok(())
}

/// Unlists the image `db_key` in the transaction that removes it, and drops the cached preview
/// that shows it: served later, that preview would point at an image that is gone, while a
/// preview fetched again gets an image that is there.
pub(super) fn leave(
    tree: &TransactionalTree,
    previews: &TransactionalTree,
    image: &Image<'_>,
) -> Result<(), ConflictableTransactionError<StoreError>> {
    let db_key = image.db_key;
    let Some(value) = tree.remove(entry_key(image.created_at, db_key))? else {
        return Ok(());
    };
    let (len, preview_key) = parse_entry(&value);
    let blob = blob_key(image.sha256);
    match tree.get(&blob)?.map_or(0, |raw| read_u64(&raw)) {
        0 | 1 => {
            tree.remove(blob)?;
            add_total(tree, len, false)?;
        }
        holders => {
            tree.insert(blob, &(holders - 1).to_be_bytes())?;
        }
    }
    // Only if the preview cached there is still the one with this image (media ids are unique
    // and random, so their text in the JSON says so).
    let media_id = db_key.rsplit(|&b| b == b'/').next().unwrap_or_default();
    if !media_id.is_empty()
        && let Some(preview) = previews.get(preview_key)?
        && preview.windows(media_id.len()).any(|w| w == media_id)
    {
        previews.remove(preview_key)?;
    }
    Ok(())
}

/// What one expiry of preview images did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PreviewImagesSwept {
    pub removed: usize,
    pub removed_bytes: u64,
    /// Bytes of the preview images left.
    pub kept_bytes: u64,
}

impl Store {
    /// Bytes of all preview images stored.
    pub fn preview_images_bytes(&self) -> Result<u64> {
        Ok(self
            .inner
            .preview_images
            .get(TOTAL)?
            .map_or(0, |raw| read_u64(&raw)))
    }

    /// Removes the preview images created before `created_before`, then the oldest of the rest
    /// while they take more than `max_bytes`, each with its thumbnails (and with the last
    /// reference, its bytes: a user's upload of the same bytes keeps them). Calls `removed`
    /// with each `server/mediaId` key right after it is gone. Durable when it returns.
    pub fn expire_preview_images(
        &self,
        created_before: u64,
        max_bytes: u64,
        mut removed: impl FnMut(&[u8]),
    ) -> Result<PreviewImagesSwept> {
        let mut kept = self.preview_images_bytes()?;
        let mut victims = Vec::new();
        // Listed images of each blob not chosen yet: its bytes stop counting with the last.
        let mut holders_left: HashMap<String, u64> = HashMap::new();
        for item in self.inner.preview_images.range(..SPECIAL) {
            let (key, value) = item?;
            let Some((created_at, db_key)) = parse_entry_key(&key) else {
                continue;
            };
            // Oldest first: once one is young enough and within the cap, so is the rest.
            if created_at >= created_before && kept <= max_bytes {
                break;
            }
            let (len, _) = parse_entry(&value);
            let freed = match self.image_sha256(db_key)? {
                Some(sha256) => {
                    let left = match holders_left.entry(sha256) {
                        Entry::Occupied(e) => e.into_mut(),
                        Entry::Vacant(e) => {
                            let holders = self.inner.preview_images.get(blob_key(e.key()))?;
                            e.insert(holders.map_or(1, |raw| read_u64(&raw)))
                        }
                    };
                    *left = left.saturating_sub(1);
                    if *left == 0 { len } else { 0 }
                }
                // Gone already: its removal below only tidies the entry.
                None => 0,
            };
            kept = kept.saturating_sub(freed);
            victims.push((db_key.to_vec(), freed));
        }
        let mut swept = PreviewImagesSwept::default();
        let mut files = Vec::new();
        for (db_key, freed) in victims {
            let gone = self.remove_entry(&db_key, None)?;
            files.extend(gone.files);
            if gone.existed {
                swept.removed += 1;
                swept.removed_bytes = swept.removed_bytes.saturating_add(freed);
            }
            removed(&db_key);
        }
        if swept.removed > 0 {
            self.settle(&files)?;
        }
        swept.kept_bytes = self.preview_images_bytes()?;
        Ok(swept)
    }

    /// The sha256 of the complete media `db_key`, if it is.
    fn image_sha256(&self, db_key: &[u8]) -> Result<Option<String>> {
        let Some(raw) = self.inner.meta.get(db_key)? else {
            return Ok(None);
        };
        Ok(match decode::<MediaMeta>(&raw)?.state {
            MediaState::Complete(content) => Some(content.sha256),
            MediaState::Pending { .. } => None,
        })
    }

    /// Counts `TOTAL` and the holder counts by blob for a store that counted every image,
    /// unless done before. Run at open, before any writer, after `migrate_preview_images_once`.
    pub(super) fn count_preview_images_by_blob_once(&self) -> Result<()> {
        let tree = &self.inner.preview_images;
        if tree.contains_key(BY_BLOB)? {
            return Ok(());
        }
        let mut holders: HashMap<String, (u64, u64)> = HashMap::new();
        for item in tree.range(..SPECIAL) {
            let (key, value) = item?;
            if let Some((_, db_key)) = parse_entry_key(&key)
                && let Some(sha256) = self.image_sha256(db_key)?
            {
                let (len, _) = parse_entry(&value);
                holders.entry(sha256).or_insert((0, len)).0 += 1;
            }
        }
        let mut batch = sled::Batch::default();
        for old in tree.scan_prefix(BLOB) {
            batch.remove(old?.0);
        }
        let mut total = 0u64;
        for (sha256, (count, len)) in &holders {
            batch.insert(blob_key(sha256), &count.to_be_bytes());
            total = total.saturating_add(*len);
        }
        batch.insert(TOTAL, &total.to_be_bytes());
        batch.insert(BY_BLOB, &[]);
        tree.apply_batch(batch)?;
        self.flush()?;
        Ok(())
    }

    /// Moves the images that versions before this tree stored as the requesting user's media
    /// out of that user's media and usage, unless done before. Run at open, before any writer.
    ///
    /// They are told apart by the previews still cached: a cached preview's `og:image` is
    /// always an image stored for it under a fresh id. Images of previews no longer cached
    /// cannot be told from uploads without a file name, so they stay the user's.
    pub(super) fn migrate_preview_images_once(&self, own: &str) -> Result<usize> {
        if self.inner.preview_images.contains_key(MIGRATED)? {
            return Ok(0);
        }
        let prefix = format!("mxc://{own}/");
        let mut found = Vec::new();
        for item in &self.inner.previews {
            let (preview_key, value) = item?;
            let json = value.get(8..).unwrap_or_default();
            let Ok(og) = serde_json::from_slice::<serde_json::Value>(json) else {
                continue;
            };
            if let Some(id) = og
                .get("og:image")
                .and_then(|v| v.as_str())
                .and_then(|mxc| mxc.strip_prefix(prefix.as_str()))
                && let Ok(media_id) = id.parse::<mxmedia_proto::ids::MediaId>()
            {
                found.push((
                    format!("{own}/{}", media_id.as_str()).into_bytes(),
                    preview_key.to_vec(),
                ));
            }
        }
        let mut moved = 0;
        for (db_key, preview_key) in found {
            let _writing = self.writing()?;
            let done = (
                &self.inner.meta,
                &self.inner.usage,
                &self.inner.preview_images,
            )
                .transaction(|(meta_tree, usage_tree, preview_tree)| {
                    let Some(raw) = meta_tree.get(&db_key)? else {
                        return Ok(false);
                    };
                    let mut meta: MediaMeta =
                        decode(&raw).map_err(ConflictableTransactionError::Abort)?;
                    let MediaState::Complete(content) = &meta.state else {
                        return Ok(false);
                    };
                    // As `preview::fetch::store_image` stored them: no file name, an image type.
                    if !meta.uploader.starts_with('@')
                        || content.filename.is_some()
                        || !content.content_type.starts_with("image/")
                    {
                        return Ok(false);
                    }
                    let len = content.len;
                    usage::count(usage_tree, &meta.uploader, len, false)?;
                    meta.uploader = PREVIEW_UPLOADER.to_owned();
                    meta_tree.insert(
                        db_key.as_slice(),
                        encode(&meta).map_err(ConflictableTransactionError::Abort)?,
                    )?;
                    let image = Image {
                        db_key: &db_key,
                        created_at: meta.created_at,
                        sha256: &content.sha256,
                        len,
                    };
                    enter(preview_tree, &image, &preview_key)?;
                    Ok(true)
                })
                .map_err(tx_error)?;
            moved += usize::from(done);
        }
        self.inner.preview_images.insert(MIGRATED, &[])?;
        self.flush()?;
        if moved > 0 {
            tracing::info!(
                moved,
                "URL preview images moved out of their requesters' media"
            );
        }
        Ok(moved)
    }
}

#[cfg(test)]
mod tests {
    use mxmedia_proto::ids::MediaId;

    use super::{BLOB, BY_BLOB, MIGRATED, TOTAL, parse_entry, parse_entry_key};
    use crate::{
        config::Config,
        model::{id::MediaKey, meta::PREVIEW_UPLOADER},
        store::{Expect, Store, Upload, keys},
    };

    fn upload(store: &Store, bytes: &[u8], filename: Option<&str>) -> MediaKey {
        let key = MediaKey {
            server_name: "localhost".parse().unwrap(),
            media_id: MediaId::generate(),
        };
        let mut staging = store.stage().unwrap();
        staging.write(bytes).unwrap();
        let upload = Upload {
            content_type: "image/png".into(),
            filename: filename.map(str::to_owned),
            uploader: "@a:localhost",
            created_at: 5,
            expect: Expect::Absent,
        };
        store
            .commit_upload(&key, staging.finish().unwrap(), upload)
            .unwrap();
        key
    }

    fn cache_preview(store: &Store, url: &str, image: &MediaKey) {
        let og = serde_json::json!({"og:title": "t", "og:image": image.to_string()});
        let json = serde_json::to_vec(&og).unwrap();
        store
            .put_preview(&keys::preview(url, 1), &json, u64::MAX)
            .unwrap();
    }

    /// A store written before preview images were kept apart: at the next open, the images
    /// that cached previews show stop being the requester's media (usage and all), while
    /// uploads stay the user's, even one a preview names but that has a file name.
    #[test]
    fn earlier_preview_images_move_out_of_the_users_media() {
        let dir = tempfile::tempdir().unwrap();
        let config = Config {
            data_dir: dir.path().to_path_buf(),
            ..Config::default()
        };
        let (image, named, upload_key) = {
            let store = Store::open(&config).unwrap();
            let image = upload(&store, b"preview image", None);
            let named = upload(&store, b"named", Some("cat.png"));
            let upload_key = upload(&store, b"an upload", None);
            cache_preview(&store, "https://a.example/", &image);
            cache_preview(&store, "https://b.example/", &named);
            // As a store of the earlier version looks: no migration done.
            store.inner.preview_images.remove(MIGRATED).unwrap();
            store.flush().unwrap();
            assert_eq!(store.usage("@a:localhost").unwrap().files, 3);
            (image, named, upload_key)
        };
        let store = Store::open(&config).unwrap();
        let meta = store.get_meta(&image).unwrap().unwrap();
        assert_eq!(meta.uploader, PREVIEW_UPLOADER);
        let usage = store.usage("@a:localhost").unwrap();
        assert_eq!((usage.files, usage.bytes), (2, 14));
        assert_eq!(store.preview_images_bytes().unwrap(), 13);
        for kept in [&named, &upload_key] {
            assert_eq!(
                store.get_meta(kept).unwrap().unwrap().uploader,
                "@a:localhost"
            );
        }
        // Once expired, it goes like any preview image, with its cached preview.
        let swept = store.expire_preview_images(6, u64::MAX, |_| {}).unwrap();
        assert_eq!((swept.removed, swept.kept_bytes), (1, 0));
        assert!(store.get_meta(&image).unwrap().is_none());
        assert!(
            store
                .get_preview(&keys::preview("https://a.example/", 1), 0)
                .unwrap()
                .is_none()
        );
        assert!(
            store
                .get_preview(&keys::preview("https://b.example/", 1), 0)
                .unwrap()
                .is_some()
        );
    }

    /// A store that counted every preview image is recounted by blob once when opened: two
    /// images of the same bytes count once, and removing one leaves the other's bytes counted.
    #[test]
    fn older_totals_are_recounted_by_blob() {
        let dir = tempfile::tempdir().unwrap();
        let config = Config {
            data_dir: dir.path().to_path_buf(),
            ..Config::default()
        };
        let images = {
            let store = Store::open(&config).unwrap();
            let images: Vec<MediaKey> = (0..2u64)
                .map(|i| {
                    let key = MediaKey {
                        server_name: "localhost".parse().unwrap(),
                        media_id: MediaId::generate(),
                    };
                    let mut staging = store.stage().unwrap();
                    staging.write(b"the same image").unwrap();
                    let staged = staging.finish().unwrap();
                    let preview = keys::preview("https://a.example/", i);
                    store
                        .commit_preview_image(&key, staged, "image/png".into(), 10 + i, &preview)
                        .unwrap();
                    key
                })
                .collect();
            assert_eq!(store.preview_images_bytes().unwrap(), 14);
            // As the earlier version left it: every image counted, no holder counts.
            let tree = &store.inner.preview_images;
            for old in tree.scan_prefix(BLOB) {
                tree.remove(old.unwrap().0).unwrap();
            }
            tree.remove(BY_BLOB).unwrap();
            tree.insert(TOTAL, &28u64.to_be_bytes()).unwrap();
            store.flush().unwrap();
            images
        };
        let store = Store::open(&config).unwrap();
        assert_eq!(store.preview_images_bytes().unwrap(), 14);
        let swept = store.expire_preview_images(11, u64::MAX, |_| {}).unwrap();
        assert_eq!(
            (swept.removed, swept.removed_bytes, swept.kept_bytes),
            (1, 0, 14)
        );
        assert!(store.get_meta(images.first().unwrap()).unwrap().is_none());
        let swept = store.expire_preview_images(12, u64::MAX, |_| {}).unwrap();
        assert_eq!(
            (swept.removed, swept.removed_bytes, swept.kept_bytes),
            (1, 14, 0)
        );
    }

    /// A damaged entry reads as an empty one, never a panic.
    #[test]
    fn damaged_entries_read_as_empty() {
        assert_eq!(parse_entry(b"short"), (0, &b""[..]));
        assert_eq!(parse_entry_key(b"short"), None);
        let mut key = 7u64.to_be_bytes().to_vec();
        key.extend_from_slice(b"localhost/abc");
        assert_eq!(parse_entry_key(&key), Some((7, &b"localhost/abc"[..])));
    }
}
