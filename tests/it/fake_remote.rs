//! A remote homeserver on loopback, over real HTTPS: its own certificate (from a throwaway CA
//! that mxmedia is told to trust), its own ed25519 key served at `/_matrix/key/v2/server`, and
//! request signing as that server. Counts what it is asked.

use std::{
    collections::HashMap,
    net::TcpListener,
    path::PathBuf,
    sync::{
        Mutex,
        atomic::{AtomicI64, Ordering},
    },
};

use actix_web::{App, HttpRequest, HttpResponse, HttpServer, web};
use mxmedia_proto::{
    RequestParts, ServerName, SigningKey, build_server_keys_response, sign_request,
};
use rustls::pki_types::{CertificateDer, PrivateKeyDer};

/// A CA and one server certificate for every name the tests use.
pub struct Pki {
    _dir: tempfile::TempDir,
    pub ca_file: PathBuf,
    chain: Vec<CertificateDer<'static>>,
    key_der: Vec<u8>,
    chain_pem: String,
    key_pem: String,
}

pub const TEST_NAMES: &[&str] = &[
    "127.0.0.1",
    "remote.test",
    "wk.test",
    "delegated.test",
    "srv.test",
    "notary.test",
];

impl Pki {
    pub fn new() -> Self {
        let _ = rustls::crypto::ring::default_provider().install_default();
        let mut ca_params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
        ca_params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        ca_params
            .distinguished_name
            .push(rcgen::DnType::CommonName, "mxmedia test CA");
        let ca =
            rcgen::CertifiedIssuer::self_signed(ca_params, rcgen::KeyPair::generate().unwrap())
                .unwrap();
        let names: Vec<String> = TEST_NAMES.iter().map(|n| (*n).to_owned()).collect();
        let leaf_key = rcgen::KeyPair::generate().unwrap();
        let leaf = rcgen::CertificateParams::new(names)
            .unwrap()
            .signed_by(&leaf_key, &ca)
            .unwrap();
        let dir = tempfile::tempdir().unwrap();
        let ca_file = dir.path().join("ca.pem");
        std::fs::write(&ca_file, ca.pem()).unwrap();
        Self {
            _dir: dir,
            ca_file,
            chain: vec![leaf.der().clone(), ca.der().clone()],
            key_der: leaf_key.serialize_der(),
            chain_pem: format!("{}{}", leaf.pem(), ca.pem()),
            key_pem: leaf_key.serialize_pem(),
        }
    }

    /// Writes the certificate chain and key as PEM files in `dir`, for mxmedia's own HTTPS
    /// listener (`tls.cert`, `tls.key`); returns their paths.
    pub fn write_server_pem(&self, dir: &std::path::Path) -> (PathBuf, PathBuf) {
        let (cert, key) = (dir.join("server.crt"), dir.join("server.key"));
        std::fs::write(&cert, &self.chain_pem).unwrap();
        std::fs::write(&key, &self.key_pem).unwrap();
        (cert, key)
    }

    fn server_config(&self) -> rustls::ServerConfig {
        let key = PrivateKeyDer::try_from(self.key_der.clone()).unwrap();
        let mut config = rustls::ServerConfig::builder()
            .with_no_client_auth()
            .with_single_cert(self.chain.clone(), key)
            .unwrap();
        config.alpn_protocols = vec![b"http/1.1".to_vec()];
        config
    }
}

pub struct RemoteState {
    pub name: Mutex<Option<ServerName>>,
    pub key: Mutex<SigningKey>,
    /// `valid_until_ts` of the published keys, relative to now (ms). Negative: already expired.
    pub valid_for_ms: AtomicI64,
    /// `m.server` answered at `/.well-known/matrix/server`, if any.
    pub well_known: Mutex<Option<String>>,
    /// Notary answers: server name -> key response to vouch for (signed by this server too).
    pub vouch_for: Mutex<HashMap<String, serde_json::Value>>,
    pub hits: Mutex<HashMap<String, usize>>,
    pub last_host: Mutex<Option<String>>,
}

pub struct FakeRemote {
    pub port: u16,
    pub state: web::Data<RemoteState>,
    handle: actix_web::dev::ServerHandle,
}

impl FakeRemote {
    /// Starts on `bind` (e.g. `127.0.0.1:0`); its server name is `name`, or `ip:port` if `None`.
    pub fn start(pki: &Pki, bind: &str, name: Option<&str>) -> Self {
        Self::start_with(pki, bind, name, |_| {})
    }

