//! Reading an S3 object as `Read + Seek` for the download path and the thumbnailer: one
//! streaming GET from the current offset, read as the caller reads (never the whole object in
//! memory: at most what one `read` asks for is gathered); a seek elsewhere drops it and the
//! next read opens a ranged GET (`Range: bytes=N-`) from there, as does a read whose body
//! broke off midway (`fill`).

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

    /// Receives at least `want` bytes (less at the end of the object) into `pending`. A body
    /// that breaks off (a connection reset, a proxy giving up, an early end) is taken up again
    /// by a ranged GET from the first byte not received, at most `RESUMES` times per call, so
    /// the reader sees one unbroken object; a body that stalls fails as it did (the read
    /// timeout keeps its meaning).
    fn fill(&mut self, want: usize) -> io::Result<()> {
        let mut got = Vec::new();
        let mut total = 0usize;
        let mut resumes = 0u32;
        loop {
            let at = self
                .pos
                .saturating_add(u64::try_from(total).unwrap_or(u64::MAX));
            if total >= want || at >= self.len {
                break;
            }
            let body = match self.body.take() {
                Some(body) => body,
                None => self.reopen(at)?,
            };
            let (body, chunks, end) = self.receive(body, want.saturating_sub(total))?;
            total = chunks
                .iter()
                .fold(total, |sum, bytes| sum.saturating_add(bytes.len()));
            got.extend(chunks);
            match end {
                End::Enough => self.body = Some(body),
                End::Stalled => return Err(backend_error("get", "the download stalled")),
                End::Ended | End::Broke(_) if resumes >= RESUMES => {
                    return Err(match end {
                        End::Broke(e) => e,
                        _ => io::Error::new(
                            io::ErrorKind::UnexpectedEof,
                            format!("S3 object {} ended at {at} of {} bytes", self.key, self.len),
                        ),
                    });
                }
                End::Ended | End::Broke(_) => {
                    // Past the object's end the loop stops; short of it, the body broke off.
                    resumes += 1;
                    tracing::debug!(key = %self.key, at, "S3 download broke off: resuming");
                }
            }
        }
        if got.is_empty() {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                format!(
                    "S3 object {} ended at {} of {} bytes",
                    self.key, self.pos, self.len
                ),
            ));
        }
        self.pending.extend(got);
        Ok(())
    }

    /// A ranged GET from `offset`, of the same object: a length other than the one it had
    /// when opened would splice two objects into one body.
    fn reopen(&self, offset: u64) -> io::Result<Body> {
        let (len, body) = get_from(&self.blobs, &self.key, offset)?;
        if len != self.len {
            return Err(backend_error(
                "get",
                &format!(
                    "{} changed length while read: {} bytes, then {len}",
                    self.key, self.len
                ),
            ));
        }
        Ok(body)
    }

    /// Up to `want` bytes of `body`, received on the S3 runtime, and why it stopped there.
    fn receive(&self, body: Body, want: usize) -> io::Result<(Body, Vec<Bytes>, End)> {
        let timeout = self.blobs.shared.read_timeout;
        self.blobs.run(async move {
            let mut body = body;
            let mut got = Vec::new();
            let mut total = 0usize;
            let end = loop {
                if total >= want {
                    break End::Enough;
                }
                match tokio::time::timeout(timeout, body.next()).await {
                    Err(_) => break End::Stalled,
                    Ok(None) => break End::Ended,
                    Ok(Some(Err(e))) => break End::Broke(from_object_store("get", e)),
                    Ok(Some(Ok(bytes))) => {
                        total = total.saturating_add(bytes.len());
                        got.push(bytes);
                    }
                }
            };
            (body, got, end)
        })
    }
}

/// Ranged GETs one `read` may open after the body broke off, before it fails.
const RESUMES: u32 = 3;

/// Why receiving stopped.
enum End {
    /// As many bytes as asked for.
    Enough,
    /// The body ended (at the object's end, or early).
    Ended,
    /// The body failed: the connection went.
    Broke(io::Error),
    /// No bytes within the read timeout.
    Stalled,
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
