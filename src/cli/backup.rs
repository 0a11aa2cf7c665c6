//! `mxmedia backup`: runs the backup and prints what it wrote, warning when the signing key
//! is not in it, and when its blobs stayed in the S3 bucket.

use std::process::ExitCode;

use mxmedia::{backup, config::Config};

pub(crate) fn run_backup(
    config: &Config,
    dir: &std::path::Path,
    options: &backup::Options,
) -> ExitCode {
    match backup::run(config, dir, options) {
        Ok(report) => {
            let source = match report.source {
                backup::Source::RunningServer => "from the running server",
                backup::Source::StoppedDataDir => "from the stopped data dir",
            };
            println!(
                "backup of {} written to {} ({source}): {} database entries in {} trees, \
                 {} blob files ({} bytes; {} hard-linked, {} copied, {} fetched from the \
                 server's blob store, {} kept from an interrupted run)",
                config.data_dir.display(),
                dir.display(),
                report.entries,
                report.trees,
                report.files_linked
                    + report.files_copied
                    + report.files_fetched
                    + report.files_resumed,
                report.file_bytes,
                report.files_linked,
                report.files_copied,
                report.files_fetched,
                report.files_resumed,
            );
            if let Some(left) = &report.left_in_bucket {
                println!(
                    "warning: {} blobs ({} bytes) stayed in S3 bucket {:?} (prefix {:?}): this \
                     backup holds the database, not those bytes, and a restore serves them only \
                     while the bucket still has them (the sweep removes objects no record points \
                     at). Back the bucket up with its own tools (versioning, replication), or \
                     run `mxmedia backup --include-s3-blobs DIR` for a backup that holds every \
                     blob",
                    left.files, left.bytes, left.bucket, left.prefix
                );
            }
            match &report.signing_key {
                backup::SigningKey::InBackup(path) => {
                    println!("federation signing key included ({})", path.display());
                }
                backup::SigningKey::Elsewhere(path) => println!(
                    "warning: the federation signing key is NOT in this backup:                      MXMEDIA_FEDERATION__SIGNING_KEY_PATH={} is outside the data dir; keep a copy                      of it with the configuration, or remote servers refuse a restored server",
                    path.display()
                ),
                backup::SigningKey::None => {
                    println!("no federation signing key yet: the server makes one at start");
                }
            }
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("mxmedia: backup failed: {:#}", anyhow::Error::from(e));
            ExitCode::FAILURE
        }
    }
}