    /// Like `start`, with extra routes.
    pub fn start_with(
        pki: &Pki,
        bind: &str,
        name: Option<&str>,
        routes: impl Fn(&mut web::ServiceConfig) + Clone + Send + 'static,
    ) -> Self {
        let listener = TcpListener::bind(bind).unwrap();
        let addr = listener.local_addr().unwrap();
        let name: ServerName = name
            .map_or_else(|| addr.to_string(), str::to_owned)
            .parse()
            .unwrap();
        let state = web::Data::new(RemoteState {
            name: Mutex::new(Some(name)),
            key: Mutex::new(SigningKey::generate("remote1").unwrap()),
            valid_for_ms: AtomicI64::new(24 * 3600 * 1000),
            well_known: Mutex::new(None),
            vouch_for: Mutex::new(HashMap::new()),
            hits: Mutex::new(HashMap::new()),
            last_host: Mutex::new(None),
        });
        let data = state.clone();
        let server = HttpServer::new(move || {
            App::new()
                .app_data(data.clone())
                .wrap_fn(|req, srv| {
                    use actix_web::dev::Service as _;
                    if let Some(state) = req.app_data::<web::Data<RemoteState>>() {
                        *state
                            .hits
                            .lock()
                            .unwrap()
                            .entry(req.path().to_owned())
                            .or_default() += 1;
                        *state.last_host.lock().unwrap() = req
                            .headers()
                            .get("host")
                            .and_then(|h| h.to_str().ok())
                            .map(str::to_owned);
                    }
                    srv.call(req)
                })
                .route("/_matrix/key/v2/server", web::get().to(server_keys))
                .route(
                    "/_matrix/key/v2/query/{server}",
                    web::get().to(notary_query),
                )
                .route("/.well-known/matrix/server", web::get().to(well_known))
                .configure(routes.clone())
        })
        .workers(1)
        .shutdown_timeout(1)
        .disable_signals()
        .listen_rustls_0_23(listener, pki.server_config())
        .unwrap()
        .run();
        let handle = server.handle();
        actix_web::rt::spawn(server);
        Self {
            port: addr.port(),
            state,
            handle,
        }
    }

    pub fn name(&self) -> ServerName {
        self.state.name.lock().unwrap().clone().unwrap()
    }

    pub fn hits(&self, path: &str) -> usize {
        self.state
            .hits
            .lock()
            .unwrap()
            .get(path)
            .copied()
            .unwrap_or(0)
    }

    /// The `Authorization` header for a request from this server to `destination`.
    pub fn sign(&self, method: &str, uri: &str, destination: &str) -> String {
        let origin = self.name();
        let destination: ServerName = destination.parse().unwrap();
        let request = RequestParts {
            method,
            uri,
            origin: &origin,
            destination: &destination,
            content: None,
        };
        sign_request(&request, &self.state.key.lock().unwrap())
            .unwrap()
            .to_string()
    }

    /// This server's current key response, as it publishes it.
    pub fn key_response(&self) -> serde_json::Value {
        keys_json(&self.state)
    }

    pub async fn stop(&self) {
        self.handle.stop(false).await;
    }
}

fn now_ms() -> i64 {
    i64::try_from(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_millis(),
    )
    .unwrap()
}

fn keys_json(state: &RemoteState) -> serde_json::Value {
    let name = state.name.lock().unwrap().clone().unwrap();
    let until = now_ms() + state.valid_for_ms.load(Ordering::SeqCst);
    let key = state.key.lock().unwrap().clone();
    build_server_keys_response(
        &name,
        &[key],
        Default::default(),
        u64::try_from(until.max(0)).unwrap(),
    )
    .unwrap()
}

async fn server_keys(state: web::Data<RemoteState>) -> HttpResponse {
    HttpResponse::Ok().json(keys_json(&state))
}

async fn well_known(state: web::Data<RemoteState>) -> HttpResponse {
    match state.well_known.lock().unwrap().clone() {
        Some(server) => HttpResponse::Ok().json(serde_json::json!({ "m.server": server })),
        None => HttpResponse::NotFound().finish(),
    }
}

/// Vouches for another server's keys by adding this server's signature.
async fn notary_query(
    state: web::Data<RemoteState>,
    server: web::Path<String>,
    _req: HttpRequest,
) -> HttpResponse {
    let Some(entry) = state
        .vouch_for
        .lock()
        .unwrap()
        .get(server.as_str())
        .cloned()
    else {
        return HttpResponse::Ok().json(serde_json::json!({ "server_keys": [] }));
    };
    let name = state.name.lock().unwrap().clone().unwrap();
    let key = state.key.lock().unwrap().clone();
    let entry = mxmedia_proto::sign_json(&name, &key, &entry).unwrap();
    HttpResponse::Ok().json(serde_json::json!({ "server_keys": [entry] }))
}
