//! Redirecting downloads to the blob backend: which stored media may be fetched straight from
//! the object store instead of through mxmedia. Callers have already done every check a stream
//! would have done (auth, quarantine, blocks, the hash list): the URL is only another way to
//! the same bytes.

use super::MediaService;
use crate::{
    error::Result,
    model::meta::Content,
    store::direct::{DirectAnswer, DirectUrl},
};

impl MediaService {
    /// Whether downloads may be redirected at all, answered without touching the store.
    pub fn redirects(&self) -> bool {
        self.store.serves_directly()
    }

    /// A URL answering `content`'s bytes with `answer`'s headers, or `None` when mxmedia must
    /// stream them itself (inline blobs, an answer the backend cannot carry, redirects off).
    pub async fn direct_url(
        &self,
        content: &Content,
        answer: DirectAnswer,
    ) -> Result<Option<DirectUrl>> {
        if !self.redirects() {
            return Ok(None);
        }
        let sha256 = content.sha256.clone();
        Ok(self
            .store
            .blocking(move |s| s.direct_url(&sha256, &answer))
            .await?)
    }
}
