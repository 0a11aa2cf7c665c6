//! Doctor checks of this host: the data dir, free space, the store or the running server, the
//! homeserver (`whoami`, its clock), and the TLS certificates of the public names.

use std::{
    io::{BufRead as _, BufReader, Write as _},
    net::{SocketAddr, TcpStream},
    os::unix::{fs::MetadataExt as _, net::UnixStream},
    sync::Arc,
    time::{Duration, SystemTime},
};

use super::{Check, Doctor, MAX_PROBE_BODY, nonce::NonceFile};
use crate::{backup::SOCKET_NAME, clock::now_ms, store::Store};

/// Clock difference to the homeserver worth a warning, and one that breaks things: key
/// validity and token expiry are compared across servers.
const SKEW_WARN: Duration = Duration::from_secs(30);
const SKEW_FAIL: Duration = Duration::from_secs(300);
/// A certificate expiring sooner than this is a warning.
const CERT_WARN: Duration = Duration::from_secs(14 * 24 * 3600);
const TLS_TIMEOUT: Duration = Duration::from_secs(10);

/// The data dir exists and takes new files; the nonce is written there.
pub fn data_dir(doctor: &mut Doctor<'_>, nonce_file: &NonceFile) {
    let dir = &doctor.config.data_dir;
    let title = "data dir writable";
    match nonce_file.create(now_ms()) {
        Ok(nonce) => {
            doctor.nonce = Some(nonce);
            doctor.push(Check::pass(
                "local.data_dir",
                title,
                format!("{} takes new files", dir.display()),
            ));
        }
        Err(e) => doctor.push(Check::fail(
            "local.data_dir",
            title,
            format!("cannot write in {}: {e}", dir.display()),
            format!(
                "run doctor as the service user (`sudo -u mxmedia mxmedia doctor`), and give \
                 that user the directory MXMEDIA_DATA_DIR={} names",
                dir.display()
            ),
        )),
    }
}

/// Free space against `store.min_free_space`, the floor below which uploads are refused.
pub fn free_space(doctor: &mut Doctor<'_>) {
    let dir = &doctor.config.data_dir;
    let title = "free space";
    let stat = match nix::sys::statvfs::statvfs(dir) {
        Ok(stat) => stat,
        Err(e) => {
            doctor.push(Check::fail(
                "local.free_space",
                title,
                format!("cannot read the free space of {}: {e}", dir.display()),
                "check that MXMEDIA_DATA_DIR names a mounted directory",
            ));
            return;
        }
    };
    let frsize = stat.fragment_size();
    let free = stat.blocks_available().saturating_mul(frsize);
    let total = stat.blocks().saturating_mul(frsize);
    let floor = doctor.config.store.min_free_space.bytes(total);
    let show = |b: u64| bytesize::ByteSize::b(b).display().iec().to_string();
    let detail = format!(
        "{} free of {}, floor {} (store.min_free_space)",
        show(free),
        show(total),
        show(floor)
    );
    if free > floor {
        doctor.push(Check::pass("local.free_space", title, detail));
    } else {
        doctor.push(Check::fail(
            "local.free_space",
            title,
            format!("{detail}: uploads and remote fetches are refused (507)"),
            "free disk space, grow the file system, or lower MXMEDIA_STORE__MIN_FREE_SPACE",
        ));
    }
}

/// The running server answers on its socket, or, when it is stopped, the store opens.
pub fn store(doctor: &mut Doctor<'_>) {
    let data_dir = &doctor.config.data_dir;
    let title = "store";
    let socket = data_dir.join(SOCKET_NAME);
    match ask_socket(&socket) {
        Ok(()) => {
            doctor.push(Check::pass(
                "local.store",
                title,
                format!("the running server answers on {}", socket.display()),
            ));
            return;
        }
        Err(e) if socket.exists() && e.kind() == std::io::ErrorKind::PermissionDenied => {
            doctor.push(Check::fail(
                "local.store",
                title,
                format!("{} refuses this user: {e}", socket.display()),
                "run doctor as the service user (`sudo -u mxmedia mxmedia doctor`)",
            ));
            return;
        }
        Err(_) => {}
    }
    let db = data_dir.join("db");
    let Ok(meta) = std::fs::metadata(&db) else {
        doctor.push(Check::fail(
            "local.store",
            title,
            format!(
                "no server answers on {} and {} has no database",
                socket.display(),
                data_dir.display()
            ),
            "start the server (`systemctl start mxmedia`) with the same MXMEDIA_DATA_DIR",
        ));
        return;
    };
    // Opening it as another user would leave files the service user cannot replace.
    if meta.uid() != nix::unistd::geteuid().as_raw() {
        doctor.push(Check::fail(
            "local.store",
            title,
            format!(
                "no server answers on {} and the database belongs to uid {}",
                socket.display(),
                meta.uid()
            ),
            "run doctor as the service user (`sudo -u mxmedia mxmedia doctor`), or start the \
             server",
        ));
        return;
    }
    match Store::open(doctor.config) {
        Ok(store) => {
            drop(store);
            doctor.push(Check::pass(
                "local.store",
                title,
                format!(
                    "the store in {} opens (the server is not running)",
                    data_dir.display()
                ),
            ));
        }
        Err(e) => doctor.push(Check::fail(
            "local.store",
            title,
            format!("the store in {} does not open: {e}", data_dir.display()),
            "read the error above; restore the data dir from `mxmedia backup` if it is damaged",
        )),
    }
}

