//! Reading a federation media answer's `multipart/mixed` body as a stream: `multer` parses it,
//! on a `Send` stream fed by a local task that reads the (`!Send`) awc body under the deadline
//! and size limit. Every byte passes `mxmedia_proto`'s `Framer` first, which fails the read as
//! soon as the preamble, a part's headers or the metadata part is longer than real servers
//! send: `multer` holds all of those in memory until it has matched them. The metadata part is
//! checked and dropped; the media part's bytes go to the spool, or its `Location` is handed
//! back to be followed.

use std::{
    cell::RefCell,
    io,
    rc::Rc,
    sync::{Arc, OnceLock},
};

use bytes::{Bytes, BytesMut};
use futures_util::{StreamExt as _, stream};
use mxmedia_proto::multipart::{
    Framer, Limits, Overflow, disposition_filename, sanitize_content_type,
};
use tokio::time::Instant as TokioInstant;

use super::{FetchFailure, Fetched, MAX_METADATA, MULTIPART_OVERHEAD, sink::Sink};
use crate::federation::ClientResponse;

/// What an answer's framing may take: a few KiB of preamble and of each part's headers, and
/// the metadata part's own limit.
const LIMITS: Limits = Limits {
    preamble: 4 * 1024,
    headers: 8 * 1024,
    first_part: MAX_METADATA,
};

/// The second part of a federation answer.
pub(super) enum MediaPart {
    Bytes(Fetched),
    Location(String),
}

/// Reads a `multipart/mixed` federation answer: `multer` does the parsing, on a `Send` stream
/// fed by a local task that reads the (`!Send`) awc body with the deadline and size limit.
pub(super) async fn read_multipart(
    response: ClientResponse,
    boundary: &str,
    deadline: TokioInstant,
    sink: &mut Sink<'_>,
) -> Result<MediaPart, FetchFailure> {
    let (tx, rx) = tokio::sync::mpsc::channel::<io::Result<Bytes>>(4);
    let pump_failure = Rc::new(RefCell::new(None::<FetchFailure>));
    let pump = tokio::task::spawn_local(pump(
        response,
        tx,
        deadline,
        sink.limit() + MULTIPART_OVERHEAD,
        pump_failure.clone(),
    ));
    let _pump = AbortOnDrop(pump);
    let overflow = Arc::new(OnceLock::<Overflow>::new());
    let framed = Arc::clone(&overflow);
    let body = stream::unfold(
        (rx, Some(Framer::new(boundary, LIMITS))),
        move |(mut rx, framer)| {
            let framed = Arc::clone(&framed);
            async move {
                let mut framer = framer?;
                let item = match rx.recv().await {
                    Some(Ok(chunk)) => match framer.feed(&chunk) {
                        Ok(out) => Ok(Bytes::from(out)),
                        Err(e) => {
                            let _ = framed.set(e);
                            return Some((Err(io::Error::other(e)), (rx, None)));
                        }
                    },
                    Some(Err(e)) => return Some((Err(e), (rx, None))),
                    None => return Some((Ok(Bytes::from(framer.finish())), (rx, None))),
                };
                Some((item, (rx, Some(framer))))
            }
        },
    );
    let mut multipart = multer::Multipart::new(body, boundary);
    let outcome = read_parts(&mut multipart, sink).await;
    let recorded = pump_failure.borrow_mut().take();
    let overflow = overflow.get().map(|e| FetchFailure::Remote(e.to_string()));
    outcome.map_err(|e| recorded.or(overflow).unwrap_or(e))
}

async fn pump(
    mut response: ClientResponse,
    tx: tokio::sync::mpsc::Sender<io::Result<Bytes>>,
    deadline: TokioInstant,
    limit: u64,
    failure: Rc<RefCell<Option<FetchFailure>>>,
) {
    let mut seen: u64 = 0;
    loop {
        let outcome = match tokio::time::timeout_at(deadline, response.next()).await {
            Err(_) => Err(FetchFailure::Timeout),
            Ok(None) => return,
            Ok(Some(Err(e))) => Err(FetchFailure::Remote(format!("body interrupted: {e}"))),
            Ok(Some(Ok(chunk))) => {
                seen = seen.saturating_add(u64::try_from(chunk.len()).unwrap_or(u64::MAX));
                if seen > limit {
                    Err(FetchFailure::TooLarge)
                } else {
                    Ok(chunk)
                }
            }
        };
        match outcome {
            Ok(chunk) => {
                if tx.send(Ok(chunk)).await.is_err() {
                    return;
                }
            }
            Err(f) => {
                *failure.borrow_mut() = Some(f);
                let _ = tx.send(Err(io::Error::other("upstream body failed"))).await;
                return;
            }
        }
    }
}

async fn read_parts(
    multipart: &mut multer::Multipart<'_>,
    sink: &mut Sink<'_>,
) -> Result<MediaPart, FetchFailure> {
    let malformed = |e: multer::Error| FetchFailure::Remote(format!("malformed multipart: {e}"));
    let Some(mut metadata) = multipart.next_field().await.map_err(malformed)? else {
        return Err(FetchFailure::Remote(
            "multipart answer without parts".into(),
        ));
    };
    let mut json = BytesMut::new();
    while let Some(chunk) = metadata.chunk().await.map_err(malformed)? {
        json.extend_from_slice(&chunk);
        if json.len() > MAX_METADATA {
            return Err(FetchFailure::Remote("metadata part too large".into()));
        }
    }
    drop(metadata);
    if !serde_json::from_slice::<serde_json::Value>(&json).is_ok_and(|v| v.is_object()) {
        return Err(FetchFailure::Remote(
            "metadata part is not a JSON object".into(),
        ));
    }
    let Some(mut media) = multipart.next_field().await.map_err(malformed)? else {
        return Err(FetchFailure::Remote(
            "multipart answer without media".into(),
        ));
    };
    let part_header = |name: &str| {
        media
            .headers()
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned)
    };
    if let Some(location) = part_header("location") {
        return Ok(MediaPart::Location(location.trim().to_owned()));
    }
    let fetched = Fetched {
        content_type: sanitize_content_type(part_header("content-type").as_deref()),
        filename: part_header("content-disposition")
            .as_deref()
            .and_then(disposition_filename),
    };
    let declared = part_header("content-length").and_then(|len| len.trim().parse().ok());
    sink.begin(&fetched, declared)?;
    while let Some(chunk) = sink
        .next(&mut media)
        .await?
        .transpose()
        .map_err(malformed)?
    {
        sink.write(&chunk).await?;
    }
    sink.end()?;
    // The closing delimiter is not waited for: some servers leave off its final `--`.
    Ok(MediaPart::Bytes(fetched))
}

/// Aborts the pump when the read ends, however it ends.
struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}
