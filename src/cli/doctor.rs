//! `mxmedia doctor`: runs the outside check and prints its report as text or JSON.

use std::process::ExitCode;

use mxmedia::config::Config;

pub(crate) fn run_doctor(
    config: &Config,
    options: mxmedia::doctor::Options,
    json: bool,
) -> ExitCode {
    let outcome = actix_web::rt::System::new()
        .block_on(async { mxmedia::doctor::run(config, &options).await });
    match outcome {
        Ok(report) => {
            if json {
                println!("{}", report.json());
            } else {
                print!("{}", report.text());
            }
            if report.ok() {
                ExitCode::SUCCESS
            } else {
                ExitCode::FAILURE
            }
        }
        Err(e) => {
            eprintln!("mxmedia: doctor could not start: {e:#}");
            ExitCode::FAILURE
        }
    }
}
