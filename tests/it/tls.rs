//! HTTPS on the main listener: HTTP/2 and HTTP/1.1 by ALPN, and certificates replaced on disk
//! and reloaded (through the handle, and by SIGHUP to the real binary) without a restart.

use std::{
    io::{Read as _, Write as _},
    net::TcpStream,
    path::{Path, PathBuf},
    sync::Arc,
    time::{Duration, Instant},
};

use rustls::{
    ClientConfig, ClientConnection, RootCertStore, StreamOwned,
    pki_types::{CertificateDer, ServerName},
};

use crate::common::TestServer;

/// A throwaway CA that signs `localhost` certificates, each with a fresh key.
struct Pki {
    issuer: rcgen::Issuer<'static, rcgen::KeyPair>,
    roots: RootCertStore,
}

/// A leaf certificate as PEM files would hold it, and as the server sends it.
struct Leaf {
    cert_pem: String,
    key_pem: String,
    der: Vec<u8>,
}

impl Pki {
    fn new() -> Self {
        let mut params = rcgen::CertificateParams::new(Vec::new()).unwrap();
        params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, "mxmedia test CA");
        let key = rcgen::KeyPair::generate().unwrap();
        let ca = params.self_signed(&key).unwrap();
        let mut roots = RootCertStore::empty();
        roots.add(ca.der().clone()).unwrap();
        Self {
            issuer: rcgen::Issuer::new(params, key),
            roots,
        }
    }

    fn leaf(&self) -> Leaf {
        let names = vec!["localhost".to_owned(), "127.0.0.1".to_owned()];
        let params = rcgen::CertificateParams::new(names).unwrap();
        let key = rcgen::KeyPair::generate().unwrap();
        let cert = params.signed_by(&key, &self.issuer).unwrap();
        Leaf {
            cert_pem: cert.pem(),
            key_pem: key.serialize_pem(),
            der: cert.der().to_vec(),
        }
    }

    fn client_config(&self, alpn: &[&[u8]]) -> ClientConfig {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let mut config = ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_root_certificates(self.roots.clone())
            .with_no_client_auth();
        config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
        config
    }
}

fn write_pair(dir: &Path, leaf: &Leaf) -> (PathBuf, PathBuf) {
    let (cert, key) = (dir.join("cert.pem"), dir.join("key.pem"));
    std::fs::write(&cert, &leaf.cert_pem).unwrap();
    std::fs::write(&key, &leaf.key_pem).unwrap();
    (cert, key)
}

/// A finished TLS handshake with the server at `addr`, checked against the test CA.
fn connect(pki: &Pki, addr: &str) -> StreamOwned<ClientConnection, TcpStream> {
    let config = Arc::new(pki.client_config(&[b"http/1.1"]));
    let name = ServerName::try_from("localhost").unwrap();
    let conn = ClientConnection::new(config, name).unwrap();
    let mut tls = StreamOwned::new(conn, TcpStream::connect(addr).unwrap());
    tls.sock
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    while tls.conn.is_handshaking() {
        tls.conn.complete_io(&mut tls.sock).unwrap();
    }
    tls
}

