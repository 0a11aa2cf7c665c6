//! Reading an S3 object as `Read + Seek` for the download path and the thumbnailer: one
//! streaming GET from the current offset, read as the caller reads (never the whole object in
//! memory: at most what one `read` asks for is gathered); a seek elsewhere drops it and the
//! next read opens a ranged GET (`Range: bytes=N-`) from there.

use std::{
    collections::VecDeque,
    io::{self, Read, Seek, SeekFrom},
};

use bytes::{Buf as _, Bytes};
use futures_util::{StreamExt as _, stream::BoxStream};
use object_store::{GetOptions, GetRange, ObjectStore as _, path::Path};

use super::{S3Blobs, backend_error, from_object_store};

type Body = BoxStream<'static, object_store::Result<Bytes>>;

pub(crate) struct S3Reader {
    blobs: S3Blobs,
    key: Path,
    len: u64,
    pos: u64,
    /// The GET in progress, positioned at `pos` plus what `pending` holds.
    body: Option<Body>,
    /// Bytes received and not yet read, starting at `pos`.
    pending: VecDeque<Bytes>,
}

impl S3Reader {
    /// Opens the object with a GET of all of it, so that a missing object or an unreachable S3
    /// shows before a response is started; its length comes with the answer.
    pub(super) fn open(blobs: S3Blobs, key: Path) -> io::Result<Self> {
        let (len, body) = get_from(&blobs, &key, 0)?;
        Ok(Self {
            blobs,
            key,
            len,
            pos: 0,
            body: Some(body),
            pending: VecDeque::new(),
        })
    }

    /// The object's length, from the GET's answer.
    pub(super) fn len(&self) -> u64 {
        self.len
    }

    /// Receives at least `want` bytes (less at the end of the object) into `pending`.
    fn fill(&mut self, want: usize) -> io::Result<()> {
        let body = match self.body.take() {
            Some(body) => body,
            None => get_from(&self.blobs, &self.key, self.pos)?.1,
        };
        let timeout = self.blobs.shared.read_timeout;
        let (body, got) = self.blobs.run(async move {
            let mut body = body;
            let mut got = Vec::new();
            let mut total = 0usize;
            while total < want {
                match tokio::time::timeout(timeout, body.next()).await {
                    Err(_) => return (body, Err(backend_error("get", "the download stalled"))),
                    Ok(None) => break,
                    Ok(Some(Err(e))) => return (body, Err(from_object_store("get", e))),
                    Ok(Some(Ok(bytes))) => {
                        total = total.saturating_add(bytes.len());
                        got.push(bytes);
                    }
                }
            }
            (body, Ok(got))
        })?;
        let got = got?;
        if got.is_empty() {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                format!(
                    "S3 object {} ended at {} of {} bytes",
                    self.key, self.pos, self.len
                ),
            ));
        }
        self.body = Some(body);
        self.pending.extend(got);
        Ok(())
    }
}

impl Read for S3Reader {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if buf.is_empty() || self.pos >= self.len {
            return Ok(0);
        }
        if self.pending.is_empty() {
            self.fill(buf.len())?;
        }
        let mut copied = 0;
        while let Some(front) = self.pending.front_mut() {
            let Some(rest) = buf.get_mut(copied..).filter(|rest| !rest.is_empty()) else {
                break;
            };
            let n = rest.len().min(front.len());
            if let (Some(to), Some(from)) = (rest.get_mut(..n), front.get(..n)) {
                to.copy_from_slice(from);
            }
            front.advance(n);
            copied += n;
            if front.is_empty() {
                self.pending.pop_front();
            }
        }
        self.pos = self
            .pos
            .saturating_add(u64::try_from(copied).unwrap_or(u64::MAX));
        Ok(copied)
    }
}

impl Seek for S3Reader {
    fn seek(&mut self, to: SeekFrom) -> io::Result<u64> {
        let target = match to {
            SeekFrom::Start(n) => Some(n),
            SeekFrom::End(d) => self.len.checked_add_signed(d),
            SeekFrom::Current(d) => self.pos.checked_add_signed(d),
        }
        .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "seek before the start"))?;
        if target != self.pos {
            self.body = None;
            self.pending.clear();
            self.pos = target;
        }
        Ok(target)
    }
}

/// A GET of the object from `offset` to its end: its whole length, and the body.
fn get_from(blobs: &S3Blobs, key: &Path, offset: u64) -> io::Result<(u64, Body)> {
    let store = blobs.client();
    let key = key.clone();
    let options = GetOptions {
        range: (offset > 0).then_some(GetRange::Offset(offset)),
        ..GetOptions::default()
    };
    let result = blobs.request("get", blobs.shared.op_deadline, async move {
        store.get_opts(&key, options).await
    })?;
    Ok((result.meta.size, result.into_stream()))
}
