//! mxmedia: a Matrix media repository. `run` starts the server; `main.rs` only parses the
//! command line and hands over, so tests can start a real server in-process.

pub mod auth;
pub mod backup;
pub mod clock;
pub mod config;
pub mod doctor;
pub mod error;
pub mod export;
pub mod federation;
pub mod http;
pub mod import;
pub mod media;
pub mod metrics;
pub mod migrate;
pub mod model;
pub mod net;
pub mod preview;
pub mod singleflight;
pub mod state;
pub mod store;
pub mod thumbnail;
pub mod tls;
pub mod ttl_cache;

use std::{net::TcpListener, path::Path, sync::Arc, time::Duration};

use actix_web::{App, HttpServer, middleware, web};
use anyhow::Context as _;
use num_traits::ToPrimitive as _;

use crate::{
    auth::Authenticator,
    backup::BackupSocket,
    config::Config,
    media::MediaService,
    state::{AppState, WorkerState},
    store::Store,
};

/// A server bound and ready: await `server` to run it until shutdown.
pub struct Running {
    pub server: actix_web::dev::Server,
    /// The metrics listener, when configured; stop it with the main server.
    pub metrics: Option<actix_web::dev::ServerHandle>,
    pub store: Store,
    /// The media service the workers share, e.g. to run a retention sweep at a chosen time.
    pub media: Arc<MediaService>,
    pub dev_token: Option<String>,
    /// With HTTPS on, the certificate in use: `reload()` re-reads it from disk (SIGHUP).
    pub tls: Option<Arc<tls::CertResolver>>,
    /// Answers `mxmedia backup` while the server runs; dropping it closes the socket.
    pub backup_socket: Option<BackupSocket>,
}

/// Opens the store, binds nothing itself (the listener is given), and builds the server.
/// What the data dir's socket answers besides backups: imports, committed by this process
/// because sled admits only one, exports, read by it for the same reason, and the blob lists
/// of `mxmedia migrate-store`.
const SOCKET_REQUESTS: &[(&[u8], backup::Handler)] = &[
    (import::socket::REQUEST, import::socket::serve),
    (export::REQUEST, export::serve),
    (migrate::socket::REQUEST, migrate::socket::serve),
];

