//! Media endpoints for a `FakeRemote`: the federation download and thumbnail endpoints, the
//! deprecated `/_matrix/media/v3` ones, and a "CDN" for `Location` answers. Every media
//! request must carry mxmedia's X-Matrix signature, checked against mxmedia's own public key
//! (read from its data dir); each file can be told to misbehave in one of the ways real
//! servers do.

use std::{
    collections::HashMap,
    path::Path,
    sync::{
        Arc, Mutex,
        atomic::{AtomicU16, AtomicU64, AtomicUsize, Ordering},
    },
    time::Duration,
};

use actix_web::{HttpRequest, HttpResponse, body::SizedStream, web};
use bytes::Bytes;
use futures_util::{StreamExt as _, stream};
use mxmedia_proto::{ServerName, SigningKey, VerifyKey, XMatrix, verify_request};
use serde_json::json;

/// How a file is answered on the federation endpoints.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mode {
    /// A CRLF multipart body exactly as Synapse writes it.
    Inline,
    /// What lenient parsing must accept: quoted boundary, a preamble, LF-only line ends and no
    /// closing `--`.
    Quirky,
    /// A `Location` part pointing at the CDN, which redirects once before answering.
    Location,
    /// The federation media API is unknown (404 `M_UNRECOGNIZED`); `/_matrix/media/v3` works.
    LegacyOnly,
    NotFound,
    ServerError,
    /// A body that never ends, without `Content-Length`.
    HugeChunked,
    /// A `Content-Length` far over any limit.
    HugeDeclared,
    /// The connection closes halfway through the declared length.
    Truncated,
    /// `multipart/mixed` in name only.
    Malformed,
    /// A preamble that never ends: no delimiter ever comes.
    EndlessPreamble,
    /// A first part whose header block never ends.
    EndlessHeaders,
    /// A metadata part that never ends.
    EndlessMetadata,
    /// A multipart answer whose media part declares its length, its bytes paced at the file's
    /// `rate`; the connection drops after `fail_after` bytes of media when that is set.
    Trickle,
}

#[derive(Clone)]
pub struct File {
    pub bytes: Vec<u8>,
    pub content_type: String,
    pub filename: Option<String>,
    /// What the thumbnail endpoints answer with; `None` answers 400 `M_UNKNOWN`.
    pub thumbnail: Option<(Vec<u8>, String)>,
    pub mode: Mode,
    /// Waited before answering.
    pub delay: Duration,
    /// When set, answers wait until the test opens it.
    pub gate: Option<Gate>,
    /// Bytes per second of media in `Mode::Trickle`.
    pub rate: u64,
    /// In `Mode::Trickle`, the media bytes sent before the connection drops.
    pub fail_after: Option<usize>,
}

/// Holds answers back until the test lets them go, and tells it when one is waiting: a fetch in
/// flight for as long as the test needs.
#[derive(Clone)]
pub struct Gate {
    waiting: std::sync::Arc<AtomicUsize>,
    open: tokio::sync::watch::Sender<bool>,
}

impl Gate {
    pub fn new() -> Self {
        Self {
            waiting: std::sync::Arc::new(AtomicUsize::new(0)),
            open: tokio::sync::watch::channel(false).0,
        }
    }

    /// Waits until `n` requests are held at the gate.
    pub async fn held(&self, n: usize) {
        let deadline = std::time::Instant::now() + Duration::from_secs(20);
        while self.waiting.load(Ordering::SeqCst) < n {
            assert!(
                std::time::Instant::now() < deadline,
                "no request reached the gate"
            );
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }

    pub fn open(&self) {
        self.open.send_replace(true);
    }

    async fn pass(&self) {
        self.waiting.fetch_add(1, Ordering::SeqCst);
        let mut open = self.open.subscribe();
        let _ = open.wait_for(|open| *open).await;
    }
}

impl File {
    pub fn new(bytes: Vec<u8>, content_type: &str) -> Self {
        Self {
            bytes,
            content_type: content_type.to_owned(),
            filename: None,
            thumbnail: None,
            mode: Mode::Inline,
            delay: Duration::ZERO,
            gate: None,
            rate: 2 << 20,
            fail_after: None,
        }
    }
}

#[derive(Default)]
pub struct MediaHost {
    /// The server allowed to ask (mxmedia) and its public key.
    origin: Mutex<Option<(ServerName, VerifyKey)>>,
    /// This remote's own name, which requests must be addressed to.
    name: Mutex<Option<ServerName>>,
    port: AtomicU16,
    files: Mutex<HashMap<String, File>>,
    pub bad_signatures: AtomicUsize,
    /// Bytes the endless modes have handed to the connection so far.
    pub endless_sent: Arc<AtomicU64>,
    /// Media bytes `Mode::Trickle` has handed to the connection so far.
    pub trickled: Arc<AtomicU64>,
}

impl MediaHost {
    pub fn new() -> web::Data<Self> {
        web::Data::new(Self::default())
    }