fn peer_cert(tls: &StreamOwned<ClientConnection, TcpStream>) -> Vec<u8> {
    let chain: &[CertificateDer<'_>] = tls.conn.peer_certificates().unwrap();
    chain[0].to_vec()
}

/// `GET /_mxmedia/health` over HTTP/1.1 on an established connection; returns the status line.
fn health(mut tls: StreamOwned<ClientConnection, TcpStream>) -> String {
    tls.write_all(b"GET /_mxmedia/health HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")
        .unwrap();
    let mut response = Vec::new();
    // The server may close without close_notify after `Connection: close`; what came is enough.
    let _ = tls.read_to_end(&mut response);
    let response = String::from_utf8_lossy(&response).into_owned();
    assert!(response.contains("\"status\":\"ok\""), "{response}");
    response.lines().next().unwrap_or_default().to_owned()
}

/// The certificate a new connection to `addr` gets, after a health check on it.
async fn fresh_cert(pki: &Arc<Pki>, addr: &str) -> Vec<u8> {
    let (pki, addr) = (pki.clone(), addr.to_owned());
    tokio::task::spawn_blocking(move || {
        let tls = connect(&pki, &addr);
        let cert = peer_cert(&tls);
        assert_eq!(health(tls), "HTTP/1.1 200 OK");
        cert
    })
    .await
    .unwrap()
}

async fn https_server(pki: &Pki, certs: &Path) -> (TestServer, Leaf) {
    let leaf = pki.leaf();
    let (cert, key) = write_pair(certs, &leaf);
    let server = TestServer::start_with(|c| {
        c.tls.cert = Some(cert);
        c.tls.key = Some(key);
    })
    .await;
    (server, leaf)
}

fn addr(server: &TestServer) -> String {
    server.base.trim_start_matches("https://").to_owned()
}

/// With a certificate configured the listener speaks HTTPS: HTTP/2 when the client offers it,
/// HTTP/1.1 otherwise.
#[actix_web::test]
async fn https_serves_h2_and_http1() {
    let pki = Arc::new(Pki::new());
    let certs = tempfile::tempdir().unwrap();
    let (server, leaf) = https_server(&pki, certs.path()).await;
    assert!(server.base.starts_with("https://"));

    let config = pki.client_config(&[b"h2", b"http/1.1"]);
    let client = awc::Client::builder()
        .connector(awc::Connector::new().rustls_0_23(Arc::new(config)))
        .finish();
    let mut res = client
        .get(server.url("/_mxmedia/health"))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    assert_eq!(res.version(), actix_web::http::Version::HTTP_2);
    let body: serde_json::Value = res.json().await.unwrap();
    assert_eq!(body["status"], "ok");

    assert_eq!(fresh_cert(&pki, &addr(&server)).await, leaf.der);
}

/// A reload serves the files now on disk to new connections; a connection made before keeps
/// working; a broken file on reload changes nothing.
#[actix_web::test]
async fn reload_replaces_the_certificate() {
    let pki = Arc::new(Pki::new());
    let certs = tempfile::tempdir().unwrap();
    let (server, first) = https_server(&pki, certs.path()).await;
    let resolver = server.tls.clone().unwrap();
    let addr = addr(&server);
    assert_eq!(fresh_cert(&pki, &addr).await, first.der);
    let early = {
        let (pki, addr) = (pki.clone(), addr.clone());
        tokio::task::spawn_blocking(move || connect(&pki, &addr))
            .await
            .unwrap()
    };

    let second = pki.leaf();
    write_pair(certs.path(), &second);
    resolver.reload().unwrap();
    assert_eq!(fresh_cert(&pki, &addr).await, second.der);
    assert_eq!(peer_cert(&early), first.der);
    let status = tokio::task::spawn_blocking(move || health(early))
        .await
        .unwrap();
    assert_eq!(
        status, "HTTP/1.1 200 OK",
        "made before the reload, still served"
    );

    // A half-written certificate, then a key that belongs to another certificate.
    std::fs::write(certs.path().join("cert.pem"), &second.cert_pem[..100]).unwrap();
    assert!(resolver.reload().is_err());
    assert_eq!(fresh_cert(&pki, &addr).await, second.der);
    let third = pki.leaf();
    std::fs::write(certs.path().join("cert.pem"), &third.cert_pem).unwrap();
    let err = resolver.reload().unwrap_err().to_string();
    assert!(err.contains("cert.pem") && err.contains("key.pem"), "{err}");
    assert_eq!(fresh_cert(&pki, &addr).await, second.der);
}

/// The binary reloads its certificate on SIGHUP and keeps serving the old one when the new
/// files are broken; SIGHUP never stops it.
#[actix_web::test]
async fn sighup_reloads_the_certificate() {
    use crate::process::{BIN, free_port, nix_kill};
    let pki = Arc::new(Pki::new());
    let certs = tempfile::tempdir().unwrap();
    let data = tempfile::tempdir().unwrap();
    let first = pki.leaf();
    let (cert, key) = write_pair(certs.path(), &first);
    let port = free_port();
    let addr = format!("127.0.0.1:{port}");
    let mut child = std::process::Command::new(BIN)
        .env_clear()
        .env("MXMEDIA_DATA_DIR", data.path())
        .env("MXMEDIA_LISTEN", &addr)
        .env("MXMEDIA_TLS__CERT", &cert)
        .env("MXMEDIA_TLS__KEY", &key)
        .env("MXMEDIA_LOG", "warn")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();

    let served = |pki: Arc<Pki>, addr: String| async move {
        tokio::task::spawn_blocking(move || {
            TcpStream::connect(&addr).ok()?;
            let tls = connect(&pki, &addr);
            let cert = peer_cert(&tls);
            (health(tls) == "HTTP/1.1 200 OK").then_some(cert)
        })
        .await
        .ok()
        .flatten()
    };
    let wait_for = |want: Vec<u8>| {
        let (pki, addr) = (pki.clone(), addr.clone());
        async move {
            let deadline = Instant::now() + Duration::from_secs(20);
            let mut last = None;
            while Instant::now() < deadline {
                last = served(pki.clone(), addr.clone()).await;
                if last.as_ref() == Some(&want) {
                    return;
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            panic!("never served the expected certificate (last: {last:?})");
        }
    };
    wait_for(first.der.clone()).await;

    let second = pki.leaf();
    write_pair(certs.path(), &second);
    nix_kill(&child, "HUP");
    wait_for(second.der.clone()).await;

    std::fs::write(&cert, "-----BEGIN CERTIFICATE-----\nbroken\n").unwrap();
    nix_kill(&child, "HUP");
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(child.try_wait().unwrap().is_none(), "still running");
    assert_eq!(served(pki.clone(), addr.clone()).await, Some(second.der));

    nix_kill(&child, "TERM");
    assert!(child.wait().unwrap().success());
}
