//! `HEAD` on remote media: answered from what is stored, never by a fetch from the origin nor by
//! a render. A `HEAD` costs no more than a lookup, so it cannot be used to make this server
//! contact other servers or decode images on someone's behalf.

use super::stored;
use crate::{
    error::Result,
    media::MediaService,
    model::{id::MediaKey, meta::Content, thumb::ThumbSpec},
    store::keys,
    thumbnail::{Served, select},
};

impl MediaService {
    /// Remote media's content if it has been fetched and stored; `None` otherwise.
    pub async fn stored_remote_content(&self, key: &MediaKey) -> Result<Option<Content>> {
        if let Some(content) = self.cache.content(key) {
            return Ok(Some(content));
        }
        stored(&self.store, key).await
    }

    /// What a thumbnail request of remote media would be answered with, from what is stored:
    /// a thumbnail made here from a stored original (or that original), or the origin's
    /// thumbnail kept from an earlier fetch; `None` when there is neither.
    pub async fn stored_remote_thumbnail(
        &self,
        key: &MediaKey,
        spec: ThumbSpec,
    ) -> Result<Option<(Content, Served)>> {
        if let Some(content) = stored(&self.store, key).await? {
            let served = self
                .thumbnails
                .stored(&content, spec)
                .await
                .map_err(super::remote_too_large)?;
            return Ok(served.map(|served| (content, served)));
        }
        if self.is_withheld(key).await? {
            return Ok(None);
        }
        let lookup = keys::remote_thumb(key, select::snap(spec, &self.thumbnail_config));
        let record = self
            .store
            .blocking(move |s| s.get_thumbnail(&lookup))
            .await?;
        Ok(record.map(|record| {
            let content = Content {
                content_type: record.content_type.clone(),
                filename: None,
                len: record.len,
                sha256: record.sha256.clone(),
            };
            (content, Served::Thumbnail(record))
        }))
    }
}
