//! Receiving bytes from the network into a staging file with bounded memory: chunks are
//! gathered into `CHUNK_SIZE` pieces and written off the async workers, and a size limit is
//! enforced on every chunk, so an endless body stops at the limit instead of filling the disk.
//! What is received is reserved against the free-space floor as it arrives (`space`).
//!
//! A spool can be followed while it fills: `reader` hands out a handle on the staging file and
//! `on_flush` is told how many bytes are on disk after every write, so readers never see bytes
//! that are still only in memory.

use std::{fs::File, io};

use bytes::BytesMut;

use super::{
    blob::{CHUNK_SIZE, Staged, Staging},
    space::Reservation,
};

#[derive(Debug, thiserror::Error)]
pub enum SpoolError {
    #[error("more than {0} bytes")]
    TooLarge(u64),
    #[error("free disk space would go below the configured floor")]
    NoSpace,
    #[error(transparent)]
    Io(#[from] io::Error),
}

pub struct Spool {
    /// `None` only while a write is in flight, or after one failed.
    staging: Option<Staging>,
    buf: BytesMut,
    len: u64,
    /// Bytes written to the staging file (the rest of `len` is in `buf`).
    flushed: u64,
    limit: u64,
    on_flush: Option<Box<dyn Fn(u64) + Send>>,
    /// Declared after `staging`, so a discarded file is gone before its bytes are released.
    reservation: Reservation,
}

impl Spool {
    pub fn new(staging: Staging, limit: u64, reservation: Reservation) -> Self {
        Self {
            staging: Some(staging),
            buf: BytesMut::with_capacity(CHUNK_SIZE),
            len: 0,
            flushed: 0,
            limit,
            on_flush: None,
            reservation,
        }
    }

    /// Bytes received so far.
    pub fn len(&self) -> u64 {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    pub fn limit(&self) -> u64 {
        self.limit
    }

    /// Calls `notify` with the bytes on disk after every write to the staging file.
    pub fn on_flush(&mut self, notify: impl Fn(u64) + Send + 'static) {
        self.on_flush = Some(Box::new(notify));
    }

    /// A handle on the staging file for positional reads (`FileExt::read_at`), valid as long as
    /// it is held, even once the file is committed or discarded.
    pub fn reader(&self) -> io::Result<File> {
        self.staging
            .as_ref()
            .ok_or_else(|| io::Error::other("staging file lost after a failed write"))?
            .reader()
    }

    /// Writes what is buffered now, so followers see it without waiting for a full chunk.
    pub async fn settle(&mut self) -> Result<(), SpoolError> {
        Ok(self.flush().await?)
    }

    pub async fn write(&mut self, chunk: &[u8]) -> Result<(), SpoolError> {
        self.len = self
            .len
            .saturating_add(u64::try_from(chunk.len()).unwrap_or(u64::MAX));
        if self.len > self.limit {
            return Err(SpoolError::TooLarge(self.limit));
        }
        self.reservation
            .cover(self.len)
            .await
            .map_err(|_| SpoolError::NoSpace)?;
        self.buf.extend_from_slice(chunk);
        if self.buf.len() >= CHUNK_SIZE {
            self.flush().await?;
        }
        Ok(())
    }

    /// Writes what is buffered and fsyncs: the bytes are ready to be committed.
    pub async fn finish(mut self) -> io::Result<Staged> {
        self.flush().await?;
        let staging = self.take()?;
        let staged = tokio::task::spawn_blocking(move || staging.finish())
            .await
            .map_err(io::Error::other)??;
        self.reservation.keep();
        Ok(staged)
    }

    async fn flush(&mut self) -> io::Result<()> {
        if self.buf.is_empty() {
            return Ok(());
        }
        let piece = self.buf.split().freeze();
        let len = u64::try_from(piece.len()).unwrap_or(u64::MAX);
        let mut staging = self.take()?;
        let staging = tokio::task::spawn_blocking(move || staging.write(&piece).map(|()| staging))
            .await
            .map_err(io::Error::other)??;
        self.staging = Some(staging);
        self.reservation.wrote(len);
        self.flushed = self.flushed.saturating_add(len);
        if let Some(notify) = &self.on_flush {
            notify(self.flushed);
        }
        Ok(())
    }

    /// Gives up on what was received, releasing its disk space before its reservation, even
    /// while readers still hold the file (`reader`).
    pub async fn discard(mut self) {
        if let Some(staging) = self.staging.take() {
            let _ = tokio::task::spawn_blocking(move || staging.discard()).await;
        }
    }

    fn take(&mut self) -> io::Result<Staging> {
        self.staging
            .take()
            .ok_or_else(|| io::Error::other("staging file lost after a failed write"))
    }
}
