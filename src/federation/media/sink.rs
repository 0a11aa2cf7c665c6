//! Where fetched bytes go: the spool, with the first few kept to tell a thumbnail's type by, the
//! caller told once when the media's own bytes begin, and the spool settled to disk whenever the
//! origin pauses, so readers following it get every byte that has arrived.

use futures_util::{FutureExt as _, Stream, StreamExt as _};

use super::{Announce, FetchFailure, Fetched};
use crate::store::spool::Spool;

/// Bytes of a file kept aside to tell its type by.
const SNIFF_LEN: usize = 16;

pub(super) struct Sink<'a> {
    spool: &'a mut Spool,
    head: Vec<u8>,
    announce: Option<Announce>,
    /// The media's length as the origin declared it, once its bytes began.
    declared: Option<u64>,
}

impl<'a> Sink<'a> {
    pub(super) fn new(spool: &'a mut Spool, announce: Option<Announce>) -> Self {
        Self {
            spool,
            head: Vec::with_capacity(SNIFF_LEN),
            announce,
            declared: None,
        }
    }

    pub(super) fn limit(&self) -> u64 {
        self.spool.limit()
    }

    /// The media's own bytes begin: refuses a declared length over the limit, else tells the
    /// caller what is coming.
    pub(super) fn begin(
        &mut self,
        fetched: &Fetched,
        len: Option<u64>,
    ) -> Result<(), FetchFailure> {
        if len.is_some_and(|len| len > self.limit()) {
            return Err(FetchFailure::TooLarge);
        }
        self.declared = len;
        if let Some(announce) = self.announce.take() {
            announce(fetched, len);
        }
        Ok(())
    }

    /// The next item of `body`; when it is not there yet, what is buffered goes to disk first,
    /// so a slow origin's bytes reach readers as they come, not a chunk later.
    pub(super) async fn next<S: Stream + Unpin>(
        &mut self,
        body: &mut S,
    ) -> Result<Option<S::Item>, FetchFailure> {
        if let Some(item) = body.next().now_or_never() {
            return Ok(item);
        }
        self.spool.settle().await?;
        Ok(body.next().await)
    }

    pub(super) async fn write(&mut self, chunk: &[u8]) -> Result<(), FetchFailure> {
        let room = SNIFF_LEN.saturating_sub(self.head.len());
        self.head
            .extend_from_slice(chunk.get(..room.min(chunk.len())).unwrap_or_default());
        Ok(self.spool.write(chunk).await?)
    }

    /// The body ended: it must be as long as declared, or it was cut short.
    pub(super) fn end(&self) -> Result<(), FetchFailure> {
        match self.declared {
            Some(declared) if declared != self.spool.len() => Err(FetchFailure::Remote(format!(
                "body of {} bytes where {declared} were declared",
                self.spool.len()
            ))),
            _ => Ok(()),
        }
    }

    /// `fetched` as a thumbnail: its type as its bytes say, when it is one we serve; an SVG,
    /// HTML or anything else is a failed fetch, whatever the origin declared.
    pub(super) fn as_thumbnail(&self, fetched: Fetched) -> Result<Fetched, FetchFailure> {
        let Some(format) = mxmedia_image::sniff(&self.head) else {
            return Err(FetchFailure::Remote(format!(
                "thumbnail declared {} is not an image type we serve",
                fetched.content_type
            )));
        };
        Ok(Fetched {
            content_type: format.content_type().to_owned(),
            ..fetched
        })
    }
}
