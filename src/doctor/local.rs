//! Doctor checks of this host: the data dir, free space, and the store or the running server.

use std::{
    io::{BufRead as _, BufReader, Write as _},
    os::unix::{fs::MetadataExt as _, net::UnixStream},
    time::Duration,
};

use super::{Check, Doctor, nonce::NonceFile};
use crate::{backup::SOCKET_NAME, clock::now_ms, store::Store};

/// The data dir exists and takes new files; the nonce is written there.
pub fn data_dir(doctor: &mut Doctor<'_>, nonce_file: &NonceFile) {
    let dir = &doctor.config.data_dir;
    let title = "data dir writable";
    match nonce_file.create(now_ms()) {
        Ok(nonce) => {
            doctor.nonce = Some(nonce);
            doctor.push(Check::pass(
                "local.data_dir",
                title,
                format!("{} takes new files", dir.display()),
            ));
        }
        Err(e) => doctor.push(Check::fail(
            "local.data_dir",
            title,
            format!("cannot write in {}: {e}", dir.display()),
            format!(
                "run doctor as the service user (`sudo -u mxmedia mxmedia doctor`), and give \
                 that user the directory MXMEDIA_DATA_DIR={} names",
                dir.display()
            ),
        )),
    }
}

/// Free space against `store.min_free_space`, the floor below which uploads are refused.
pub fn free_space(doctor: &mut Doctor<'_>) {
    let dir = &doctor.config.data_dir;
    let title = "free space";
    let stat = match nix::sys::statvfs::statvfs(dir) {
        Ok(stat) => stat,
        Err(e) => {
            doctor.push(Check::fail(
                "local.free_space",
                title,
                format!("cannot read the free space of {}: {e}", dir.display()),
                "check that MXMEDIA_DATA_DIR names a mounted directory",
            ));
            return;
        }
    };
    let frsize = stat.fragment_size();
    let free = stat.blocks_available().saturating_mul(frsize);
    let total = stat.blocks().saturating_mul(frsize);
    let floor = doctor.config.store.min_free_space.bytes(total);
    let show = |b: u64| bytesize::ByteSize::b(b).display().iec().to_string();
    let detail = format!(
        "{} free of {}, floor {} (store.min_free_space)",
        show(free),
        show(total),
        show(floor)
    );
    if free > floor {
        doctor.push(Check::pass("local.free_space", title, detail));
    } else {
        doctor.push(Check::fail(
            "local.free_space",
            title,
            format!("{detail}: uploads and remote fetches are refused (507)"),
            "free disk space, grow the file system, or lower MXMEDIA_STORE__MIN_FREE_SPACE",
        ));
    }
}

/// The running server answers on its socket, or, when it is stopped, the store opens.
pub fn store(doctor: &mut Doctor<'_>) {
    let data_dir = &doctor.config.data_dir;
    let title = "store";
    let socket = data_dir.join(SOCKET_NAME);
    match ask_socket(&socket) {
        Ok(()) => {
            doctor.push(Check::pass(
                "local.store",
                title,
                format!("the running server answers on {}", socket.display()),
            ));
            return;
        }
        Err(e) if socket.exists() && e.kind() == std::io::ErrorKind::PermissionDenied => {
            doctor.push(Check::fail(
                "local.store",
                title,
                format!("{} refuses this user: {e}", socket.display()),
                "run doctor as the service user (`sudo -u mxmedia mxmedia doctor`)",
            ));
            return;
        }
        Err(_) => {}
    }
    let db = data_dir.join("db");
    let Ok(meta) = std::fs::metadata(&db) else {
        doctor.push(Check::fail(
            "local.store",
            title,
            format!(
                "no server answers on {} and {} has no database",
                socket.display(),
                data_dir.display()
            ),
            "start the server (`systemctl start mxmedia`) with the same MXMEDIA_DATA_DIR",
        ));
        return;
    };
    // Opening it as another user would leave files the service user cannot replace.
    if meta.uid() != nix::unistd::geteuid().as_raw() {
        doctor.push(Check::fail(
            "local.store",
            title,
            format!(
                "no server answers on {} and the database belongs to uid {}",
                socket.display(),
                meta.uid()
            ),
            "run doctor as the service user (`sudo -u mxmedia mxmedia doctor`), or start the \
             server",
        ));
        return;
    }
    match Store::open(doctor.config) {
        Ok(store) => {
            drop(store);
            doctor.push(Check::pass(
                "local.store",
                title,
                format!(
                    "the store in {} opens (the server is not running)",
                    data_dir.display()
                ),
            ));
        }
        Err(e) => doctor.push(Check::fail(
            "local.store",
            title,
            format!("the store in {} does not open: {e}", data_dir.display()),
            "read the error above; restore the data dir from `mxmedia backup` if it is damaged",
        )),
    }
}

/// Asks the backup socket something it does not offer: a live server answers with the
/// protocol it speaks, which proves it holds the store, and does nothing else.
fn ask_socket(path: &std::path::Path) -> std::io::Result<()> {
    let mut stream = UnixStream::connect(path)?;
    stream.set_read_timeout(Some(Duration::from_secs(5)))?;
    stream.write_all(b"doctor\n")?;
    let mut line = String::new();
    BufReader::new(std::io::Read::take(&stream, 1024)).read_line(&mut line)?;
    if line.contains("backup 1") {
        Ok(())
    } else {
        Err(std::io::Error::other(format!(
            "unexpected answer {:?}",
            line.trim()
        )))
    }
}
