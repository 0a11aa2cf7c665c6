//! The server's end of `backup.sock`: the listener (private from the moment it is reachable),
//! its accept loop, and the answer to each connection: a dump of the database for
//! `mxmedia backup`, holding blob removals until the client hangs up (and, asked with
//! `backup 2`, sending the bytes of each blob it then names), or another command's request
//! (`Handler`).

use std::{
    fs,
    io::{self, BufReader, BufWriter, Read},
    os::unix::{
        fs::PermissionsExt as _,
        net::{UnixListener, UnixStream},
    },
    path::{Path, PathBuf},
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    time::Duration,
};

use super::{REQUEST, REQUEST_WITH_BLOBS, SOCKET_NAME, lines};
use crate::store::{
    Store,
    backup::{send_blob, write_failure},
};

/// Longest line naming a blob: a sha256 and a newline, with room to spare.
const MAX_BLOB_LINE: u64 = 128;

/// Serves one more kind of request on the socket (`mxmedia import`'s), given its first line.
/// Wired in by `lib.rs`, so this module needs to know nothing of the commands above it.
pub type Handler = fn(&Store, &UnixStream) -> io::Result<()>;
/// The running server's end: answers `mxmedia backup` on `data_dir/backup.sock`. Dropping it
/// stops the listener and removes the socket.
pub struct BackupSocket {
    path: PathBuf,
    stop: Arc<AtomicBool>,
}

impl BackupSocket {
    pub fn listen(store: Store) -> io::Result<Self> {
        Self::listen_with(store, &[])
    }

    /// Listens for backups and for the requests in `handlers` (first line, handler).
    pub fn listen_with(
        store: Store,
        handlers: &'static [(&'static [u8], Handler)],
    ) -> io::Result<Self> {
        let path = store.data_dir().join(SOCKET_NAME);
        // Bound under another name and renamed once private, so no one can connect to it
        // while it still has the umask's permissions.
        let fresh = store.data_dir().join(format!("{SOCKET_NAME}.new"));
        remove_if_present(&fresh)?;
        let listener = UnixListener::bind(&fresh)?;
        fs::set_permissions(&fresh, fs::Permissions::from_mode(0o600))?;
        fs::rename(&fresh, &path)?;
        let stop = Arc::new(AtomicBool::new(false));
        let stopped = stop.clone();
        std::thread::Builder::new()
            .name("mxmedia-backup-socket".into())
            .spawn(move || accept_loop(&listener, &store, &stopped, handlers))?;
        Ok(Self { path, stop })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }
}

impl Drop for BackupSocket {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        // Wakes the accept loop so it sees the flag and lets go of the store.
        let _ = UnixStream::connect(&self.path);
        let _ = fs::remove_file(&self.path);
    }
}

fn accept_loop(
    listener: &UnixListener,
    store: &Store,
    stop: &AtomicBool,
    handlers: &'static [(&'static [u8], Handler)],
) {
    for stream in listener.incoming() {
        if stop.load(Ordering::SeqCst) {
            return;
        }
        let stream = match stream {
            Ok(stream) => stream,
            Err(e) => {
                tracing::warn!(error = %e, "backup socket: accept failed");
                std::thread::sleep(Duration::from_millis(100));
                continue;
            }
        };
        let store = store.clone();
        let spawned = std::thread::Builder::new()
            .name("mxmedia-backup".into())
            .spawn(move || {
                if let Err(e) = serve_backup(&store, &stream, handlers) {
                    tracing::warn!(error = %e, "backup over the socket failed");
                }
            });
        if let Err(e) = spawned {
            tracing::warn!(error = %e, "backup socket: no thread for a client");
        }
    }
}

