//! Doctor check of the TLS certificates of the public names (the client URL and the
//! federation address): valid for the name as remote servers check them, and not about to
//! expire.

use std::{
    net::{SocketAddr, TcpStream},
    sync::Arc,
    time::{Duration, SystemTime},
};

use super::{Check, Doctor};

/// A certificate expiring sooner than this is a warning.
const CERT_WARN: Duration = Duration::from_secs(14 * 24 * 3600);
const TLS_TIMEOUT: Duration = Duration::from_secs(10);

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
