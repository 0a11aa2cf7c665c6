//! Measures what the store costs on disk for media: stores about 1 GiB of files between
//! 10 KiB and 20 MiB (log-uniform sizes, incompressible bytes), flushes, deletes every other
//! file, and prints bytes on disk against media bytes at each step.
//!
//! `cargo run --release --example storage_amplification -- [inline_blob_max_bytes] [total_mib]`
//! Run it once with a huge inline limit (everything in sled) and once with the default.

#![allow(
    clippy::indexing_slicing,
    clippy::as_conversions,
    reason = "a measuring tool on generated sizes, not product code"
)]

use std::path::Path;

use mxmedia::{
    config::Config,
    model::id::MediaKey,
    store::{Expect, Store, Upload},
};
use mxmedia_proto::ids::{MediaId, ServerName};

fn du(path: &Path) -> u64 {
    let Ok(meta) = std::fs::symlink_metadata(path) else {
        return 0;
    };
    if meta.is_dir() {
        std::fs::read_dir(path)
            .map(|rd| rd.flatten().map(|e| du(&e.path())).sum())
            .unwrap_or(0)
    } else {
        use std::os::unix::fs::MetadataExt as _;
        meta.blocks() * 512
    }
}

fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().collect();
    let inline_max: u64 = args.get(1).map_or(Ok(256 * 1024), |s| s.parse())?;
    let total_mib: u64 = args.get(2).map_or(Ok(1024), |s| s.parse())?;
    let dir = tempfile::tempdir_in(".")?;
    let mut config = Config {
        data_dir: dir.path().to_path_buf(),
        ..Config::default()
    };
    config.store.inline_blob_max = bytesize::ByteSize::b(inline_max);
    let store = Store::open(&config)?;
    let server = "localhost".parse::<ServerName>()?;

    let mut rng = 0x9e37_79b9_7f4a_7c15_u64;
    let mut next = || {
        rng ^= rng << 13;
        rng ^= rng >> 7;
        rng ^= rng << 17;
        rng
    };
    let (min, max) = (10.0f64 * 1024.0, 20.0f64 * 1024.0 * 1024.0);
    let mut keys = Vec::new();
    let mut media_bytes = 0u64;
    let started = std::time::Instant::now();
    while media_bytes < total_mib * 1024 * 1024 {
        let u = (next() % 1_000_000) as f64 / 1_000_000.0;
        let len = (min * (max / min).powf(u)) as usize;
        let mut staging = store.stage()?;
        let mut left = len;
        let mut buf = vec![0u8; 256 * 1024];
        while left > 0 {
            let n = left.min(buf.len());
            for chunk in buf[..n].chunks_mut(8) {
                let v = next().to_le_bytes();
                chunk.copy_from_slice(&v[..chunk.len()]);
            }
            staging.write(&buf[..n])?;
            left -= n;
        }
        let key = MediaKey {
            server_name: server.clone(),
            media_id: MediaId::generate(),
        };
        let upload = Upload {
            content_type: "application/octet-stream".into(),
            filename: None,
            uploader: "@bench:localhost",
            created_at: 0,
            expect: Expect::Absent,
        };
        store
            .commit_upload(&key, staging.finish()?, upload)
            .map_err(|e| anyhow::anyhow!("{e}"))?;
        media_bytes += len as u64;
        keys.push((key, len as u64));
    }
    store.flush().map_err(|e| anyhow::anyhow!("{e}"))?;
    let report = |label: &str, media: u64| {
        let sled = du(&dir.path().join("db"));
        let files = du(&dir.path().join("blobs"));
        println!(
            "{label:<28} media {:>7.1} MiB | sled {:>7.1} MiB | blob files {:>7.1} MiB | total/media {:.3}",
            media as f64 / 1048576.0,
            sled as f64 / 1048576.0,
            files as f64 / 1048576.0,
            (sled + files) as f64 / media as f64
        );
    };
    println!(
        "inline_blob_max = {inline_max} bytes, {} files, stored in {:.1?}",
        keys.len(),
        started.elapsed()
    );
    report("after store + flush", media_bytes);
    let mut remaining = media_bytes;
    for (i, (key, len)) in keys.iter().enumerate() {
        if i % 2 == 0 {
            store
                .delete_media(key)
                .map_err(|e| anyhow::anyhow!("{e}"))?;
            remaining -= len;
        }
    }
    store.flush().map_err(|e| anyhow::anyhow!("{e}"))?;
    report("after deleting half", remaining);
    drop(store);
    let store = Store::open(&config)?;
    store.flush().map_err(|e| anyhow::anyhow!("{e}"))?;
    report("after reopen", remaining);
    Ok(())
}
