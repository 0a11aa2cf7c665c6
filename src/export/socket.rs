//! Exporting from a running server: sled admits one process, so the server reads the store.
//! The exporter connects to the data dir's private socket (the one `mxmedia backup` uses,
//! mode 0600), sends `export 1`, waits for `ready`, then asks one JSON line at a time:
//! `{"page":{"server":..,"after":..,"limit":..}}` -> `{"page":{..}}`, and
//! `{"read":"<sha256>"}` -> `{"blob":<len>}` followed by exactly that many bytes, or
//! `{"error":"..."}`. The bytes cross the socket whatever holds them (sled, a blob file, another
//! blob backend), so the exporter needs no access to the server's blob store.

use std::{
    io::{self, BufRead, BufReader, BufWriter, Read, Seek as _, Write},
    os::unix::net::UnixStream,
};

use serde::{Deserialize, Serialize};

use crate::backup::lines;
use crate::store::{BlobReader, Store, StoreError, export::ExportPage};

/// The first line an exporter sends.
pub const REQUEST: &[u8] = b"export 1\n";
const READY: &[u8] = b"ready\n";
/// Longest JSON line either side accepts: a page of items with their names.
const MAX_LINE: u64 = 16 * 1024 * 1024;

#[derive(Debug, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
enum Request {
    Page {
        server: String,
        after: Option<String>,
        limit: usize,
    },
    Read(String),
}

#[derive(Debug, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
enum Response {
    Page(ExportPage),
    /// The bytes follow the line.
    Blob(u64),
    /// The blob is gone: its media was deleted since its page was read.
    Gone,
    Error(String),
}

/// The server's side, called by the backup socket once it has read `REQUEST`.
pub fn serve(store: &Store, stream: &UnixStream) -> io::Result<()> {
    // Writing a large file between two requests may take long: no read timeout from here on.
    stream.set_read_timeout(None)?;
    let mut reader = BufReader::new(stream);
    let mut writer = BufWriter::new(stream);
    writer.write_all(READY)?;
    writer.flush()?;
    tracing::info!("export: an exporter connected");
    while let Some(line) = read_line(&mut reader)? {
        match serde_json::from_slice::<Request>(&line) {
            Ok(Request::Page {
                server,
                after,
                limit,
            }) => {
                let response = match store.export_page(&server, after.as_deref(), limit) {
                    Ok(page) => Response::Page(page),
                    Err(e) => Response::Error(format!("{e:#}")),
                };
                respond(&mut writer, &response)?;
            }
            Ok(Request::Read(sha256)) => match store.open_blob(&sha256) {
                Ok(BlobReader::Inline(bytes)) => {
                    let len = u64::try_from(bytes.len()).unwrap_or(u64::MAX);
                    respond(&mut writer, &Response::Blob(len))?;
                    writer.write_all(&bytes)?;
                }
                Ok(BlobReader::Stream(mut file)) => {
                    // The length the file has now: blobs never change once stored.
                    let len = file.seek(io::SeekFrom::End(0))?;
                    file.seek(io::SeekFrom::Start(0))?;
                    respond(&mut writer, &Response::Blob(len))?;
                    let sent = io::copy(&mut Read::take(&mut file, len), &mut writer)?;
                    if sent != len {
                        // The exporter sees the stream end short and reports the item.
                        return Err(io::Error::other("blob file shorter than it was"));
                    }
                }
                Err(StoreError::NotFound) => respond(&mut writer, &Response::Gone)?,
                Err(e) => respond(&mut writer, &Response::Error(format!("{e:#}")))?,
            },
            Err(e) => respond(
                &mut writer,
                &Response::Error(format!("malformed export request: {e}")),
            )?,
        }
        writer.flush()?;
    }
    tracing::info!("export: exporter done");
    Ok(())
}

/// One response line (for a blob, its bytes follow).
fn respond(writer: &mut impl Write, response: &Response) -> io::Result<()> {
    serde_json::to_writer(&mut *writer, response)?;
    writer.write_all(b"\n")
}

/// What became of a request for a blob's bytes.
pub(crate) enum Fetched {
    /// Written out, as many bytes as the server announced.
    Copied,
    /// Deleted meanwhile.
    Gone,
}

/// The exporter's side of the connection.
pub(crate) struct Client {
    reader: BufReader<UnixStream>,
    writer: BufWriter<UnixStream>,
}

impl Client {
    /// Asks the server behind `stream` to take an export.
    pub(crate) fn start(stream: UnixStream) -> io::Result<Self> {
        let (reader, writer) = lines::open(stream, REQUEST, READY, "exports")?;
        Ok(Self { reader, writer })
    }

    pub(crate) fn page(
        &mut self,
        server: &str,
        after: Option<&str>,
        limit: usize,
    ) -> io::Result<ExportPage> {
        let request = Request::Page {
            server: server.to_owned(),
            after: after.map(str::to_owned),
            limit,
        };
        match self.call(&request)? {
            Response::Page(page) => Ok(page),
            other => Err(unexpected(other)),
        }
    }

    /// Copies the bytes of the blob `sha256` into `out`, as many as the server announces.
    pub(crate) fn read(&mut self, sha256: &str, out: &mut dyn Write) -> io::Result<Fetched> {
        let len = match self.call(&Request::Read(sha256.to_owned()))? {
            Response::Blob(len) => len,
            Response::Gone => return Ok(Fetched::Gone),
            other => return Err(unexpected(other)),
        };
        let copied = io::copy(&mut (&mut self.reader).take(len), out)?;
        if copied != len {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "the server's stream ended inside a file",
            ));
        }
        Ok(Fetched::Copied)
    }

    fn call(&mut self, request: &Request) -> io::Result<Response> {
        lines::call(
            &mut self.writer,
            &mut self.reader,
            request,
            MAX_LINE,
            "export",
        )
    }
}

fn unexpected(response: Response) -> io::Error {
    match response {
        Response::Error(message) => io::Error::other(format!("the server: {message}")),
        _ => io::Error::other("the server answered another request"),
    }
}

fn read_line(reader: &mut impl BufRead) -> io::Result<Option<Vec<u8>>> {
    lines::read_line(reader, MAX_LINE, "export")
}
