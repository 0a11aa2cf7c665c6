//! A real SeaweedFS on loopback, the second S3 engine the S3 tests run on
//! (`MXMEDIA_TEST_S3_ENGINE=seaweedfs`, see `s3_engine`): `weed server -s3` (master, volume,
//! filer and S3 gateway in one process) on free ports, its data in a tempdir, the test key in
//! an `-s3.config` identities file, the test bucket created at start through the filer.
//!
//! The binary is `$MXMEDIA_TEST_SEAWEEDFS` (`.ci/seaweed.sh` ensures it and prints its path),
//! else that script's cache path. Like Garage, it runs under `sh`, which kills it once its
//! stdin closes: the pipe closes when the test process exits, even on `kill -9`, so no
//! SeaweedFS outlives its tests.

use std::{
    io::{Read as _, Write as _},
    net::TcpStream,
    path::PathBuf,
    process::{Child, ChildStdin, Command, Stdio},
    sync::Mutex,
    time::{Duration, Instant},
};

use mxmedia::{config::S3Config, store::s3::S3Blobs};

use crate::garage::{ACCESS_KEY, BUCKET, SECRET_KEY, kill, test_config};

/// SeaweedFS signs with whatever region a request names and enforces none; this is the one
/// the tests' requests name.
pub const REGION: &str = "us-east-1";

/// A second key (same secret), allowed only the test bucket.
pub const SCOPED_ACCESS_KEY: &str = "SW0123456789abcdef012345";

/// Where the `weed` binary is.
pub fn binary() -> PathBuf {
    std::env::var_os("MXMEDIA_TEST_SEAWEEDFS").map_or_else(
        || PathBuf::from("/var/tmp/seaweedfs-4.48/bin/weed"),
        PathBuf::from,
    )
}

/// The ports `weed server` listens on: every one given, since its defaults are fixed numbers
/// (8333, 9333, ...) and its gRPC ports default to HTTP port + 10000, which may be taken or
/// out of range.
struct Ports {
    master: u16,
    master_grpc: u16,
    volume: u16,
    volume_grpc: u16,
    filer: u16,
    filer_grpc: u16,
    s3: u16,
    s3_grpc: u16,
}

pub struct SeaweedFs {
    pub endpoint: String,
    dir: tempfile::TempDir,
    ports: Ports,
    process: Mutex<Option<(Child, ChildStdin)>>,
}

impl SeaweedFs {
    /// Starts SeaweedFS with the test key and bucket, and waits until the bucket works.
    pub fn start() -> Self {
        // Held together while they are picked, so no two of them are the same port.
        let listeners: Vec<std::net::TcpListener> = (0..8)
            .map(|_| std::net::TcpListener::bind("127.0.0.1:0").unwrap())
            .collect();
        let port = |i: usize| listeners[i].local_addr().unwrap().port();
        let ports = Ports {
            master: port(0),
            master_grpc: port(1),
            volume: port(2),
            volume_grpc: port(3),
            filer: port(4),
            filer_grpc: port(5),
            s3: port(6),
            s3_grpc: port(7),
        };
        drop(listeners);
        let seaweed = Self {
            endpoint: format!("http://127.0.0.1:{}", ports.s3),
            dir: tempfile::tempdir().unwrap(),
            ports,
            process: Mutex::new(None),
        };
        std::fs::create_dir(seaweed.dir.path().join("data")).unwrap();
        std::fs::write(
            seaweed.dir.path().join("s3.json"),
            serde_json::json!({
                "identities": [
                    {
                        "name": "mxmedia-test",
                        "credentials": [{"accessKey": ACCESS_KEY, "secretKey": SECRET_KEY}],
                        // No Admin, as the README advises: it would also let a put create a
                        // misspelt bucket instead of failing.
                        "actions": ["Read", "Write", "List"],
                    },
                    {
                        "name": "mxmedia-test-scoped",
                        "credentials": [{"accessKey": SCOPED_ACCESS_KEY, "secretKey": SECRET_KEY}],
                        // A key for the test bucket only, as an admin would give one server.
                        "actions": [
                            format!("Read:{BUCKET}"),
                            format!("Write:{BUCKET}"),
                            format!("List:{BUCKET}"),
                        ],
                    },
                ]
            })
            .to_string(),
        )
        .unwrap();
        seaweed.resume();
        seaweed
    }

    /// The `[store.s3]` of a test server using this SeaweedFS, under a fresh prefix.
    pub fn config(&self) -> S3Config {
        test_config(&self.endpoint, REGION)
    }

    /// Kills SeaweedFS at once (SIGKILL), as a crash or a pulled cable would.
    pub fn stop(&self) {
        kill(&self.process, self.ports.s3, "SeaweedFS");
    }