pub fn start(mut config: Config, listener: TcpListener) -> anyhow::Result<Running> {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let cert = match config.tls.paths() {
        Some((cert, key)) => Some(Arc::new(
            tls::CertResolver::load(cert, key).context("loading the TLS certificate")?,
        )),
        None => None,
    };
    if config.store.inline_blob_max.as_u64() > config::SLED_CACHEABLE_VALUE_MAX {
        tracing::warn!(
            inline_blob_max = config.store.inline_blob_max.as_u64(),
            "store.inline_blob_max is above 7 KiB: sled keeps every tree node holding such \
             blobs in memory, so memory grows with the database"
        );
    }
    let store = Store::open(&config).context("opening the store")?;
    if let Some(s3) = store.s3() {
        s3.check()?;
        tracing::info!(bucket = s3.bucket(), "blobs are kept in S3");
    }
    let swept = store
        .sweep_orphans()
        .context("sweeping unreferenced blobs")?;
    if swept > 0 {
        tracing::info!(swept, "removed blob files left by an interrupted upload");
    }
    let backup_socket = match BackupSocket::listen_with(store.clone(), SOCKET_REQUESTS) {
        Ok(socket) => Some(socket),
        Err(e) => {
            tracing::warn!(
                error = %e,
                "no backup socket in the data dir: `mxmedia backup` works only while stopped"
            );
            None
        }
    };
    let dev_token = if config.has_auth_source() {
        None
    } else {
        Some(dev_token(store.data_dir())?)
    };
    let dev_user = format!("@admin:{}", config.server_name);
    let auth = Authenticator::new(
        &config.auth,
        dev_token.as_ref().map(|t| (t.clone(), dev_user.clone())),
    );
    if dev_token.is_some() {
        config.auth.admins.push(dev_user);
    }
    let media = Arc::new(MediaService::new(&config, store.clone()));
    let preview = preview::Previews::new(&config, Arc::clone(&media))?;
    let federation_identity =
        Arc::new(federation::identity::Identity::load(&config).context("loading the signing key")?);
    tracing::info!(
        key_id = %federation_identity.key.key_id(),
        path = %federation_identity.path.display(),
        "signing federation requests as {}",
        federation_identity.server_name
    );
    let federation = federation::Federation::new(&config.federation)
        .context("setting up the federation client")?;
    let key_ring =
        federation::keyring::KeyRing::new(store.clone(), &config.federation.trusted_key_servers);
    let workers = if config.workers == 0 {
        std::thread::available_parallelism().map_or(2, usize::from)
    } else {
        config.workers
    };
    let state = web::Data::new(AppState {
        config,
        media: Arc::clone(&media),
        auth,
        federation,
        federation_identity,
        key_ring,
        preview,
    });
    spawn_expiry(state.clone());
    // The homeserver client checks certificates like federation does, with the web PKI roots.
    let tls = Arc::new(net::tls::client_config(true, None)?);
    if let Some(url) = state.config.auth.homeserver_url.clone() {
        let identity = Arc::clone(&state.federation_identity);
        let client = state::homeserver_client(tls.clone());
        actix_web::rt::spawn(async move {
            // The homeserver often starts alongside us: retry an unreachable one for a while
            // before warning.
            let mut delay = Duration::from_secs(2);
            let outcome = loop {
                let outcome =
                    federation::identity::verify_published(&identity, &url, &client).await;
                if outcome.is_ok() || delay > Duration::from_secs(60) {
                    break outcome;
                }
                tokio::time::sleep(delay).await;
                delay *= 2;
            };
            federation::identity::log_published(&identity, &outcome);
        });
    }
    let metrics = match state.config.metrics.listen {
        Some(addr) => Some(metrics::serve(addr).context("starting the metrics listener")?),
        None => None,
    };
    let limits = state.config.http.clone();
    let per_worker = connections_per_worker(limits.max_connections, workers, open_files_limit());
    let server = HttpServer::new(move || {
        App::new()
            .app_data(state.clone())
            .app_data(web::Data::new(WorkerState::new(
                tls.clone(),
                &state.federation,
                &state.preview,
            )))
            .wrap(middleware::from_fn(http::cors))
            .wrap(middleware::from_fn(http::doctor::echo))
            .wrap(middleware::from_fn(http::access_log))
            .configure(http::configure)
            .default_service(web::to(http::unrecognized))
    })
    .workers(workers)
    // Without it the last partial segment of a response waits for the client's delayed ACK
    // (Nagle): 40 ms per download of a file blob on Linux.
    .tcp_nodelay(true)
    .client_request_timeout(Duration::from_secs(limits.request_head_timeout_secs))
    .keep_alive(match limits.keep_alive_secs {
        0 => actix_web::http::KeepAlive::Disabled,
        secs => actix_web::http::KeepAlive::Timeout(Duration::from_secs(secs)),
    })
    .max_connections(per_worker)
    .max_connection_rate(limits.max_tls_handshakes)
    .shutdown_timeout(10)
    .disable_signals();
    let server = match &cert {
        Some(cert) => server.listen_rustls_0_23(listener, cert.server_config()?)?,
        None => server.listen(listener)?,
    }
    .run();
    Ok(Running {
        server,
        metrics,
        store,
        media,
        dev_token,
        tls: cert,
        backup_socket,
    })
}

/// File descriptors a connection may need at once: its socket and an upload's temp file or a
/// download's blob file.
const FDS_PER_CONNECTION: u64 = 2;
/// File descriptors kept for everything else: sled's files, the listeners, logs, the thumbnailer,
/// outgoing federation connections.
const FDS_RESERVED: u64 = 256;

/// The soft open-files limit (`ulimit -n`, systemd's `LimitNOFILE`), if it can be read.
fn open_files_limit() -> Option<u64> {
    nix::sys::resource::getrlimit(nix::sys::resource::Resource::RLIMIT_NOFILE)
        .ok()
        .map(|(soft, _hard)| soft)
}

/// actix counts connections per worker: share `max_connections` among the workers, within what
/// the open-files limit leaves, so accepting a connection never takes the last descriptor an
/// upload or the database needs (`EMFILE` would fail requests of clients that did nothing wrong).
fn connections_per_worker(max_connections: usize, workers: usize, nofile: Option<u64>) -> usize {
    let mut total = max_connections;
    if let Some(nofile) = nofile {
        let budget = nofile.saturating_sub(FDS_RESERVED) / FDS_PER_CONNECTION;
        let budget = usize::try_from(budget).unwrap_or(usize::MAX).max(workers);
        if budget < total {
            tracing::warn!(
                max_connections,
                open_files_limit = nofile,
                serving = budget,
                "the open-files limit allows fewer connections than http.max_connections; \
                 raise LimitNOFILE to serve more"
            );
            total = budget;
        }
    }
    total.div_ceil(workers.max(1)).max(1)
}

