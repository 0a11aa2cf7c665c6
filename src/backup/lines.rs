//! The line protocol of the commands that talk to a running server over `backup.sock` (import,
//! export, migrate-store): one JSON value per line, every line read bounded, so a peer that
//! sends an endless line costs its reader `max` bytes and an error, never more memory.

use std::{
    io::{self, BufRead, BufReader, BufWriter, Read as _, Write},
    os::unix::net::UnixStream,
};

use serde::{Serialize, de::DeserializeOwned};

/// One line without its newline; `None` at the end of the stream. `what` names the command in
/// the error for a line over `max` bytes or cut short.
pub fn read_line(reader: &mut impl BufRead, max: u64, what: &str) -> io::Result<Option<Vec<u8>>> {
    let mut line = Vec::new();
    reader
        .take(max.saturating_add(1))
        .read_until(b'\n', &mut line)?;
    if line.is_empty() {
        return Ok(None);
    }
    if line.pop() != Some(b'\n') {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            format!("{what} line too long or cut short"),
        ));
    }
    Ok(Some(line))
}

/// Writes `value` as one line and flushes it, so the peer, waiting for it, sees it at once.
pub fn send(writer: &mut impl Write, value: &impl Serialize) -> io::Result<()> {
    serde_json::to_writer(&mut *writer, value)?;
    writer.write_all(b"\n")?;
    writer.flush()
}

/// Sends `request` and reads the one-line answer to it.
pub fn call<T: DeserializeOwned>(
    writer: &mut impl Write,
    reader: &mut impl BufRead,
    request: &impl Serialize,
    max: u64,
    what: &str,
) -> io::Result<T> {
    send(writer, request)?;
    let line = read_line(reader, max, what)?
        .ok_or_else(|| io::Error::other(format!("the server closed the {what} connection")))?;
    serde_json::from_slice(&line).map_err(io::Error::other)
}

/// Opens a command's conversation with the server behind `stream`: sends `request` (the
/// command's first line) and expects `ready` back. Anything else means the server does not take
/// `what` (say "imports"), most likely an older mxmedia, and says what it answered.
pub fn open(
    stream: UnixStream,
    request: &[u8],
    ready: &[u8],
    what: &str,
) -> io::Result<(BufReader<UnixStream>, BufWriter<UnixStream>)> {
    let mut writer = BufWriter::new(stream.try_clone()?);
    writer.write_all(request)?;
    writer.flush()?;
    let mut reader = BufReader::new(stream);
    let mut answer = Vec::new();
    (&mut reader).take(256).read_until(b'\n', &mut answer)?;
    if answer != ready {
        let said = String::from_utf8_lossy(&answer);
        return Err(io::Error::other(format!(
            "the running server does not take {what} (an older mxmedia?): it answered {:?}",
            said.trim()
        )));
    }
    Ok((reader, writer))
}
