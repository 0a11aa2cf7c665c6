//! A real Garage on loopback, the S3 engine the S3 tests run on by default (`s3_engine` picks
//! it, or SeaweedFS): `Garage::start()` starts one, with the test key and bucket that every
//! engine has (each test server takes a prefix of its own in the bucket).
//!
//! The binary is `$MXMEDIA_TEST_GARAGE` (`.ci/garage.sh` ensures it and prints its path), else
//! Garage's cache path. Garage runs under `sh`, which kills it once its stdin closes: the pipe
//! closes when the test process exits, even on `kill -9`, so no Garage outlives its tests.

use std::{
    io::Write as _,
    net::TcpListener,
    path::PathBuf,
    process::{Child, ChildStdin, Command, Stdio},
    sync::{
        Mutex,
        atomic::{AtomicU64, Ordering},
    },
    time::{Duration, Instant},
};

use mxmedia::{config::S3Config, store::s3::S3Blobs};

pub const ACCESS_KEY: &str = "GK0123456789abcdef01234567";
pub const SECRET_KEY: &str = "5ec2e75ec2e75ec2e75ec2e75ec2e75ec2e75ec2e75ec2e75ec2e75ec2e75ec2";
pub const BUCKET: &str = "mxmedia-test";
pub const REGION: &str = "garage";

/// Where the Garage binary is.
pub fn binary() -> PathBuf {
    std::env::var_os("MXMEDIA_TEST_GARAGE").map_or_else(
        || PathBuf::from("/var/tmp/garage-2.5.0/bin/garage"),
        PathBuf::from,
    )
}

/// Whether this run keeps the test servers' blobs in S3 (`MXMEDIA_TEST_BACKEND=s3`).
pub fn backend_is_s3() -> bool {
    std::env::var("MXMEDIA_TEST_BACKEND").is_ok_and(|b| b == "s3")
}

pub struct Garage {
    pub endpoint: String,
    dir: tempfile::TempDir,
    s3_port: u16,
    rpc_port: u16,
    process: Mutex<Option<(Child, ChildStdin)>>,
}

/// A prefix no other test server of this process uses.
pub fn fresh_prefix() -> String {
    static NEXT: AtomicU64 = AtomicU64::new(0);
    format!(
        "t{}-{}/",
        std::process::id(),
        NEXT.fetch_add(1, Ordering::Relaxed)
    )
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// The `[store.s3]` of a test server on the engine at `endpoint` with the test key and bucket,
/// under a fresh prefix.
pub fn test_config(endpoint: &str, region: &str) -> S3Config {
    S3Config {
        bucket: BUCKET.into(),
        endpoint: Some(endpoint.to_owned()),
        region: region.into(),
        access_key_id: Some(ACCESS_KEY.into()),
        secret_access_key: Some(SECRET_KEY.into()),
        secret_access_key_file: None,
        prefix: fresh_prefix(),
        path_style: true,
        timeout_secs: 5,
        sweep_grace_secs: 3600,
        redirect: mxmedia::config::redirect::Redirect::Off,
        public_base_url: None,
        presign_ttl_secs: 300,
        cache_max_size: bytesize::ByteSize::b(0),
        cache_dir: None,
    }
}

/// Kills an engine run under `sh` at once (its stdin told to stop, then closed), as a crash or a
/// pulled cable would, and waits until its S3 port is closed: until then a test could still reach
/// the dying process.
pub fn kill(process: &Mutex<Option<(Child, ChildStdin)>>, port: u16, what: &str) {
    let Some((mut child, mut stdin)) = process.lock().unwrap().take() else {
        return;
    };
    let _ = stdin.write_all(b"stop\n");
    drop(stdin);
    let _ = child.wait();
    let deadline = Instant::now() + Duration::from_secs(10);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
        assert!(Instant::now() < deadline, "{what} did not stop");
        std::thread::sleep(Duration::from_millis(20));
    }
}

