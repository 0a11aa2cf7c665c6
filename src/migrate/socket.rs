//! Listing a running server's blobs for `mxmedia migrate-store`: sled admits one process, so
//! the server reads its records. The command connects to the data dir's private socket (the
//! one `mxmedia backup` uses, mode 0600), sends `migrate 1`, and the server answers one JSON
//! line: `{"backend":"fs","files":N,"bytes":B}`. Then each `{"after":null|"<sha256>"}` line
//! is answered with `{"page":[{"sha256":..,"len":..},..]}` (an empty page at the end) or
//! `{"error":".."}`.
//!
//! While the command is connected the server removes no blob file (the hold `mxmedia backup`
//! takes): a blob listed is still there when its turn comes, however long the copy takes.
//! Removals asked for meanwhile happen when the command hangs up or dies.

use std::{
    io::{self, BufRead, BufReader, BufWriter, Write},
    os::unix::net::UnixStream,
};

use serde::{Deserialize, Serialize};

use crate::backup::lines;
use crate::store::{
    Store,
    backends::{Backend, FileBlob},
};

/// The first line the command sends.
pub const REQUEST: &[u8] = b"migrate 1\n";
/// Records per page: about 90 KB of JSON.
const PAGE: usize = 1000;
/// Longest line either side accepts.
const MAX_LINE: u64 = 1024 * 1024;

#[derive(Debug, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
enum Response {
    Hello {
        backend: Backend,
        files: u64,
        bytes: u64,
    },
    Page(Vec<Entry>),
    Error(String),
}

#[derive(Debug, Serialize, Deserialize)]
struct Entry {
    sha256: String,
    len: u64,
}

#[derive(Debug, Serialize, Deserialize)]
struct Next {
    after: Option<String>,
}

/// The server's side, called by the backup socket once it has read `REQUEST`.
pub fn serve(store: &Store, stream: &UnixStream) -> io::Result<()> {
    // A large blob may take minutes to copy between two pages: no read timeout from here on.
    stream.set_read_timeout(None)?;
    let mut reader = BufReader::new(stream);
    let mut writer = BufWriter::new(stream);
    let started = store
        .hold_blob_files()
        .and_then(|hold| Ok((hold, store.file_blob_totals()?)));
    let (hold, hello) = match started {
        Ok((hold, (files, bytes))) => (
            Some(hold),
            Response::Hello {
                backend: store.backend(),
                files,
                bytes,
            },
        ),
        Err(e) => (None, Response::Error(format!("{e:#}"))),
    };
    send(&mut writer, &hello)?;
    if matches!(hello, Response::Error(_)) {
        return Ok(());
    }
    tracing::info!("migrate-store: a migration connected; blob removals wait for its end");
    while let Some(line) = read_line(&mut reader)? {
        let response = match serde_json::from_slice::<Next>(&line) {
            Ok(next) => match store.file_blobs_after(next.after.as_deref(), PAGE) {
                Ok(page) => Response::Page(
                    page.into_iter()
                        .map(|b| Entry {
                            sha256: b.sha256,
                            len: b.len,
                        })
                        .collect(),
                ),
                Err(e) => Response::Error(format!("{e:#}")),
            },
            Err(e) => Response::Error(format!("malformed migrate request: {e}")),
        };
        send(&mut writer, &response)?;
    }
    drop(hold);
    tracing::info!("migrate-store: migration done");
    Ok(())
}

fn send(writer: &mut impl Write, response: &Response) -> io::Result<()> {
    lines::send(writer, response)
}

/// The command's side of the connection.
pub(crate) struct Client {
    reader: BufReader<UnixStream>,
    writer: BufWriter<UnixStream>,
    /// The backend the server reads from, and its file blobs when the command connected.
    pub(crate) backend: Backend,
    pub(crate) files: u64,
    pub(crate) bytes: u64,
}

impl Client {
    pub(crate) fn start(stream: UnixStream) -> io::Result<Self> {
        let mut writer = BufWriter::new(stream.try_clone()?);
        writer.write_all(REQUEST)?;
        writer.flush()?;
        let mut reader = BufReader::new(stream);
        let line = read_line(&mut reader)?.unwrap_or_default();
        match serde_json::from_slice::<Response>(&line) {
            Ok(Response::Hello {
                backend,
                files,
                bytes,
            }) => Ok(Self {
                reader,
                writer,
                backend,
                files,
                bytes,
            }),
            Ok(Response::Error(message)) => Err(io::Error::other(format!("the server: {message}"))),
            _ => Err(io::Error::other(format!(
                "the running server does not list its blobs (an older mxmedia?): it answered {:?}",
                String::from_utf8_lossy(&line).trim()
            ))),
        }
    }

    /// The next page of file blobs after `after`; empty at the end.
    pub(crate) fn page(&mut self, after: Option<&str>) -> io::Result<Vec<FileBlob>> {
        let next = Next {
            after: after.map(str::to_owned),
        };
        lines::send(&mut self.writer, &next)?;
        let line = read_line(&mut self.reader)?
            .ok_or_else(|| io::Error::other("the server closed the migration connection"))?;
        match serde_json::from_slice(&line).map_err(io::Error::other)? {
            Response::Page(entries) => Ok(entries
                .into_iter()
                .map(|e| FileBlob {
                    sha256: e.sha256,
                    len: e.len,
                })
                .collect()),
            Response::Error(message) => Err(io::Error::other(format!("the server: {message}"))),
            Response::Hello { .. } => Err(io::Error::other("the server answered out of turn")),
        }
    }
}

fn read_line(reader: &mut impl BufRead) -> io::Result<Option<Vec<u8>>> {
    lines::read_line(reader, MAX_LINE, "migrate")
}