/// Asks the backup socket something it does not offer: a live server answers with the
/// protocol it speaks, which proves it holds the store, and does nothing else.
fn ask_socket(path: &std::path::Path) -> std::io::Result<()> {
    let mut stream = UnixStream::connect(path)?;
    stream.set_read_timeout(Some(Duration::from_secs(5)))?;
    stream.write_all(b"doctor\n")?;
    let mut line = String::new();
    BufReader::new(std::io::Read::take(&stream, 1024)).read_line(&mut line)?;
    if line.contains("backup 1") {
        Ok(())
    } else {
        Err(std::io::Error::other(format!(
            "unexpected answer {:?}",
            line.trim()
        )))
    }
}

/// The homeserver's `whoami` answers, and its clock agrees with ours.
pub async fn homeserver(doctor: &mut Doctor<'_>) {
    let title = "homeserver whoami";
    let Some(url) = doctor.config.auth.homeserver_url.clone() else {
        doctor.push(Check::skip(
            "local.homeserver",
            title,
            "no auth.homeserver_url: tokens are checked against auth.static_tokens only",
        ));
        doctor.push(Check::skip(
            "local.clock",
            "clock",
            "no homeserver to compare with",
        ));
        return;
    };
    let url = format!(
        "{}/_matrix/client/v3/account/whoami",
        url.trim_end_matches('/')
    );
    let mut request = doctor.homeserver.get(&url);
    if let Some(token) = &doctor.options.token {
        request = request.bearer_auth(token);
    }
    let sent_at = SystemTime::now();
    let mut response = match request.send().await {
        Ok(response) => response,
        Err(e) => {
            doctor.push(Check::fail(
                "local.homeserver",
                title,
                format!("{url}: {e}"),
                "set MXMEDIA_AUTH__HOMESERVER_URL to the homeserver's client listener as seen \
                 from this host (e.g. http://127.0.0.1:8008)",
            ));
            doctor.push(Check::skip(
                "local.clock",
                "clock",
                "the homeserver did not answer",
            ));
            return;
        }
    };
    let status = response.status().as_u16();
    let date = response
        .headers()
        .get("date")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<awc::http::header::HttpDate>().ok())
        .map(SystemTime::from);
    let body = response
        .body()
        .limit(MAX_PROBE_BODY)
        .await
        .unwrap_or_default();
    let json: Option<serde_json::Value> = serde_json::from_slice(&body).ok();
    let field = |name: &str| {
        json.as_ref()
            .and_then(|j| j.get(name))
            .and_then(serde_json::Value::as_str)
            .map(str::to_owned)
    };
    match (status, field("user_id"), field("errcode")) {
        (200, Some(user), _) => doctor.push(Check::pass(
            "local.homeserver",
            title,
            format!("{url} answers: the token is {user}'s"),
        )),
        (401, _, Some(code)) if doctor.options.token.is_none() => doctor.push(Check::pass(
            "local.homeserver",
            title,
            format!("{url} answers ({code} without a token)"),
        )),
        (401, _, Some(code)) => doctor.push(Check::fail(
            "local.homeserver",
            title,
            format!("{url} refuses the --token ({code})"),
            "pass a current access token of a user on this homeserver",
        )),
        _ => doctor.push(Check::fail(
            "local.homeserver",
            title,
            format!("{url} answered HTTP {status}, not a Matrix whoami"),
            "MXMEDIA_AUTH__HOMESERVER_URL must name the homeserver's client API (the URL \
             under which /_matrix/client/v3 lives)",
        )),
    }
    let Some(date) = date else {
        doctor.push(Check::skip(
            "local.clock",
            "clock",
            "the homeserver sent no Date header",
        ));
        return;
    };
    // HTTP dates have a resolution of one second.
    let skew = match date.duration_since(sent_at) {
        Ok(ahead) => ahead,
        Err(behind) => behind.duration().saturating_sub(Duration::from_secs(1)),
    };
    let detail = format!("{}s apart from the homeserver's Date", skew.as_secs());
    let fix = "synchronise the clocks of both hosts (systemd-timesyncd or chrony)";
    if skew >= SKEW_FAIL {
        doctor.push(Check::fail("local.clock", "clock", detail, fix));
    } else if skew >= SKEW_WARN {
        doctor.push(Check::warn("local.clock", "clock", detail, fix));
    } else {
        doctor.push(Check::pass("local.clock", "clock", detail));
    }
}