impl Garage {
    /// Starts a single-node Garage with the test key and bucket, and waits until it serves.
    pub fn start() -> Self {
        let (s3_port, rpc_port) = (free_port(), free_port());
        let garage = Self {
            endpoint: format!("http://127.0.0.1:{s3_port}"),
            dir: tempfile::tempdir().unwrap(),
            s3_port,
            rpc_port,
            process: Mutex::new(None),
        };
        std::fs::write(
            garage.dir.path().join("garage.toml"),
            format!(
                "metadata_dir = \"{dir}/meta\"\n\
                 data_dir = \"{dir}/data\"\n\
                 db_engine = \"sqlite\"\n\
                 replication_factor = 1\n\
                 rpc_bind_addr = \"127.0.0.1:{rpc}\"\n\
                 rpc_public_addr = \"127.0.0.1:{rpc}\"\n\
                 rpc_secret = \"{secret}\"\n\
                 [s3_api]\n\
                 s3_region = \"{REGION}\"\n\
                 api_bind_addr = \"127.0.0.1:{s3}\"\n",
                dir = garage.dir.path().display(),
                rpc = garage.rpc_port,
                s3 = garage.s3_port,
                secret = "0".repeat(63) + "1",
            ),
        )
        .unwrap();
        garage.resume();
        garage
    }

    /// The `[store.s3]` of a test server using this Garage, under a fresh prefix.
    pub fn config(&self) -> S3Config {
        test_config(&self.endpoint, REGION)
    }

    /// Kills Garage at once (SIGKILL), as a crash or a pulled cable would.
    pub fn stop(&self) {
        kill(&self.process, self.s3_port, "Garage");
    }

    /// Starts Garage (again, on the same ports and data) and waits until the bucket works.
    pub fn resume(&self) {
        let bin = binary();
        assert!(
            bin.exists(),
            "no Garage at {}: run `bash .ci/garage.sh` (or tests/test.sh), or set MXMEDIA_TEST_GARAGE",
            bin.display()
        );
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.path().join("garage.log"))
            .unwrap();
        let mut child = Command::new("sh")
            .arg("-c")
            .arg(r#""$0" -c "$1" server --single-node --default-bucket </dev/null & read _; kill -9 $!; wait"#)
            .arg(&bin)
            .arg(self.dir.path().join("garage.toml"))
            .env("GARAGE_DEFAULT_ACCESS_KEY", ACCESS_KEY)
            .env("GARAGE_DEFAULT_SECRET_KEY", SECRET_KEY)
            .env("GARAGE_DEFAULT_BUCKET", BUCKET)
            .env("RUST_LOG", "warn")
            .stdin(Stdio::piped())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .unwrap();
        let stdin = child.stdin.take().unwrap();
        *self.process.lock().unwrap() = Some((child, stdin));
        let probe = S3Blobs::new(&S3Config {
            prefix: String::new(),
            timeout_secs: 1,
            ..self.config()
        })
        .unwrap();
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            match probe.check() {
                Ok(()) => return,
                Err(e) if Instant::now() > deadline => panic!(
                    "Garage did not come up: {e}; log: {}",
                    std::fs::read_to_string(self.dir.path().join("garage.log")).unwrap_or_default()
                ),
                Err(_) => std::thread::sleep(Duration::from_millis(100)),
            }
        }
    }
}

impl Garage {
    /// Multipart uploads begun in the bucket and neither completed nor aborted, as Garage itself
    /// counts them (`garage bucket info`, which prints the line only when there are some). The
    /// count is the whole bucket's: a test asking it uses a Garage of its own.
    pub fn unfinished_multipart_uploads(&self) -> u64 {
        let out = Command::new(binary())
            .arg("-c")
            .arg(self.dir.path().join("garage.toml"))
            .args(["bucket", "info", BUCKET])
            .env("RUST_LOG", "error")
            .output()
            .unwrap();
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(out.status.success(), "garage bucket info: {text}");
        text.lines()
            .find_map(|line| line.trim().strip_prefix("Unfinished uploads:"))
            .map_or(0, |rest| {
                rest.split_whitespace()
                    .next()
                    .and_then(|n| n.parse().ok())
                    .unwrap_or_else(|| panic!("unreadable count in {text}"))
            })
    }
}

impl Drop for Garage {
    fn drop(&mut self) {
        self.stop();
    }
}
