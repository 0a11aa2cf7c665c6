//! The S3 part of `mxmedia check-config`: with `[store.s3]` set, the bucket must be reachable
//! and writable, and the operator is told exactly what is wrong when it is not.

use std::process::ExitCode;

use mxmedia::{config::Config, store::s3::S3Blobs};

pub(crate) fn check_bucket(config: &Config) -> ExitCode {
    let Some(s3) = &config.store.s3 else {
        return ExitCode::SUCCESS;
    };
    let blobs = match S3Blobs::new(s3) {
        Ok(blobs) => blobs,
        Err(e) => {
            eprintln!("mxmedia: {e}");
            return ExitCode::FAILURE;
        }
    };
    if let Some(dir) = s3.cache_dir(&config.data_dir) {
        match mxmedia::store::s3::check_cache_dir(&dir) {
            Ok(()) => eprintln!(
                "S3 cache `{}`: writable, up to {}",
                dir.display(),
                s3.cache_max_size.display().iec()
            ),
            Err(e) => {
                eprintln!("mxmedia: {e}");
                return ExitCode::FAILURE;
            }
        }
    }
    match blobs.check() {
        Ok(()) => {
            eprintln!(
                "S3 bucket `{}`: reachable and writable (probe put, read back, deleted)",
                s3.bucket
            );
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("mxmedia: {e}");
            ExitCode::FAILURE
        }
    }
}