fn serve_backup(
    store: &Store,
    stream: &UnixStream,
    handlers: &[(&'static [u8], Handler)],
) -> io::Result<()> {
    stream.set_read_timeout(Some(Duration::from_secs(10)))?;
    let mut request = Vec::new();
    // Byte by byte: a handler reads what follows the first line from the stream itself.
    let mut byte = [0u8; 1];
    while request.len() < 64 && !request.ends_with(b"\n") {
        match (&*stream).read(&mut byte)? {
            0 => break,
            _ => request.extend_from_slice(&byte),
        }
    }
    if let Some((_, handler)) = handlers.iter().find(|(first, _)| *first == request) {
        return handler(store, stream);
    }
    let mut out = BufWriter::new(stream);
    let with_blobs = request == REQUEST_WITH_BLOBS;
    if request != REQUEST && !with_blobs {
        return write_failure(
            &mut out,
            "unknown request; this server speaks `backup 1` and `backup 2`",
        );
    }
    tracing::info!("backup: dumping the database for `mxmedia backup`");
    let hold = match store.hold_blob_files() {
        Ok(hold) => hold,
        Err(e) => return write_failure(&mut out, &e.to_string()),
    };
    match store.dump(&mut out) {
        Ok(stats) => {
            tracing::info!(
                trees = stats.trees,
                entries = stats.entries,
                "backup: database sent"
            );
        }
        Err(e) => return write_failure(&mut out, &e.to_string()),
    }
    // The client copies blobs now and hangs up when done; until then none is removed. Copying
    // a large blob may take minutes: no read timeout from here on.
    stream.set_read_timeout(None)?;
    if with_blobs {
        let mut reader = BufReader::new(stream);
        let mut sent = 0u64;
        while let Ok(Some(line)) = lines::read_line(&mut reader, MAX_BLOB_LINE, "backup") {
            let sha256 = String::from_utf8_lossy(&line);
            if send_blob(store, &sha256, &mut out).is_err() {
                break;
            }
            sent += 1;
        }
        tracing::info!(blobs = sent, "backup: blobs sent");
    } else {
        drop(out);
        let mut sink = [0u8; 64];
        while matches!((&*stream).read(&mut sink), Ok(n) if n > 0) {}
    }
    drop(hold);
    tracing::info!("backup: client done");
    Ok(())
}

fn remove_if_present(path: &Path) -> io::Result<()> {
    match fs::remove_file(path) {
        Err(e) if e.kind() != io::ErrorKind::NotFound => Err(e),
        _ => Ok(()),
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, reason = "test code")]
mod tests {
    use std::io::{BufRead, Write as _};

    use mxmedia_proto::ids::{MediaId, ServerName};

    use super::*;
    use crate::{
        config::Config,
        model::id::MediaKey,
        store::{
            Expect, Upload,
            backup::{BackupError, receive_blob, restore_dump},
            blob::Staging,
        },
    };

    fn put(store: &Store, bytes: &[u8]) -> (MediaKey, String) {
        let key = MediaKey {
            server_name: "localhost".parse::<ServerName>().unwrap(),
            media_id: MediaId::generate(),
        };
        let mut staging = store.stage().unwrap();
        staging.write(bytes).unwrap();
        let staged = staging.finish().unwrap();
        let sha256 = staged.sha256.clone();
        let upload = Upload {
            content_type: "text/plain".into(),
            filename: None,
            uploader: "@a:localhost",
            created_at: 1,
            expect: Expect::Absent,
        };
        store.commit_upload(&key, staged, upload).unwrap();
        (key, sha256)
    }

    fn ask(
        writer: &mut UnixStream,
        reader: &mut dyn BufRead,
        tmp: &Path,
        sha256: &str,
        len: u64,
    ) -> Result<Vec<u8>, BackupError> {
        writer.write_all(format!("{sha256}\n").as_bytes()).unwrap();
        let mut staged = receive_blob(reader, Staging::new(tmp).unwrap(), sha256, len)?;
        Ok(staged.read_all().unwrap())
    }

    /// After the dump, `backup 2` sends the bytes of each blob named, also one whose media was
    /// deleted after the dump (held for the backup); a blob it does not have, or a name that is
    /// not a sha256 (a path, say), gets a reason and the conversation goes on.
    #[test]
    fn backup_2_sends_held_blobs_and_refuses_other_names() {
        let dir = tempfile::tempdir().unwrap();
        let config = Config {
            data_dir: dir.path().to_path_buf(),
            ..Config::default()
        };
        let store = Store::open(&config).unwrap();
        let bytes: Vec<u8> = (0..700_000u32).map(|i| i.to_le_bytes()[0]).collect();
        let (key, sha256) = put(&store, &bytes);
        let _socket = BackupSocket::listen(store.clone()).unwrap();

        let mut writer = UnixStream::connect(dir.path().join(SOCKET_NAME)).unwrap();
        writer.write_all(REQUEST_WITH_BLOBS).unwrap();
        let mut reader = BufReader::new(writer.try_clone().unwrap());
        let out = tempfile::tempdir().unwrap();
        let restored = restore_dump(&mut reader, &out.path().join("db")).unwrap();
        assert_eq!(restored.files, vec![(sha256.clone(), 700_000)]);
        assert!(store.delete_media(&key).unwrap());

        let len = 700_000;
        assert_eq!(
            ask(&mut writer, &mut reader, out.path(), &sha256, len).unwrap(),
            bytes
        );
        let absent = "0".repeat(64);
        let err = ask(&mut writer, &mut reader, out.path(), &absent, 1).unwrap_err();
        assert!(matches!(err, BackupError::UnreadableBlob { .. }), "{err}");
        let err = ask(&mut writer, &mut reader, out.path(), "../../db/conf", 1).unwrap_err();
        assert!(err.to_string().contains("not a sha256"), "{err}");
        // A wrong expected length is caught by the reader.
        let err = ask(&mut writer, &mut reader, out.path(), &sha256, len + 1).unwrap_err();
        assert!(matches!(err, BackupError::BlobMismatch { .. }), "{err}");
    }
}
