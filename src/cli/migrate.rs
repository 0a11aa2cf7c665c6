//! `mxmedia migrate-store`: runs the migration and prints its summary; the exit status says
//! whether every file blob is in the target.

use std::process::ExitCode;

use bytesize::ByteSize;
use mxmedia::{config::Config, migrate};

/// Exit status: 0 when every file blob is in the target, 1 when some are not (see the blobs
/// named on stderr), 2 when the migration could not run.
pub(crate) fn run_migrate(config: &Config, options: &migrate::Options) -> ExitCode {
    let report = match migrate::run(config, options) {
        Ok(report) => report,
        Err(e) => {
            eprintln!(
                "mxmedia: migrate-store failed: {:#}",
                anyhow::Error::from(e)
            );
            return ExitCode::from(2);
        }
    };
    let listed_by = match report.source {
        migrate::Source::RunningServer(active) => {
            format!("listed by the running server, which reads from {active}")
        }
        migrate::Source::StoppedDataDir => "server stopped".to_owned(),
    };
    let verb = if report.dry_run {
        "to copy (dry run)"
    } else {
        "copied"
    };
    println!(
        "migrate-store {} -> {} ({listed_by}; {} pass{})\n  {verb:<14} {} blobs, {}\n  \
         already there: {} blobs, {}\n  failed:        {}",
        report.from,
        report.to,
        report.passes,
        if report.passes == 1 { "" } else { "es" },
        report.copied,
        ByteSize::b(report.bytes_copied),
        report.already_there,
        ByteSize::b(report.bytes_already_there),
        report.failed,
    );
    if options.remove_source {
        println!(
            "  removed from {}: {} blobs, {}",
            report.from,
            report.removed,
            ByteSize::b(report.bytes_removed)
        );
    }
    if report.success() {
        ExitCode::SUCCESS
    } else {
        println!(
            "some blobs are not in {}: see above, then run it again",
            report.to
        );
        ExitCode::FAILURE
    }
}
