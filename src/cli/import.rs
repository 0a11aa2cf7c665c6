//! `mxmedia import synapse`: runs the import and prints its summary; the exit status says
//! whether everything meant to be imported is stored.

use std::process::ExitCode;

use mxmedia::{config::Config, import};

/// Exit status: 0 when everything meant to be imported is stored, 1 when some items were
/// not (missing files, mismatches, failures: see the problem list), 2 when the import stopped.
pub(crate) fn run_import(config: &Config, options: &import::Options) -> ExitCode {
    let report = match import::run(config, options) {
        Ok(report) => report,
        Err(e) => {
            eprintln!("mxmedia: import failed: {:#}", anyhow::Error::from(e));
            return ExitCode::from(2);
        }
    };
    let into = match report.target {
        import::Target::RunningServer => "through the running server".to_owned(),
        import::Target::StoppedDataDir => format!("into {}", config.data_dir.display()),
        import::Target::DryRun { asked_server } => format!(
            "dry run, nothing written{}",
            if asked_server {
                ""
            } else {
                " (server stopped: not compared with what is stored)"
            }
        ),
    };
    let skipped: Vec<String> = report
        .skipped
        .iter()
        .map(|(reason, n)| format!("{n} {reason}"))
        .collect();
    println!(
        "import from {} ({into}): {} rows\n  imported:      {}\n  quarantined:   {} (blocked, answer 404)\n  \
         already there: {}\n  skipped:       {}\n  missing file:  {}\n  hash mismatch: {}\n  \
         failed:        {}\n  bytes copied:  {}\n  bytes linked:  {}\n  saved by dedupe: {}",
        options.database_for_display(),
        report.rows,
        report.imported,
        report.blocked,
        report.already_there,
        if skipped.is_empty() {
            "0".to_owned()
        } else {
            skipped.join(", ")
        },
        report.missing_file,
        report.hash_mismatch,
        report.failed,
        report.bytes_copied,
        report.bytes_linked,
        report.bytes_saved,
    );
    if options.thumbnails {
        let t = &report.thumbnails;
        println!(
            "  thumbnails:    {} imported, {} already there, {} left out (not a size, method or \
             type served here: made again on demand), {} missing or unreadable",
            t.imported, t.already_there, t.left_out, t.failed
        );
    }
    if let Some(path) = &report.problems_file {
        println!("problem ids listed in {}", path.display());
    }
    if report.success() {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}
