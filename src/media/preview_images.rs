//! Images fetched for URL previews. They are not uploads: stored as nobody's media (no quota,
//! upload rate, media list, statistics or per-user deletion of a user sees them; the preview
//! rate limit bounds how many a user can make the server fetch), served by their `mxc://` id
//! like any media, quarantined by hash like any media, and removed once older than the
//! configured lifetime or beyond the total size cap, oldest first, as Synapse's `url_cache`
//! cleanup does.

use bytes::Bytes;
use futures_util::Stream;
use mxmedia_proto::ids::MediaId;

use super::MediaService;
use crate::{
    clock::now_ms,
    error::Result,
    model::id::MediaKey,
    store::{keys, preview_images::PreviewImagesSwept},
};

/// An image to store for a preview.
pub struct PreviewImage {
    /// The type the image's header showed.
    pub content_type: String,
    /// The answer's `Content-Length`, checked against the free-space floor before reading.
    pub declared_len: Option<u64>,
    /// The `urlts_preview` key of the preview it is for: dropped with the image.
    pub preview_key: Vec<u8>,
    /// How long preview images are kept: older ones go when this one is stored.
    pub ttl_ms: u64,
    /// Most bytes all preview images may take; the oldest go to make room.
    pub cache_max_bytes: u64,
}

impl MediaService {
    /// Stores `body` as a preview image under a new id: its key and length, or `None` when its
    /// bytes are quarantined (the item stays, for review, but a preview must not show it).
    pub async fn store_preview_image<S, E>(
        &self,
        image: PreviewImage,
        body: S,
    ) -> Result<Option<(MediaKey, u64)>>
    where
        S: Stream<Item = Result<Bytes, E>> + Unpin,
        E: std::fmt::Display,
    {
        if image.declared_len.is_some_and(|len| len > self.max_upload) {
            return Err(self.too_large());
        }
        let staged = self
            .spool_body(body, image.declared_len, |_| Ok(()))
            .await?;
        let len = staged.len;
        let key = MediaKey {
            server_name: self.server_name.clone(),
            media_id: MediaId::generate(),
        };
        let PreviewImage {
            content_type,
            preview_key,
            ttl_ms,
            cache_max_bytes,
            ..
        } = image;
        let stored = key.clone();
        let quarantined = self
            .store
            .blocking(move |s| {
                s.commit_preview_image(&stored, staged, content_type, now_ms(), &preview_key)
            })
            .await?;
        metrics::counter!("mxmedia_preview_images_total").increment(1);
        // The cap holds after every image: the oldest make room for this one, and the expired
        // go now rather than at the next minute's sweep.
        let created_before = now_ms().saturating_sub(ttl_ms);
        self.expire_preview_images(created_before, cache_max_bytes)
            .await?;
        Ok((!quarantined).then_some((key, len)))
    }

    /// Removes the preview images created before `created_before`, then the oldest while all
    /// take more than `max_bytes`.
    pub async fn expire_preview_images(
        &self,
        created_before: u64,
        max_bytes: u64,
    ) -> Result<PreviewImagesSwept> {
        let cache = std::sync::Arc::clone(&self.cache);
        let swept = self
            .store
            .blocking(move |s| {
                s.expire_preview_images(created_before, max_bytes, |db_key| {
                    // Remembered metadata would point downloads at bytes that are gone.
                    match keys::parse_media(db_key) {
                        Some(key) => cache.forget(&key, None),
                        None => cache.forget_all(),
                    }
                })
            })
            .await?;
        if swept.removed > 0 {
            metrics::counter!("mxmedia_preview_images_expired_total")
                .increment(u64::try_from(swept.removed).unwrap_or(u64::MAX));
        }
        Ok(swept)
    }
}