/// The certificates of the public client URL and the federation address: valid for the name
/// (checked as remote servers check them, with `federation.ca_file` added) and not about to
/// expire.
pub async fn certificates(doctor: &mut Doctor<'_>) {
    let mut targets: Vec<(String, u16, Option<Vec<SocketAddr>>)> = Vec::new();
    if let Some(base) = doctor
        .base_url
        .as_deref()
        .and_then(|b| url::Url::parse(b).ok())
        && base.scheme() == "https"
        && let (Some(host), Some(port)) = (base.host_str(), base.port_or_known_default())
    {
        targets.push((host.to_owned(), port, None));
    }
    if let Some(destination) = &doctor.destination {
        let target = (
            destination.host.clone(),
            destination.port,
            destination.addrs.clone(),
        );
        if !targets.iter().any(|t| t.0 == target.0 && t.1 == target.1) {
            targets.push(target);
        }
    }
    if targets.is_empty() {
        doctor.push(Check::skip(
            "local.tls",
            "TLS certificate",
            "no https public URL found",
        ));
        return;
    }
    let tls = match crate::net::tls::client_config(
        doctor.config.federation.verify_tls,
        doctor.config.federation.ca_file.as_deref(),
    ) {
        Ok(tls) => Arc::new(tls),
        Err(e) => {
            doctor.push(Check::fail(
                "local.tls",
                "TLS certificate",
                format!("cannot build the TLS client: {e:#}"),
                "check MXMEDIA_FEDERATION__CA_FILE",
            ));
            return;
        }
    };
    for (host, port, addrs) in targets {
        let title = format!("TLS certificate of {host}:{port}");
        let addrs = match addrs {
            Some(addrs) => addrs,
            None => match doctor.federation.lookup(&host, port).await {
                Ok(addrs) => addrs,
                Err(e) => {
                    doctor.push(Check::fail(
                        "local.tls",
                        title,
                        format!("cannot reach {host}:{port}: {e}"),
                        "check the DNS records of the public name",
                    ));
                    continue;
                }
            },
        };
        let tls = tls.clone();
        let name = host
            .trim_start_matches('[')
            .trim_end_matches(']')
            .to_owned();
        let outcome = tokio::task::spawn_blocking(move || peer_expiry(&tls, &name, &addrs))
            .await
            .unwrap_or_else(|e| Err(e.to_string()));
        let verified = doctor.config.federation.verify_tls;
        match outcome {
            Ok(not_after) => {
                let left = not_after
                    .duration_since(SystemTime::now())
                    .unwrap_or_default();
                let days = left.as_secs() / 86_400;
                let detail = format!(
                    "{}, expires {} (in {days} days)",
                    if verified {
                        "valid for the name"
                    } else {
                        "not verified (federation.verify_tls = false)"
                    },
                    awc::http::header::HttpDate::from(not_after)
                );
                if left < CERT_WARN {
                    doctor.push(Check::warn(
                        "local.tls",
                        title,
                        detail,
                        "renew the certificate (certbot renew, or check the ACME client), then \
                         reload the proxy",
                    ));
                } else {
                    doctor.push(Check::pass("local.tls", title, detail));
                }
            }
            Err(e) => doctor.push(Check::fail(
                "local.tls",
                title,
                e,
                "serve a certificate for this name from a public CA (the proxy's \
                 ssl_certificate with the full chain); remote servers refuse others",
            )),
        }
    }
}

/// Connects and completes a TLS handshake with `name`, returning the leaf's expiry.
fn peer_expiry(
    tls: &Arc<rustls::ClientConfig>,
    name: &str,
    addrs: &[SocketAddr],
) -> Result<SystemTime, String> {
    let server_name = rustls::pki_types::ServerName::try_from(name.to_owned())
        .map_err(|e| format!("{name} is not a TLS name: {e}"))?;
    let mut last = String::from("no address");
    for addr in addrs {
        let mut tcp = match TcpStream::connect_timeout(addr, TLS_TIMEOUT) {
            Ok(tcp) => tcp,
            Err(e) => {
                last = format!("connecting to {addr}: {e}");
                continue;
            }
        };
        tcp.set_read_timeout(Some(TLS_TIMEOUT))
            .and_then(|()| tcp.set_write_timeout(Some(TLS_TIMEOUT)))
            .map_err(|e| e.to_string())?;
        let mut conn = rustls::ClientConnection::new(tls.clone(), server_name.clone())
            .map_err(|e| e.to_string())?;
        while conn.is_handshaking() {
            conn.complete_io(&mut tcp)
                .map_err(|e| format!("TLS handshake with {addr}: {e}"))?;
        }
        let leaf = conn
            .peer_certificates()
            .and_then(|certs| certs.first())
            .ok_or_else(|| format!("{addr} sent no certificate"))?;
        let (_, cert) = x509_parser::parse_x509_certificate(leaf.as_ref())
            .map_err(|e| format!("the certificate of {addr} does not parse: {e}"))?;
        let secs = u64::try_from(cert.validity().not_after.timestamp()).unwrap_or(0);
        return Ok(SystemTime::UNIX_EPOCH + Duration::from_secs(secs));
    }
    Err(last)
}