    /// Starts SeaweedFS (again, on the same ports and data) and waits until the bucket works.
    pub fn resume(&self) {
        let bin = binary();
        assert!(
            bin.exists(),
            "no SeaweedFS at {}: run `bash .ci/seaweed.sh` (or tests/test.sh), or set \
             MXMEDIA_TEST_SEAWEEDFS",
            bin.display()
        );
        let log_path = self.dir.path().join("weed.log");
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log_path)
            .unwrap();
        let p = &self.ports;
        let args = [
            "server".to_owned(),
            format!("-dir={}", self.dir.path().join("data").display()),
            "-ip=127.0.0.1".to_owned(),
            "-ip.bind=127.0.0.1".to_owned(),
            format!("-master.port={}", p.master),
            format!("-master.port.grpc={}", p.master_grpc),
            // Small volumes and no cap on their count: the default 30 GiB volumes are sized
            // for disks, not for a test's tempdir.
            "-master.volumeSizeLimitMB=64".to_owned(),
            // Tests talk to loopback only: no usage report to SeaweedFS's telemetry server.
            "-master.telemetry=false".to_owned(),
            "-volume.max=0".to_owned(),
            format!("-volume.port={}", p.volume),
            format!("-volume.port.grpc={}", p.volume_grpc),
            // A kill is a kill: no 10 s grace before the volume server stops.
            "-volume.preStopSeconds=0".to_owned(),
            "-filer".to_owned(),
            format!("-filer.port={}", p.filer),
            format!("-filer.port.grpc={}", p.filer_grpc),
            format!(
                "-filer.localSocket={}",
                self.dir.path().join("filer.sock").display()
            ),
            "-s3".to_owned(),
            format!("-s3.port={}", p.s3),
            format!("-s3.port.grpc={}", p.s3_grpc),
            format!(
                "-s3.localSocket={}",
                self.dir.path().join("s3.sock").display()
            ),
            "-s3.port.iceberg=0".to_owned(),
            "-s3.port.lance=0".to_owned(),
            format!("-s3.config={}", self.dir.path().join("s3.json").display()),
            // A put into a missing bucket must fail (the bucket check reports it), not
            // create the bucket.
            "-s3.autoCreateBucket=false".to_owned(),
        ];
        // Each gRPC server also listens on a Unix socket in /tmp named by its port, which a
        // killed process leaves behind: `sh` removes them after the kill (the shared engine's
        // too, which is never dropped).
        let sockets = [
            ("master", p.master_grpc),
            ("volume", p.volume_grpc),
            ("filer", p.filer_grpc),
            ("s3", p.s3_grpc),
        ]
        .map(|(role, port)| format!("/tmp/seaweedfs-{role}-grpc-{port}.sock"))
        .join(" ");
        let mut child = Command::new("sh")
            .arg("-c")
            .arg(r#"bin="$0"; "$bin" "$@" </dev/null & read _; kill -9 $!; wait; rm -f $WEED_SOCKETS"#)
            .arg(&bin)
            .args(&args)
            .env("WEED_SOCKETS", sockets)
            .stdin(Stdio::piped())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .unwrap();
        let stdin = child.stdin.take().unwrap();
        *self.process.lock().unwrap() = Some((child, stdin));
        let deadline = Instant::now() + Duration::from_secs(60);
        let failed = |what: &str| -> ! {
            panic!(
                "SeaweedFS did not come up: {what}; log: {}",
                std::fs::read_to_string(&log_path).unwrap_or_default()
            )
        };
        // A bucket is a directory under the filer's /buckets; making it is idempotent.
        loop {
            match self.filer_mkdir(&format!("/buckets/{BUCKET}/")) {
                Ok(()) => break,
                Err(e) if Instant::now() > deadline => failed(&e),
                Err(_) => std::thread::sleep(Duration::from_millis(100)),
            }
        }
        let probe = S3Blobs::new(&S3Config {
            prefix: String::new(),
            timeout_secs: 2,
            ..self.config()
        })
        .unwrap();
        loop {
            match probe.check() {
                Ok(()) => return,
                Err(e) if Instant::now() > deadline => failed(&e.to_string()),
                Err(_) => std::thread::sleep(Duration::from_millis(100)),
            }
        }
    }

    /// `POST <dir>` to the filer's HTTP API, which makes the directory.
    fn filer_mkdir(&self, dir: &str) -> Result<(), String> {
        let mut conn =
            TcpStream::connect(("127.0.0.1", self.ports.filer)).map_err(|e| e.to_string())?;
        conn.set_read_timeout(Some(Duration::from_secs(5)))
            .map_err(|e| e.to_string())?;
        write!(
            conn,
            "POST {dir} HTTP/1.1\r\nHost: 127.0.0.1:{}\r\nContent-Length: 0\r\n\
             Connection: close\r\n\r\n",
            self.ports.filer
        )
        .map_err(|e| e.to_string())?;
        let mut answer = String::new();
        conn.read_to_string(&mut answer)
            .map_err(|e| e.to_string())?;
        let status = answer.split(' ').nth(1).unwrap_or_default();
        // 409: it exists already (a restart on the same data).
        if status.starts_with('2') || status == "409" {
            Ok(())
        } else {
            Err(format!("filer answered {answer:?}"))
        }
    }
}

impl Drop for SeaweedFs {
    fn drop(&mut self) {
        self.stop();
    }
}
