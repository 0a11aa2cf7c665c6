//! `mxmedia serve`: logging, the open-files limit, the listener, readiness for systemd, and
//! the signals that reload the TLS certificate or stop the server gracefully.

use std::{net::TcpListener, sync::Arc};

use anyhow::Context as _;
use mxmedia::{config::Config, tls::CertResolver};

/// Logs go to stderr (journald picks them up) through a background writer, so a request never
/// waits on a log write. The guard flushes what is buffered when `main` returns.
pub(crate) fn init_tracing() -> tracing_appender::non_blocking::WorkerGuard {
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

pub(crate) fn serve(config: Config) -> anyhow::Result<()> {
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
