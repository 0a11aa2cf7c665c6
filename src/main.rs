//! The `mxmedia` command: parse arguments, load config, set up logging, hand over to the library.

use std::{net::TcpListener, path::PathBuf, process::ExitCode, sync::Arc};

use anyhow::Context as _;
use clap::{Parser, Subcommand};
use mxmedia::{
    backup,
    config::{Config, StrayEnv},
    tls::CertResolver,
};

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
    /// Write a new federation signing key file and print the line the homeserver must publish.
    GenerateKey {
        /// Where to write the key (default: ./mxmedia.signing.key). Never overwritten.
        path: Option<PathBuf>,
    },
    /// Write a consistent backup of the data dir into DIR, whether the server runs or not.
    /// DIR must not exist; when done it is a data dir that `serve` can run on.
    Backup {
        /// The data dir to back up. Default: the configured one, as `serve` would use.
        #[arg(long)]
        data_dir: Option<PathBuf>,
        /// Where to write the backup: a directory that does not exist yet.
        dir: PathBuf,
    },
    /// Check the whole path to this server from outside (proxy routes and headers, upload size,
    /// federation keys and delegation, TLS, disk, clock) and print the fix for each problem.
    /// Run it as the service user while the server runs; exit 1 when something is wrong.
    Doctor {
        /// The public client URL (default: from https://SERVER_NAME/.well-known/matrix/client).
        #[arg(long)]
        base_url: Option<String>,
        /// An access token: also upload, download, thumbnail and remove a 1 MiB test image
        /// (a media admin's token, so the image can be removed).
        #[arg(long)]
        token: Option<String>,
        /// Print the report as JSON, for monitoring.
        #[arg(long)]
        json: bool,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    if let Some(Command::GenerateKey { path }) = &cli.command {
        return generate_key(path.clone());
    }
    // `check-config` refuses every `MXMEDIA_*` variable that names no setting; the others only
    // refuse ones that look like a mistyped setting and ignore the rest (say, a shell's
    // `MXMEDIA_TOKEN`), naming them, so a leftover variable cannot keep the server down.
    let strays = match cli.command {
        Some(Command::CheckConfig) => StrayEnv::Refuse,
        _ => StrayEnv::Ignore,
    };
    let (config, ignored_env) = match Config::load_with(cli.config, strays) {
        Ok(loaded) => loaded,
        Err(e) => {
            eprintln!("mxmedia: configuration error: {e}");
            return ExitCode::FAILURE;
        }
    };
    match cli.command.unwrap_or(Command::Serve) {
        Command::CheckConfig => {
            println!("{}", config.masked_json());
            check_signing_key(&config)
        }
        Command::GenerateKey { .. } => ExitCode::FAILURE,
        Command::Backup { data_dir, dir } => {
            for var in &ignored_env {
                eprintln!("mxmedia: ignoring {var}: it names no setting");
            }
            let mut config = config;
            if let Some(data_dir) = data_dir {
                config.data_dir = data_dir;
            }
            run_backup(&config, &dir)
        }
        Command::Doctor {
            base_url,
            token,
            json,
        } => run_doctor(&config, mxmedia::doctor::Options { base_url, token }, json),
        Command::Serve => {
            let _log_guard = init_tracing();
            for var in &ignored_env {
                tracing::warn!(
                    variable = %var,
                    "ignoring an MXMEDIA_ environment variable that names no setting"
                );
            }
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

fn generate_key(path: Option<PathBuf>) -> ExitCode {
    let path = path.unwrap_or_else(|| PathBuf::from("mxmedia.signing.key"));
    let written = mxmedia::federation::identity::new_key().and_then(|key| {
        mxmedia::federation::identity::write_key_file(&path, &key)?;
        Ok(key)
    });
    match written {
        Ok(key) => {
            println!(
                "Wrote the signing key {} to {}.\n\n\
                 Remote servers accept requests signed with it once the homeserver publishes it.\n\
                 Append this line to the homeserver's signing key file (Synapse: the file named by\n\
                 signing_key_path; keep the homeserver's own key first) and restart the homeserver:\n\n\
                 {}\n\
                 Then run mxmedia with MXMEDIA_FEDERATION__SIGNING_KEY_PATH={}",
                key.key_id(),
                path.display(),
                key.to_key_file_line(),
                path.display(),
            );
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("mxmedia: {e:#}");
            ExitCode::FAILURE
        }
    }
}

/// `check-config`: can we sign, and does the homeserver publish the key we sign with?
fn check_signing_key(config: &Config) -> ExitCode {
    use mxmedia::federation::identity::{GENERATED_KEY_FILE, Identity, Published};
    if config.federation.signing_key_path.is_none()
        && !config.data_dir.join(GENERATED_KEY_FILE).exists()
    {
        eprintln!(
            "note: no signing key yet; the first start generates {}",
            config.data_dir.join(GENERATED_KEY_FILE).display()
        );
        return ExitCode::SUCCESS;
    }
    let identity = match Identity::load(config) {
        Ok(identity) => identity,
        Err(e) => {
            eprintln!("mxmedia: signing key: {e:#}");
            return ExitCode::FAILURE;
        }
    };
    eprintln!(
        "signing key: {} from {}",
        identity.key.key_id(),
        identity.path.display()
    );
    let Some(url) = config.auth.homeserver_url.clone() else {
        return ExitCode::SUCCESS;
    };
    let outcome = actix_web::rt::System::new()
        .block_on(async move { mxmedia::verify_signing_key(&identity, &url).await });
    match outcome {
        Ok(Published::Yes) => eprintln!("the homeserver publishes this key"),
        Ok(Published::WrongKey) => eprintln!(
            "warning: the homeserver publishes a different public key under this key id; \
             remote servers will refuse mxmedia's federation requests"
        ),
        Ok(Published::Missing(ids)) => eprintln!(
            "warning: the homeserver publishes only [{}], not this key; remote servers will \
             refuse mxmedia's federation requests until it does (see `mxmedia generate-key`)",
            ids.join(", ")
        ),
        Err(e) => eprintln!("warning: could not check the homeserver's published keys: {e:#}"),
    }
    ExitCode::SUCCESS
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

fn run_doctor(config: &Config, options: mxmedia::doctor::Options, json: bool) -> ExitCode {
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

fn run_backup(config: &Config, dir: &std::path::Path) -> ExitCode {
    match backup::run(config, dir) {
        Ok(report) => {
            let source = match report.source {
                backup::Source::RunningServer => "from the running server",
                backup::Source::StoppedDataDir => "from the stopped data dir",
            };
            println!(
                "backup of {} written to {} ({source}): {} database entries in {} trees, \
                 {} blob files ({} bytes; {} hard-linked, {} copied)",
                config.data_dir.display(),
                dir.display(),
                report.entries,
                report.trees,
                report.files_linked + report.files_copied,
                report.file_bytes,
                report.files_linked,
                report.files_copied,
            );
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

/// Every connection holds a descriptor, and uploads and downloads one more: use all the
/// open files the hard limit allows (as nginx's `worker_rlimit_nofile` does), since the usual
/// soft limit of 1024 would otherwise cap the server at a few hundred clients.
fn raise_open_files_limit() {
    use nix::sys::resource::{Resource, getrlimit, setrlimit};
    match getrlimit(Resource::RLIMIT_NOFILE) {
        Ok((soft, hard)) if soft < hard => {
            if let Err(e) = setrlimit(Resource::RLIMIT_NOFILE, hard, hard) {
                tracing::debug!(error = %e, soft, hard, "could not raise the open-files limit");
            }
        }
        Ok(_) => {}
        Err(e) => tracing::debug!(error = %e, "could not read the open-files limit"),
    }
}

fn serve(config: Config) -> anyhow::Result<()> {
    raise_open_files_limit();
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
        // Installed before the server is ready, so a SIGHUP sent once it answers never meets
        // the default action (terminate).
        let mut signals = Signals::install().context("installing signal handlers")?;
        let running = mxmedia::start(config, listener)?;
        tracing::info!(%addr, data_dir = %data_dir.display(), %server_name, auth = %auth_mode, "mxmedia listening");
        if let Some(token) = &running.dev_token {
            println!(
                "\nNo auth configured: a development token for @admin:{server_name} is kept in {}/dev-token\n\n  \
                 export DEV_TOKEN={token}\n  \
                 curl -H \"Authorization: Bearer $DEV_TOKEN\" -H 'Content-Type: image/png' \
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
        let tls = running.tls.clone();
        actix_web::rt::spawn(async move {
            while let Signal::Reload = signals.next().await {
                reload_tls(tls.as_ref());
            }
            tracing::info!("shutting down: finishing in-flight requests");
            let _ = sd_notify::notify(&[sd_notify::NotifyState::Stopping]);
            if let Some(metrics) = metrics {
                metrics.stop(true).await;
            }
            handle.stop(true).await;
        });
        running.server.await?;
        drop(running.backup_socket);
        running.store.flush().context("flushing the store")?;
        tracing::info!("stopped cleanly");
        Ok(())
    })
}

enum Signal {
    /// SIGTERM or SIGINT: stop gracefully.
    Stop,
    /// SIGHUP: re-read what can change without a restart (the TLS certificate).
    Reload,
}

struct Signals {
    term: tokio::signal::unix::Signal,
    int: tokio::signal::unix::Signal,
    hup: tokio::signal::unix::Signal,
}

impl Signals {
    fn install() -> std::io::Result<Self> {
        use tokio::signal::unix::{SignalKind, signal};
        Ok(Self {
            term: signal(SignalKind::terminate())?,
            int: signal(SignalKind::interrupt())?,
            hup: signal(SignalKind::hangup())?,
        })
    }

    async fn next(&mut self) -> Signal {
        tokio::select! {
            _ = self.term.recv() => Signal::Stop,
            _ = self.int.recv() => Signal::Stop,
            _ = self.hup.recv() => Signal::Reload,
        }
    }
}

/// A failed reload leaves the certificate in use as it was: new connections keep working.
fn reload_tls(tls: Option<&Arc<CertResolver>>) {
    let Some(cert) = tls else {
        tracing::info!("SIGHUP: no TLS configured, nothing to reload");
        return;
    };
    match cert.reload() {
        Ok(()) => tracing::info!("SIGHUP: TLS certificate reloaded"),
        Err(e) => tracing::error!(
            "SIGHUP: TLS certificate not reloaded, still serving the previous one: {:#}",
            anyhow::Error::from(e)
        ),
    }
}