    /// The routes to pass to `FakeRemote::start_with`.
    pub fn routes(
        host: &web::Data<Self>,
    ) -> impl Fn(&mut web::ServiceConfig) + Clone + Send + use<> {
        let host = host.clone();
        move |cfg: &mut web::ServiceConfig| {
            cfg.app_data(host.clone())
                .route(
                    "/_matrix/federation/v1/media/download/{id}",
                    web::get().to(federation_download),
                )
                .route(
                    "/_matrix/federation/v1/media/thumbnail/{id}",
                    web::get().to(federation_thumbnail),
                )
                .route(
                    "/_matrix/media/v3/download/{server}/{id}",
                    web::get().to(legacy_download),
                )
                .route(
                    "/_matrix/media/v3/thumbnail/{server}/{id}",
                    web::get().to(legacy_thumbnail),
                )
                .route("/endless.json", web::get().to(endless_json))
                .route("/cdn/{id}", web::get().to(cdn_redirect))
                .route("/cdn-final/{id}", web::get().to(cdn));
        }
    }

    /// Tells the host who it is once its `FakeRemote` runs.
    pub fn serve_as(&self, name: ServerName, port: u16) {
        *self.name.lock().unwrap() = Some(name);
        self.port.store(port, Ordering::SeqCst);
    }

    /// Accepts requests signed by the mxmedia whose data dir is `data_dir`.
    pub fn trust(&self, origin: &str, data_dir: &Path) {
        let contents = std::fs::read_to_string(data_dir.join("signing.key")).unwrap();
        let key = SigningKey::from_key_file(&contents, None).unwrap();
        *self.origin.lock().unwrap() = Some((origin.parse().unwrap(), key.verify_key()));
    }

    pub fn put(&self, id: &str, file: File) {
        self.files.lock().unwrap().insert(id.to_owned(), file);
    }

    fn file(&self, id: &str) -> Option<File> {
        self.files.lock().unwrap().get(id).cloned()
    }

    /// Whether the request carries the trusted origin's valid X-Matrix signature.
    fn signed(&self, req: &HttpRequest) -> bool {
        let Some((origin, key)) = self.origin.lock().unwrap().clone() else {
            return false;
        };
        let Some(me) = self.name.lock().unwrap().clone() else {
            return false;
        };
        let uri = req.uri().path_and_query().map_or("", |pq| pq.as_str());
        let valid = req
            .headers()
            .get("authorization")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| XMatrix::parse(v).ok())
            .is_some_and(|auth| {
                auth.origin == origin
                    && auth.destination.as_ref() == Some(&me)
                    && verify_request(&auth, &me, req.method().as_str(), uri, None, &key).is_ok()
            });
        if !valid {
            self.bad_signatures.fetch_add(1, Ordering::SeqCst);
        }
        valid
    }

    /// The file for an authenticated request, after its delay; or the error to answer with.
    async fn lookup(&self, req: &HttpRequest, id: &str) -> Result<File, HttpResponse> {
        if !self.signed(req) {
            return Err(error(401, "M_UNAUTHORIZED"));
        }
        let file = self.file(id).ok_or_else(|| error(404, "M_NOT_FOUND"))?;
        tokio::time::sleep(file.delay).await;
        if let Some(gate) = &file.gate {
            gate.pass().await;
        }
        Ok(file)
    }
}

fn error(status: u16, errcode: &str) -> HttpResponse {
    HttpResponse::build(actix_web::http::StatusCode::from_u16(status).unwrap())
        .json(json!({ "errcode": errcode, "error": "fake remote says no" }))
}

