//! Test harness: start mxmedia in-process on a free loopback port, or as a child process.

use std::{net::TcpListener, path::Path, sync::Arc, time::Duration};

use awc::Client;
use mxmedia::config::{Config, FreeSpace};

pub const ALICE: &str = "alice_token";
pub const BOB: &str = "bob_token";

pub struct TestServer {
    pub base: String,
    pub dir: tempfile::TempDir,
    pub client: Client,
    /// The certificate being served, when the server speaks HTTPS.
    pub tls: Option<Arc<mxmedia::tls::CertResolver>>,
    pub config: Config,
    pub media: Arc<mxmedia::media::MediaService>,
    pub store: mxmedia::store::Store,
    handle: actix_web::dev::ServerHandle,
    _backup_socket: Option<mxmedia::backup::BackupSocket>,
}

pub fn test_config(dir: &Path) -> Config {
    let mut config = Config {
        data_dir: dir.to_path_buf(),
        workers: 2,
        ..Config::default()
    };
    config.store.min_free_space = FreeSpace::Bytes(0);
    if crate::garage::backend_is_s3() {
        config.store.s3 = Some(crate::s3_engine::shared().config());
    }
    // The tests count blob files assuming photos and thumbnails live in sled, as they did
    // before the default went down to 4 KiB.
    config.store.inline_blob_max = bytesize::ByteSize::kib(256);
    config
        .auth
        .static_tokens
        .insert(ALICE.into(), "@alice:localhost".into());
    config
        .auth
        .static_tokens
        .insert(BOB.into(), "@bob:localhost".into());
    config
}

impl TestServer {
    pub async fn start() -> Self {
        Self::start_with(|_| {}).await
    }

    pub async fn start_with(tweak: impl FnOnce(&mut Config)) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        Self::start_on(listener, tweak).await
    }

    /// Starts on `listener`, already bound, so `tweak` may use its address (a server name
    /// naming the server's own port, say). Async although nothing in it awaits: it spawns the
    /// server, so it must run on the runtime.
    #[allow(clippy::unused_async)]
    pub async fn start_on(listener: TcpListener, tweak: impl FnOnce(&mut Config)) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let mut config = test_config(dir.path());
        tweak(&mut config);
        let scheme = if config.tls.paths().is_some() {
            "https"
        } else {
            "http"
        };
        let base = format!("{scheme}://{}", listener.local_addr().unwrap());
        let running = mxmedia::start(config.clone(), listener).unwrap();
        let handle = running.server.handle();
        actix_web::rt::spawn(running.server);
        Self {
            base,
            dir,
            client: client(),
            tls: running.tls,
            config,
            media: running.media,
            store: running.store,
            handle,
            _backup_socket: running.backup_socket,
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    /// Uploads `bytes` as alice and returns the media id.
    pub async fn upload(&self, bytes: &[u8], content_type: &str, filename: Option<&str>) -> String {
        let mut url = self.url("/_matrix/media/v3/upload");
        if let Some(name) = filename {
            url.push_str(&format!("?filename={}", urlencode(name)));
        }
        let mut res = self
            .client
            .post(url)
            .bearer_auth(ALICE)
            .insert_header(("content-type", content_type))
            .send_body(bytes.to_vec())
            .await
            .unwrap();
        assert_eq!(res.status(), 200);
        let body: serde_json::Value = res.json().await.unwrap();
        let uri = body["content_uri"].as_str().unwrap().to_owned();
        uri.strip_prefix("mxc://localhost/")
            .expect("mxc uri of our server")
            .to_owned()
    }

    /// GETs `url` with `token` as the access token.
    pub async fn get_as(
        &self,
        url: impl AsRef<str>,
        token: &str,
    ) -> awc::ClientResponse<
        impl futures_util::Stream<Item = Result<bytes::Bytes, awc::error::PayloadError>>,
    > {
        self.client
            .get(url.as_ref())
            .bearer_auth(token)
            .send()
            .await
            .unwrap()
    }

    /// Sends `body` with `method` to `url` with `token` as the access token.
    pub async fn send_as(
        &self,
        method: actix_web::http::Method,
        url: impl AsRef<str>,
        token: &str,
        body: impl Into<bytes::Bytes>,
    ) -> awc::ClientResponse<
        impl futures_util::Stream<Item = Result<bytes::Bytes, awc::error::PayloadError>>,
    > {
        let body: bytes::Bytes = body.into();
        self.client
            .request(method, url.as_ref())
            .bearer_auth(token)
            .send_body(body)
            .await
            .unwrap()
    }

    pub fn download_url(&self, id: &str) -> String {
        self.url(&format!("/_matrix/client/v1/media/download/localhost/{id}"))
    }

    /// Blobs kept outside sled (files under the blob directory, or objects under this
    /// server's prefix in S3), and files in the staging directory.
    pub fn stored_files(&self) -> (usize, usize) {
        (self.blob_count(), count_files(&self.dir.path().join("tmp")))
    }

    /// Blobs kept outside sled, on either backend.
    pub fn blob_count(&self) -> usize {
        blob_count(&self.store, &self.config.data_dir)
    }
}

