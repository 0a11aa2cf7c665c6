//! `mxmedia export synapse`: runs the export and prints its summary and the commands that
//! finish the move; the exit status says whether every stored item was exported.

use std::process::ExitCode;

use mxmedia::{config::Config, export};

/// Exit status: 0 when every stored item has its file and row, 1 when some have not (named on
/// stderr), 2 when the export stopped (no SQL file written).
pub(crate) fn run_export(config: &Config, options: &export::Options) -> ExitCode {
    let report = match export::run(config, options) {
        Ok(report) => report,
        Err(e) => {
            eprintln!("mxmedia: export failed: {:#}", anyhow::Error::from(e));
            return ExitCode::from(2);
        }
    };
    let from = match report.source {
        export::Source::RunningServer => "from the running server",
        export::Source::StoppedDataDir => "from the stopped data dir",
    };
    println!(
        "export of {} to {} ({from}): {} rows\n  copied:        {} ({} bytes)\n  \
         linked:        {} ({} bytes)\n  already there: {}\n  quarantined:   {} (exported, \
         still quarantined)\n  pending:       {} (never uploaded, not exported)\n  \
         deleted meanwhile: {}\n  failed:        {}",
        config.data_dir.display(),
        options.media_store.display(),
        report.rows,
        report.copied,
        report.bytes_copied,
        report.linked,
        report.bytes_linked,
        report.already_there,
        report.quarantined,
        report.pending,
        report.deleted_meanwhile,
        report.failed,
    );
    let load = match options.dialect {
        export::Dialect::Sqlite => {
            format!("sqlite3 /path/to/homeserver.db < {}", options.sql.display())
        }
        export::Dialect::Postgres => format!(
            "psql -v ON_ERROR_STOP=1 -d synapse -f {}",
            options.sql.display()
        ),
    };
    println!(
        "SQL written to {}; load it with: {load}",
        options.sql.display()
    );
    if report.success() {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}