async fn federation_download(
    req: HttpRequest,
    id: web::Path<String>,
    host: web::Data<MediaHost>,
) -> HttpResponse {
    let file = match host.lookup(&req, &id).await {
        Ok(file) => file,
        Err(response) => return response,
    };
    let port = host.port.load(Ordering::SeqCst);
    let media_headers = media_headers(&file.content_type, file.filename.as_deref());
    match file.mode {
        Mode::Inline => multipart(&media_headers, &file.bytes),
        Mode::Quirky => quirky_multipart(&media_headers, &file.bytes),
        Mode::Location => {
            let location = format!("Location: https://127.0.0.1:{port}/cdn/{id}\r\n");
            multipart(&location, b"")
        }
        Mode::LegacyOnly => error(404, "M_UNRECOGNIZED"),
        Mode::NotFound => error(404, "M_NOT_FOUND"),
        Mode::ServerError => error(500, "M_UNKNOWN"),
        Mode::HugeChunked => {
            let head = multipart_head(&media_headers);
            let body = stream::once(async move { Ok::<_, std::io::Error>(Bytes::from(head)) })
                .chain(stream::repeat_with(|| {
                    Ok(Bytes::from(vec![7u8; 64 * 1024]))
                }));
            HttpResponse::Ok()
                .content_type(format!("multipart/mixed; boundary={BOUNDARY}"))
                .streaming(body)
        }
        Mode::HugeDeclared => {
            let head = multipart_head(&media_headers);
            let body = stream::once(async move { Ok::<_, std::io::Error>(Bytes::from(head)) })
                .chain(stream::pending());
            HttpResponse::Ok()
                .content_type(format!("multipart/mixed; boundary={BOUNDARY}"))
                .body(SizedStream::new(10 << 30, body))
        }
        Mode::Truncated => {
            let mut full = multipart_head(&media_headers).into_bytes();
            full.extend_from_slice(&file.bytes);
            full.extend_from_slice(format!("\r\n--{BOUNDARY}--\r\n").as_bytes());
            let total = full.len() as u64;
            let half = Bytes::from(full[..full.len() / 2].to_vec());
            let body = stream::iter([Ok(half), Err(std::io::Error::other("connection dropped"))]);
            HttpResponse::Ok()
                .content_type(format!("multipart/mixed; boundary={BOUNDARY}"))
                .body(SizedStream::new(total, body))
        }
        Mode::Malformed => HttpResponse::Ok()
            .content_type(format!("multipart/mixed; boundary={BOUNDARY}"))
            .body("this is not a multipart body at all"),
        Mode::EndlessPreamble => endless(&host, String::new(), b'p'),
        Mode::EndlessHeaders => endless(&host, format!("--{BOUNDARY}\r\nX-Padding: "), b'h'),
        Mode::EndlessMetadata => endless(
            &host,
            format!("--{BOUNDARY}\r\nContent-Type: application/json\r\n\r\n{{\"pad\": \""),
            b'm',
        ),
        Mode::Trickle => trickle(&host, &media_headers, file),
    }
}

/// Media bytes paced at `file.rate`, 32 KiB at a time, in a multipart answer whose media part
/// declares its length; cut off after `file.fail_after` bytes when set.
fn trickle(host: &MediaHost, media_headers: &str, file: File) -> HttpResponse {
    const PIECE: usize = 32 * 1024;
    let sent = Arc::clone(&host.trickled);
    let head = multipart_head(&format!(
        "{media_headers}Content-Length: {}\r\n",
        file.bytes.len()
    ));
    let tail = format!("\r\n--{BOUNDARY}--\r\n");
    let pause = Duration::from_secs_f64(PIECE as f64 / file.rate as f64);
    let bytes = Bytes::from(file.bytes);
    let stop = file.fail_after.unwrap_or(usize::MAX).min(bytes.len());
    let pieces = stream::unfold(Some(0usize), move |at| {
        let (bytes, sent) = (bytes.clone(), Arc::clone(&sent));
        async move {
            let at = at?;
            if at >= stop {
                return (stop < bytes.len())
                    .then(|| (Err(std::io::Error::other("origin went away")), None));
            }
            if at > 0 {
                tokio::time::sleep(pause).await;
            }
            let to = (at + PIECE).min(stop);
            sent.fetch_add((to - at) as u64, Ordering::SeqCst);
            Some((Ok(bytes.slice(at..to)), Some(to)))
        }
    });
    let body = stream::once(async move { Ok(Bytes::from(head)) })
        .chain(pieces)
        .chain(stream::once(async move { Ok(Bytes::from(tail)) }));
    HttpResponse::Ok()
        .content_type(format!("multipart/mixed; boundary={BOUNDARY}"))
        .streaming(body)
}

/// A JSON answer that never ends, as a hostile server could send for `.well-known`, its keys
/// or a notary query.
async fn endless_json(host: web::Data<MediaHost>) -> HttpResponse {
    let mut response = endless(&host, "{\"server_name\": \"".into(), b'j');
    response.headers_mut().insert(
        actix_web::http::header::CONTENT_TYPE,
        actix_web::http::header::HeaderValue::from_static("application/json"),
    );
    response
}

/// `head`, then `filler` without end, 64 KiB at a time, counting what leaves.
fn endless(host: &MediaHost, head: String, filler: u8) -> HttpResponse {
    let sent = Arc::clone(&host.endless_sent);
    let chunk = Bytes::from(vec![filler; 64 * 1024]);
    let body = stream::once(async move { Ok::<_, std::io::Error>(Bytes::from(head)) }).chain(
        stream::repeat_with(move || {
            sent.fetch_add(chunk.len() as u64, Ordering::SeqCst);
            Ok(chunk.clone())
        }),
    );
    HttpResponse::Ok()
        .content_type(format!("multipart/mixed; boundary={BOUNDARY}"))
        .streaming(body)
}