impl Drop for TestServer {
    fn drop(&mut self) {
        let handle = self.handle.clone();
        actix_web::rt::spawn(async move { handle.stop(false).await });
    }
}

pub fn client() -> Client {
    Client::builder()
        .timeout(Duration::from_secs(60))
        .disable_redirects()
        .finish()
}

pub fn urlencode(s: &str) -> String {
    percent_encoding::utf8_percent_encode(s, percent_encoding::NON_ALPHANUMERIC).to_string()
}

/// Blobs `store` keeps outside sled: objects under its prefix, or files under `data_dir/blobs`.
pub fn blob_count(store: &mxmedia::store::Store, data_dir: &Path) -> usize {
    match store.s3() {
        Some(s3) => s3.list_all().unwrap().len(),
        None => count_files(&data_dir.join("blobs")),
    }
}

pub fn count_files(path: &Path) -> usize {
    let Ok(entries) = std::fs::read_dir(path) else {
        return 0;
    };
    entries
        .map(|e| {
            let e = e.unwrap();
            if e.file_type().unwrap().is_dir() {
                count_files(&e.path())
            } else {
                1
            }
        })
        .sum()
}

/// Reads a JSON error and checks its status and errcode.
pub async fn assert_error<S>(res: &mut awc::ClientResponse<S>, status: u16, errcode: &str)
where
    S: futures_util::Stream<Item = Result<bytes::Bytes, awc::error::PayloadError>> + Unpin,
{
    assert_eq!(res.status(), status, "status");
    assert_eq!(
        res.headers().get("content-type").unwrap(),
        "application/json"
    );
    let body: serde_json::Value = res.json().await.unwrap();
    assert_eq!(body["errcode"], errcode, "{body}");
    assert!(body["error"].is_string(), "{body}");
}

/// Deterministic bytes that do not compress or dedupe by accident.
pub fn pseudo_random(len: usize, seed: u64) -> Vec<u8> {
    let mut x = seed
        .wrapping_mul(6364136223846793005)
        .wrapping_add(1442695040888963407);
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            (x >> 24) as u8
        })
        .collect()
}

/// A small tmpfs of its own, unmounted when dropped: a file system whose free space the test
/// controls, unlike the shared disk. `None` when this process may not mount (not root).
pub struct Tmpfs {
    pub dir: tempfile::TempDir,
}

impl Tmpfs {
    pub fn mount(size: &str) -> Option<Self> {
        if !nix::unistd::geteuid().is_root() {
            return None;
        }
        let dir = tempfile::tempdir().unwrap();
        let mounted = std::process::Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(dir.path())
            .status()
            .is_ok_and(|s| s.success());
        mounted.then_some(Self { dir })
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = std::process::Command::new("umount")
            .arg("-l")
            .arg(self.dir.path())
            .status();
    }
}
