//! The `mxmedia` command: parse arguments, load config, set up logging, hand over to the library.

use std::{net::TcpListener, path::PathBuf, process::ExitCode};

use anyhow::Context as _;
use clap::{Parser, Subcommand};
use mxmedia::config::Config;

#[derive(Parser)]
#[command(
    name = "mxmedia",
    version,
    about = "A Matrix media repository in one binary"
)]
struct Cli {
    /// TOML config file (default: $MXMEDIA_CONFIG, else /etc/mxmedia/config.toml if present).
    #[arg(long, global = true)]
    config: Option<PathBuf>,
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Subcommand)]
enum Command {
    /// Run the server (the default).
    Serve,
    /// Validate the configuration and print it with secrets masked.
    CheckConfig,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let config = match Config::load(cli.config) {
        Ok(config) => config,
        Err(e) => {
            eprintln!("mxmedia: configuration error: {e}");
            return ExitCode::FAILURE;
        }
    };
    match cli.command.unwrap_or(Command::Serve) {
        Command::CheckConfig => {
            println!("{}", config.masked_toml());
            ExitCode::SUCCESS
        }
        Command::Serve => {
            let _log_guard = init_tracing();
            match serve(config) {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    tracing::error!("{e:#}");
                    ExitCode::FAILURE
                }
            }
        }
    }
}

/// Logs go to stderr (journald picks them up) through a background writer, so a request never
/// waits on a log write. The guard flushes what is buffered when `main` returns.
fn init_tracing() -> tracing_appender::non_blocking::WorkerGuard {
    let filter = tracing_subscriber::EnvFilter::try_from_env("MXMEDIA_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    // The writer thread drains all queued lines, then flushes: under load many lines share one
    // write(2), when idle each line goes out at once.
    let (writer, guard) = tracing_appender::non_blocking(std::io::BufWriter::with_capacity(
        64 * 1024,
        std::io::stderr(),
    ));
    // Colours only for a person at a terminal; escape codes in files and journals are noise.
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr());
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(ansi)
        .with_writer(writer);
    match std::env::var("MXMEDIA_LOG_FORMAT").as_deref() {
        Ok("json") => builder.json().init(),
        Ok("pretty") => builder.pretty().init(),
        // Under systemd the journal adds its own timestamps and has no terminal for colours.
        _ if std::env::var_os("JOURNAL_STREAM").is_some() => {
            builder.without_time().with_ansi(false).init()
        }
        _ => builder.init(),
    }
    guard
}

fn serve(config: Config) -> anyhow::Result<()> {
    let listener =
        TcpListener::bind(config.listen).with_context(|| format!("binding {}", config.listen))?;
    let addr = listener.local_addr()?;
    let data_dir = config.data_dir.clone();
    let server_name = config.server_name.clone();
    let auth_mode = match (&config.auth.homeserver_url, config.auth.static_tokens.len()) {
        (Some(url), n) => format!("homeserver whoami at {url} (+{n} static tokens)"),
        (None, 0) => "generated development token".to_owned(),
        (None, n) => format!("{n} static tokens"),
    };
    actix_web::rt::System::new().block_on(async move {
        let running = mxmedia::start(config, listener)?;
        tracing::info!(%addr, data_dir = %data_dir.display(), %server_name, auth = %auth_mode, "mxmedia listening");
        if let Some(token) = &running.dev_token {
            println!(
                "\nNo auth configured: a development token for @admin:{server_name} is kept in {}/dev-token\n\n  \
                 export MXMEDIA_TOKEN={token}\n  \
                 curl -H \"Authorization: Bearer $MXMEDIA_TOKEN\" -H 'Content-Type: image/png' \
                 --data-binary @picture.png 'http://{addr}/_matrix/media/v3/upload?filename=picture.png'\n",
                data_dir.display()
            );
        }
        // Tell systemd (Type=notify) we are ready: the listener is bound and the store is open.
        if let Err(e) = sd_notify::notify(&[sd_notify::NotifyState::Ready]) {
            tracing::debug!(error = %e, "sd_notify failed");
        }
        let handle = running.server.handle();
        let metrics = running.metrics.clone();
        actix_web::rt::spawn(async move {
            shutdown_signal().await;
            tracing::info!("shutting down: finishing in-flight requests");
            let _ = sd_notify::notify(&[sd_notify::NotifyState::Stopping]);
            if let Some(metrics) = metrics {
                metrics.stop(true).await;
            }
            handle.stop(true).await;
        });
        running.server.await?;
        running.store.flush().context("flushing the store")?;
        tracing::info!("stopped cleanly");
        Ok(())
    })
}

async fn shutdown_signal() {
    use tokio::signal::unix::{SignalKind, signal};
    let (Ok(mut term), Ok(mut int)) = (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
    ) else {
        return std::future::pending().await;
    };
    tokio::select! {
        _ = term.recv() => {}
        _ = int.recv() => {}
    }
}
