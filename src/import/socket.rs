//! Importing into a running server: sled admits one process, so the server writes the records.
//! The importer connects to the data dir's private socket (the one `mxmedia backup` uses, mode
//! 0600), sends `import 1`, waits for `ready`, then exchanges one JSON line per request:
//! `{"lookup":[keys]}` -> `{"known":[..]}` and `{"commit":[items]}` -> `{"outcomes":[..]}`, `{"thumbnails":[..]}` ->
//! `{"thumb_outcomes":[..]}`, or
//! `{"error":"..."}`. The files themselves never cross the socket: the importer stages them in
//! the data dir's tmp dir and the server moves them into place.

use std::{
    io::{self, BufRead, BufReader, BufWriter, Write},
    os::unix::net::UnixStream,
};

use serde::{Deserialize, Serialize};

use crate::{
    backup::lines,
    store::{
        Store,
        import::{ImportItem, ImportOutcome, ImportThumb, Known, ThumbOutcome},
    },
};

/// The first line an importer sends.
pub const REQUEST: &[u8] = b"import 1\n";
const READY: &[u8] = b"ready\n";
/// Longest JSON line either side accepts: a batch of items with their names.
const MAX_LINE: u64 = 16 * 1024 * 1024;

#[derive(Debug, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
enum Request {
    Lookup(Vec<String>),
    Commit(Vec<ImportItem>),
    Thumbnails(Vec<ImportThumb>),
}

#[derive(Debug, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
enum Response {
    Known(Vec<Known>),
    Outcomes(Vec<ImportOutcome>),
    ThumbOutcomes(Vec<ThumbOutcome>),
    Error(String),
}

/// The server's side, called by the backup socket once it has read `REQUEST`.
pub fn serve(store: &Store, stream: &UnixStream) -> io::Result<()> {
    // Copying a large file between two batches may take long: no read timeout from here on.
    stream.set_read_timeout(None)?;
    let mut reader = BufReader::new(stream);
    let mut writer = BufWriter::new(stream);
    writer.write_all(READY)?;
    writer.flush()?;
    tracing::info!("import: an importer connected");
    let mut commits = 0u64;
    while let Some(line) = read_line(&mut reader)? {
        let response = match serde_json::from_slice::<Request>(&line) {
            Ok(Request::Lookup(keys)) => match store.import_lookup(&keys) {
                Ok(known) => Response::Known(known),
                Err(e) => Response::Error(format!("{e:#}")),
            },
            Ok(Request::Commit(items)) => match store.commit_import(&items) {
                Ok(outcomes) => {
                    commits += 1;
                    Response::Outcomes(outcomes)
                }
                Err(e) => Response::Error(format!("{:#}", anyhow::Error::from(e))),
            },
            Ok(Request::Thumbnails(thumbs)) => match store.commit_import_thumbnails(&thumbs) {
                Ok(outcomes) => Response::ThumbOutcomes(outcomes),
                Err(e) => Response::Error(format!("{:#}", anyhow::Error::from(e))),
            },
            Err(e) => Response::Error(format!("malformed import request: {e}")),
        };
        lines::send(&mut writer, &response)?;
    }
    tracing::info!(batches = commits, "import: importer done");
    Ok(())
}

/// The importer's side of the connection.
pub(crate) struct Client {
    reader: BufReader<UnixStream>,
    writer: BufWriter<UnixStream>,
}

impl Client {
    /// Asks the server behind `stream` to take imports.
    pub(crate) fn start(stream: UnixStream) -> io::Result<Self> {
        let (reader, writer) = lines::open(stream, REQUEST, READY, "imports")?;
        Ok(Self { reader, writer })
    }

    pub(crate) fn lookup(&mut self, keys: Vec<String>) -> io::Result<Vec<Known>> {
        match self.call(&Request::Lookup(keys))? {
            Response::Known(known) => Ok(known),
            other => Err(unexpected(other)),
        }
    }

    pub(crate) fn commit(&mut self, items: Vec<ImportItem>) -> io::Result<Vec<ImportOutcome>> {
        match self.call(&Request::Commit(items))? {
            Response::Outcomes(outcomes) => Ok(outcomes),
            other => Err(unexpected(other)),
        }
    }

    pub(crate) fn thumbnails(&mut self, thumbs: Vec<ImportThumb>) -> io::Result<Vec<ThumbOutcome>> {
        match self.call(&Request::Thumbnails(thumbs))? {
            Response::ThumbOutcomes(outcomes) => Ok(outcomes),
            other => Err(unexpected(other)),
        }
    }

    fn call(&mut self, request: &Request) -> io::Result<Response> {
        lines::call(
            &mut self.writer,
            &mut self.reader,
            request,
            MAX_LINE,
            "import",
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
    lines::read_line(reader, MAX_LINE, "import")
}