/// Asks the homeserver at `homeserver_url` whether it publishes the key we sign with.
pub async fn verify_signing_key(
    identity: &federation::identity::Identity,
    homeserver_url: &str,
) -> anyhow::Result<federation::identity::Published> {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let tls = Arc::new(net::tls::client_config(true, None)?);
    federation::identity::verify_published(identity, homeserver_url, &state::homeserver_client(tls))
        .await
}

/// The token for `@admin` when no other auth is configured: made once, kept in the data dir.
fn dev_token(data_dir: &Path) -> anyhow::Result<String> {
    let path = data_dir.join("dev-token");
    if let Ok(existing) = std::fs::read_to_string(&path) {
        let existing = existing.trim();
        if !existing.is_empty() {
            return Ok(existing.to_owned());
        }
    }
    let token = format!("mxm_{}", mxmedia_proto::ids::MediaId::generate().as_str());
    let tmp = data_dir.join("dev-token.tmp");
    std::fs::write(&tmp, &token)?;
    restrict_permissions(&tmp)?;
    std::fs::rename(&tmp, &path)?;
    Ok(token)
}

fn restrict_permissions(path: &Path) -> std::io::Result<()> {
    use std::os::unix::fs::PermissionsExt as _;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))
}

/// Every minute: removes expired `/create` reservations, URL preview images and remote servers'
/// keys, and writes remote media access times.
/// A minute after start and then hourly: applies the remote media retention, if configured.
fn spawn_expiry(state: web::Data<AppState>) {
    actix_web::rt::spawn(async move {
        let mut tick = tokio::time::interval(Duration::from_secs(60));
        for minute in 0u64.. {
            tick.tick().await;
            let swept = if minute % 60 == 1 {
                state.media.sweep_remote(clock::now_ms()).await.map(Some)
            } else {
                state.media.record_access().await.map(|()| None)
            };
            match swept {
                Ok(Some(s)) if s.removed > 0 => tracing::info!(
                    removed = s.removed,
                    removed_bytes = s.removed_bytes,
                    kept_bytes = s.kept_bytes,
                    "removed remote media beyond the configured retention"
                ),
                Ok(_) => {}
                Err(e) => tracing::warn!(error = %e, "remote media retention failed"),
            }
            if let Ok(size) = state.media.store().blocking(|s| s.size_on_disk()).await {
                ::metrics::gauge!("mxmedia_store_db_bytes").set(size.to_f64().unwrap_or(f64::MAX));
            }
            // Also while previews are off: images stored while they were on still expire.
            let preview = &state.config.preview;
            let created_before = clock::now_ms().saturating_sub(preview.image_ttl_ms());
            let max_bytes = preview.image_cache_max_size.as_u64();
            match state
                .media
                .expire_preview_images(created_before, max_bytes)
                .await
            {
                Ok(s) if s.removed > 0 => tracing::info!(
                    removed = s.removed,
                    removed_bytes = s.removed_bytes,
                    kept_bytes = s.kept_bytes,
                    "removed URL preview images past their lifetime or the size cap"
                ),
                Ok(_) => {}
                Err(e) => tracing::warn!(error = %e, "expiring URL preview images failed"),
            }
            match state
                .key_ring
                .sweep(clock::now_ms(), Default::default())
                .await
            {
                Ok(s) if s.expired + s.evicted > 0 => tracing::info!(
                    expired = s.expired,
                    evicted = s.evicted,
                    kept = s.kept,
                    kept_bytes = s.kept_bytes,
                    "removed remote servers' kept keys past their validity or the bounds"
                ),
                Ok(_) => {}
                Err(e) => tracing::warn!(error = %e, "sweeping remote servers' keys failed"),
            }
            match state.media.expire_pending().await {
                Ok(0) => {}
                Ok(n) => tracing::info!(expired = n, "expired unused async upload ids"),
                Err(e) => tracing::warn!(error = %e, "expiring async upload ids failed"),
            }
        }
    });
}