async fn federation_thumbnail(
    req: HttpRequest,
    id: web::Path<String>,
    host: web::Data<MediaHost>,
) -> HttpResponse {
    let file = match host.lookup(&req, &id).await {
        Ok(file) => file,
        Err(response) => return response,
    };
    if file.mode == Mode::LegacyOnly {
        return error(404, "M_UNRECOGNIZED");
    }
    match &file.thumbnail {
        Some((bytes, content_type)) => {
            multipart(&media_headers(content_type, Some("thumbnail.png")), bytes)
        }
        None => error(400, "M_UNKNOWN"),
    }
}

#[derive(serde::Deserialize)]
struct LegacyQuery {
    allow_remote: Option<String>,
}

/// The deprecated endpoints: only asked with `allow_remote=false`, answered with plain bytes.
async fn legacy_download(
    req: HttpRequest,
    path: web::Path<(String, String)>,
    query: web::Query<LegacyQuery>,
    host: web::Data<MediaHost>,
) -> HttpResponse {
    match legacy_file(&req, &path.1, &query, &host).await {
        Ok(file) => plain(&file.bytes, &file.content_type, file.filename.as_deref()),
        Err(response) => response,
    }
}

async fn legacy_thumbnail(
    req: HttpRequest,
    path: web::Path<(String, String)>,
    query: web::Query<LegacyQuery>,
    host: web::Data<MediaHost>,
) -> HttpResponse {
    match legacy_file(&req, &path.1, &query, &host).await {
        Ok(File {
            thumbnail: Some((bytes, content_type)),
            ..
        }) => plain(&bytes, &content_type, None),
        Ok(_) => error(400, "M_UNKNOWN"),
        Err(response) => response,
    }
}

/// What both legacy endpoints check first: `allow_remote=false`, then the file itself.
async fn legacy_file(
    req: &HttpRequest,
    media_id: &str,
    query: &LegacyQuery,
    host: &MediaHost,
) -> Result<File, HttpResponse> {
    if query.allow_remote.as_deref() != Some("false") {
        return Err(error(400, "M_INVALID_PARAM"));
    }
    host.lookup(req, media_id).await
}

/// Unauthenticated, like a CDN: a relative redirect first, to check it is followed.
async fn cdn_redirect(id: web::Path<String>) -> HttpResponse {
    HttpResponse::TemporaryRedirect()
        .insert_header(("location", format!("/cdn-final/{id}")))
        .finish()
}

async fn cdn(id: web::Path<String>, host: web::Data<MediaHost>) -> HttpResponse {
    match host.file(&id) {
        Some(file) => plain(&file.bytes, &file.content_type, file.filename.as_deref()),
        None => HttpResponse::NotFound().finish(),
    }
}

const BOUNDARY: &str = "6b1d4a3c0e2f49b8a7d5c3e1f0a2b4c6";

fn media_headers(content_type: &str, filename: Option<&str>) -> String {
    let mut headers = format!("Content-Type: {content_type}\r\n");
    if let Some(name) = filename {
        headers.push_str(&format!(
            "Content-Disposition: inline; filename=\"{name}\"\r\n"
        ));
    }
    headers
}

fn multipart_head(media_headers: &str) -> String {
    format!(
        "\r\n--{BOUNDARY}\r\nContent-Type: application/json\r\n\r\n{{}}\r\n--{BOUNDARY}\r\n\
         {media_headers}\r\n"
    )
}

fn multipart(media_headers: &str, bytes: &[u8]) -> HttpResponse {
    let mut body = multipart_head(media_headers).into_bytes();
    body.extend_from_slice(bytes);
    body.extend_from_slice(format!("\r\n--{BOUNDARY}--\r\n").as_bytes());
    HttpResponse::Ok()
        .content_type(format!("multipart/mixed; boundary={BOUNDARY}"))
        .body(body)
}

fn quirky_multipart(media_headers: &str, bytes: &[u8]) -> HttpResponse {
    let boundary = "quirky boundary:1";
    let mut body = format!(
        "This is the preamble.\n--{boundary}\nContent-Type: application/json\n\n\
         {{\"future\": true}}\n--{boundary}\n{}\n",
        media_headers.replace("\r\n", "\n")
    )
    .into_bytes();
    body.extend_from_slice(bytes);
    body.extend_from_slice(format!("\n--{boundary}\n").as_bytes());
    HttpResponse::Ok()
        .content_type(format!("multipart/mixed; boundary=\"{boundary}\""))
        .body(body)
}

fn plain(bytes: &[u8], content_type: &str, filename: Option<&str>) -> HttpResponse {
    let mut response = HttpResponse::Ok();
    response.content_type(content_type.to_owned());
    if let Some(name) = filename {
        response.insert_header((
            "content-disposition",
            format!("inline; filename=\"{name}\""),
        ));
    }
    response.body(bytes.to_vec())
}
