//! Blobs in an S3-compatible bucket (`[store.s3]`), on `object_store`: keys
//! `<prefix><first two hex digits>/<sha256>`. Content-addressed and immutable, so a second put
//! of a key only ever writes identical bytes; no conditional put is relied on (Garage ignores
//! `If-None-Match: *`).
//!
//! The `BlobStore` calls block; inside, the S3 requests run on a small runtime of their own, so
//! they neither depend on nor occupy the caller's runtime (actix workers are single-threaded).
//! Memory stays flat: a put streams the staged file in parts of `PART_SIZE` (a single put for
//! smaller blobs), at most `PARTS_IN_FLIGHT` at once and `BUFFERS` in the whole process, and
//! is done only once the object is
//! complete; a failed multipart upload is aborted. Reads are streaming GETs (`read`).
//!
//! Every request is bounded: connecting and each wait for bytes by `timeout_secs`, every
//! request as a whole by `op_deadline`, transient failures retried with backoff within it.

mod probe;
mod read;

use std::{
    collections::VecDeque,
    fmt,
    future::Future,
    io::{self, Read as _},
    sync::Arc,
    time::{Duration, Instant, SystemTime},
};

use bytes::Bytes;
use futures_util::StreamExt as _;
use object_store::{
    BackoffConfig, ClientOptions, ObjectStore, ObjectStoreExt as _, PutPayload, RetryConfig,
    aws::{AmazonS3, AmazonS3Builder},
    path::Path,
};

pub use self::probe::{CheckError, Problem};
use super::blob::{BlobRead, BlobStore, Staged};
use crate::config::S3Config;

/// Bytes per multipart part; S3's smallest allowed part (but the last) is 5 MiB.
const PART_SIZE: usize = 8 * 1024 * 1024;
/// Parts uploaded at once per blob: memory per upload is at most this many parts.
const PARTS_IN_FLIGHT: usize = 2;
/// Part buffers in memory at once across all uploads (8 MiB each): more uploads wait.
const BUFFERS: usize = 8;
/// Retries of a failed request (connection refused, 5xx, 429), with backoff.
const MAX_RETRIES: usize = 3;

/// An S3 request that failed for a reason on the S3 side (unreachable, refused, erroring): the
/// store reports it as the backend being unavailable rather than as its own fault.
#[derive(Debug)]
pub struct BackendError(pub String);

impl fmt::Display for BackendError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "S3: {}", self.0)
    }
}

impl std::error::Error for BackendError {}

/// The S3 backend of the blob store.
#[derive(Clone)]
pub struct S3Blobs {
    shared: Arc<Shared>,
}

struct Shared {
    store: Arc<AmazonS3>,
    /// The configured prefix, empty or ending in `/`.
    prefix: String,
    bucket: String,
    runtime: Runtime,
    /// A bound on one request with its retries, for those whose size is bounded.
    op_deadline: Duration,
    /// How long the next bytes of a GET may take.
    read_timeout: Duration,
    sweep_grace: Duration,
    /// Part buffers free (of `BUFFERS`), and the uploads waiting for one.
    buffers: Arc<(std::sync::Mutex<usize>, std::sync::Condvar)>,
}

/// The runtime S3 requests run on. Shut down without waiting when the store goes, which may
/// be inside another runtime (where dropping one would panic).
struct Runtime(Option<tokio::runtime::Runtime>);

impl Drop for Runtime {
    fn drop(&mut self) {
        if let Some(runtime) = self.0.take() {
            runtime.shutdown_background();
        }
    }
}

impl S3Blobs {
    /// Builds the client; no request is made (`check` makes some).
    pub fn new(config: &S3Config) -> Result<Self, BackendError> {
        // reqwest's rustls has no provider of its own here: the process-wide one is ring.
        let _ = rustls::crypto::ring::default_provider().install_default();
        let timeout = Duration::from_secs(config.timeout_secs);
        let mut options = ClientOptions::new()
            .with_connect_timeout(timeout)
            .with_read_timeout(timeout)
            // A download streams as fast as its client reads: only stalls are bounded.
            .with_timeout_disabled();
        let mut builder = AmazonS3Builder::new()
            .with_bucket_name(&config.bucket)
            .with_region(&config.region)
            .with_virtual_hosted_style_request(!config.path_style)
            .with_retry(RetryConfig {
                backoff: BackoffConfig {
                    init_backoff: Duration::from_millis(100),
                    max_backoff: Duration::from_secs(2),
                    base: 2.0,
                },
                max_retries: MAX_RETRIES,
                retry_timeout: timeout,
            });
        if let Some(endpoint) = &config.endpoint {
            options = options.with_allow_http(endpoint.starts_with("http://"));
            builder = builder.with_endpoint(endpoint);
        }
        if let Some(id) = &config.access_key_id {
            builder = builder.with_access_key_id(id);
        }
        if let Some(secret) = secret_key(config)? {
            builder = builder.with_secret_access_key(secret);
        }
        let store = builder
            .with_client_options(options)
            .build()
            .map_err(|e| BackendError(format!("configuring the S3 client: {e}")))?;
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .thread_name("mxmedia-s3")
            .enable_all()
            .build()
            .map_err(|e| BackendError(format!("starting the S3 runtime: {e}")))?;
        Ok(Self {
            shared: Arc::new(Shared {
                store: Arc::new(store),
                prefix: config.prefix.clone(),
                bucket: config.bucket.clone(),
                runtime: Runtime(Some(runtime)),
                // Connecting and waiting for the answer, each retry's, plus the backoff.
                op_deadline: timeout
                    .saturating_mul(2)
                    .saturating_add(Duration::from_secs(8)),
                read_timeout: timeout,
                sweep_grace: Duration::from_secs(config.sweep_grace_secs),
                buffers: Arc::new((std::sync::Mutex::new(BUFFERS), std::sync::Condvar::new())),
            }),
        })
    }

    /// The key of blob `sha256`.
    pub fn key(&self, sha256: &str) -> Path {
        object_key(&self.shared.prefix, sha256)
    }

    pub fn bucket(&self) -> &str {
        &self.shared.bucket
    }

    /// The client, for callers that need more than the blob calls (signing URLs, copying).
    pub fn client(&self) -> Arc<AmazonS3> {
        Arc::clone(&self.shared.store)
    }

    /// Runs `fut` on the S3 runtime and waits for it, from any thread: a blocking one, or the
    /// start-up code (not an async worker: it would stall for the request's time).
    fn run<T: Send + 'static>(
        &self,
        fut: impl Future<Output = T> + Send + 'static,
    ) -> io::Result<T> {
        run_on(&self.shared, fut)
    }

    /// One request, timed and counted, bounded by `deadline`.
    fn request<T: Send + 'static>(
        &self,
        op: &'static str,
        deadline: Duration,
        fut: impl Future<Output = object_store::Result<T>> + Send + 'static,
    ) -> io::Result<T> {
        self.run(measured(op, deadline, fut))?
    }

    fn put_multipart(&self, key: &Path, mut file: std::fs::File, len: u64) -> io::Result<()> {
        let store = self.client();
        let target = key.clone();
        let mut upload = self.request("create_multipart", self.shared.op_deadline, async move {
            store.put_multipart(&target).await
        })?;
        let result = self.send_parts(&mut *upload, &mut file, len);
        match result {
            Ok(()) => self
                .request("complete_multipart", self.shared.op_deadline, async move {
                    let done = upload.complete().await;
                    if done.is_err() {
                        let _ = upload.abort().await;
                    }
                    done
                })
                .map(drop),
            Err(e) => {
                // The parts sent so far would otherwise stay, invisible but billed.
                let _ = self.request("abort_multipart", self.shared.op_deadline, async move {
                    upload.abort().await
                });
                Err(e)
            }
        }
    }

    /// Reads the staged file in parts and sends them, `PARTS_IN_FLIGHT` at most at once.
    fn send_parts(
        &self,
        upload: &mut dyn object_store::MultipartUpload,
        file: &mut std::fs::File,
        len: u64,
    ) -> io::Result<()> {
        let mut in_flight = VecDeque::new();
        let mut sent = 0u64;
        while sent < len {
            if in_flight.len() >= PARTS_IN_FLIGHT
                && let Some(part) = in_flight.pop_front()
            {
                wait_part(&self.shared, part)?;
            }
            let want = usize::try_from(len - sent).map_or(PART_SIZE, |left| left.min(PART_SIZE));
            let buffer = Buffer::take(&self.shared.buffers);
            let mut buf = vec![0; want];
            file.read_exact(&mut buf)?;
            sent = sent.saturating_add(u64::try_from(want).unwrap_or(u64::MAX));
            let part = upload.put_part(PutPayload::from(Bytes::from(buf)));
            let deadline = self.part_deadline(want);
            let handle = spawn_on(&self.shared, async move {
                let sent = measured("put_part", deadline, part).await;
                drop(buffer);
                sent
            })?;
            in_flight.push_back(handle);
        }
        for part in in_flight {
            wait_part(&self.shared, part)?;
        }
        Ok(())
    }

    /// A part may take its request's bound plus a second per MiB (a 1 MiB/s floor).
    fn part_deadline(&self, len: usize) -> Duration {
        let secs = u64::try_from(len / (1024 * 1024)).unwrap_or(u64::MAX);
        self.shared
            .op_deadline
            .saturating_add(Duration::from_secs(secs))
    }

    /// Every blob under the prefix, however young (for tools and tests; the sweep uses
    /// `list`, which leaves out the young).
    pub fn list_all(&self) -> io::Result<Vec<String>> {
        self.list_older_than(Duration::ZERO)
    }

    /// The blobs under the prefix at least `grace` old.
    fn list_older_than(&self, grace: Duration) -> io::Result<Vec<String>> {
        let store = self.client();
        let prefix = list_prefix(&self.shared.prefix);
        let root = self.shared.prefix.clone();
        let read_timeout = self.shared.read_timeout;
        self.run(async move {
            let started = Instant::now();
            let mut listing = store.list(prefix.as_ref());
            let mut out = Vec::new();
            let now = SystemTime::now();
            loop {
                let next = tokio::time::timeout(read_timeout, listing.next()).await;
                let Ok(next) = next else {
                    return Err(backend_error("list", "timed out"));
                };
                let Some(meta) = next else {
                    break;
                };
                let meta = meta.map_err(|e| from_object_store("list", e))?;
                let Some(sha256) = sha256_of(&root, meta.location.as_ref()) else {
                    continue;
                };
                let modified = u64::try_from(meta.last_modified.timestamp_millis()).unwrap_or(0);
                let age = now
                    .duration_since(SystemTime::UNIX_EPOCH)
                    .unwrap_or_default()
                    .saturating_sub(Duration::from_millis(modified));
                if age >= grace {
                    out.push(sha256);
                }
            }
            metrics::histogram!("mxmedia_s3_request_duration_seconds", "op" => "list")
                .record(started.elapsed().as_secs_f64());
            Ok(out)
        })?
    }
}

impl BlobStore for S3Blobs {
    fn persist(&self, staged: Staged) -> io::Result<()> {
        let key = self.key(&staged.sha256);
        let len = staged.len;
        let mut file = staged.file.reopen()?;
        if len <= u64::try_from(PART_SIZE).unwrap_or(u64::MAX) {
            let _buffer = Buffer::take(&self.shared.buffers);
            let mut buf = Vec::with_capacity(usize::try_from(len).unwrap_or(0));
            (&mut file).take(len).read_to_end(&mut buf)?;
            let store = self.client();
            let deadline = self.part_deadline(buf.len());
            self.request("put", deadline, async move {
                store.put(&key, PutPayload::from(Bytes::from(buf))).await
            })?;
        } else {
            self.put_multipart(&key, file, len)?;
        }
        // The staged file goes with `staged`: the bytes are in the bucket.
        drop(staged);
        Ok(())
    }

    fn sends_ahead(&self) -> bool {
        true
    }

    fn open(&self, sha256: &str) -> io::Result<Box<dyn BlobRead>> {
        Ok(Box::new(read::S3Reader::open(
            self.clone(),
            self.key(sha256),
        )?))
    }

    fn remove(&self, sha256: &str) -> io::Result<()> {
        let store = self.client();
        let key = self.key(sha256);
        // A missing object is no error: S3's DELETE answers 204 either way.
        match self.request("delete", self.shared.op_deadline, async move {
            store.delete(&key).await
        }) {
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
            other => other,
        }
    }

    /// Only blobs older than `sweep_grace`: a younger one may belong to an upload whose
    /// record is not committed yet (in another process sharing the prefix; this one's are
    /// pinned).
    fn list(&self) -> io::Result<Vec<String>> {
        self.list_older_than(self.shared.sweep_grace)
    }
}

/// One of the `BUFFERS` part buffers, given back when dropped.
struct Buffer(Arc<(std::sync::Mutex<usize>, std::sync::Condvar)>);

impl Buffer {
    /// Waits (on a blocking thread) until a buffer is free.
    fn take(buffers: &Arc<(std::sync::Mutex<usize>, std::sync::Condvar)>) -> Self {
        let (free, freed) = &**buffers;
        // A poisoned count means a panic elsewhere; going on unbounded beats deadlocking.
        if let Ok(guard) = free.lock()
            && let Ok(mut guard) = freed.wait_while(guard, |free| *free == 0)
        {
            *guard -= 1;
        }
        Self(Arc::clone(buffers))
    }
}

impl Drop for Buffer {
    fn drop(&mut self) {
        let (free, freed) = &*self.0;
        if let Ok(mut free) = free.lock() {
            *free = free.saturating_add(1);
        }
        freed.notify_one();
    }
}

/// The key of blob `sha256` under `prefix` (empty or ending in `/`).
pub fn object_key(prefix: &str, sha256: &str) -> Path {
    Path::from(format!(
        "{prefix}{}/{sha256}",
        sha256.get(..2).unwrap_or("00")
    ))
}

fn list_prefix(prefix: &str) -> Option<Path> {
    let trimmed = prefix.trim_end_matches('/');
    (!trimmed.is_empty()).then(|| Path::from(trimmed))
}

/// The hash a listed key names, if it is a blob key (not a probe or someone else's object).
fn sha256_of(prefix: &str, key: &str) -> Option<String> {
    let rest = key.strip_prefix(prefix)?;
    let (shard, sha256) = rest.split_once('/')?;
    let is_hex = sha256.len() == 64
        && sha256
            .bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b));
    (is_hex && sha256.get(..2) == Some(shard)).then(|| sha256.to_owned())
}

fn secret_key(config: &S3Config) -> Result<Option<String>, BackendError> {
    if let Some(path) = &config.secret_access_key_file {
        return std::fs::read_to_string(path)
            .map(|s| Some(s.trim_end().to_owned()))
            .map_err(|e| {
                BackendError(format!(
                    "MXMEDIA_STORE__S3__SECRET_ACCESS_KEY_FILE: reading {}: {e}",
                    path.display()
                ))
            });
    }
    Ok(config.secret_access_key.clone())
}

fn run_on<T: Send + 'static>(
    shared: &Shared,
    fut: impl Future<Output = T> + Send + 'static,
) -> io::Result<T> {
    let handle = spawn_on(shared, fut)?;
    wait(handle)
}

/// A task on the S3 runtime, whose result `wait` collects.
type Task<T> = std::sync::mpsc::Receiver<T>;

fn spawn_on<T: Send + 'static>(
    shared: &Shared,
    fut: impl Future<Output = T> + Send + 'static,
) -> io::Result<Task<T>> {
    let runtime = shared
        .runtime
        .0
        .as_ref()
        .ok_or_else(|| io::Error::other(BackendError("the S3 runtime is shut down".into())))?;
    let (tx, rx) = std::sync::mpsc::sync_channel(1);
    runtime.spawn(async move {
        let _ = tx.send(fut.await);
    });
    Ok(rx)
}

/// Waits on a plain channel, not tokio's, so that any thread may wait.
fn wait<T>(task: Task<T>) -> io::Result<T> {
    task.recv()
        .map_err(|_| io::Error::other(BackendError("an S3 request was lost".into())))
}

fn wait_part(_shared: &Shared, part: Task<io::Result<()>>) -> io::Result<()> {
    wait(part)?
}

/// Runs one request with its metrics: requests, errors and latency by operation.
async fn measured<T>(
    op: &'static str,
    deadline: Duration,
    fut: impl Future<Output = object_store::Result<T>>,
) -> io::Result<T> {
    let started = Instant::now();
    metrics::counter!("mxmedia_s3_requests_total", "op" => op).increment(1);
    let result = match tokio::time::timeout(deadline, fut).await {
        Ok(Ok(value)) => Ok(value),
        Ok(Err(e)) => Err(from_object_store(op, e)),
        Err(_) => Err(backend_error(
            op,
            &format!("no answer within {}s", deadline.as_secs()),
        )),
    };
    metrics::histogram!("mxmedia_s3_request_duration_seconds", "op" => op)
        .record(started.elapsed().as_secs_f64());
    if let Err(e) = &result
        && e.kind() != io::ErrorKind::NotFound
    {
        metrics::counter!("mxmedia_s3_errors_total", "op" => op).increment(1);
    }
    result
}

fn backend_error(op: &str, message: &str) -> io::Error {
    io::Error::other(BackendError(format!("{op}: {message}")))
}

/// An `object_store` error as the store sees it: a missing object is `NotFound` (as a missing
/// file is), anything else the backend's failure, with its whole cause chain for the log.
fn from_object_store(op: &str, err: object_store::Error) -> io::Error {
    if let object_store::Error::NotFound { .. } = err {
        return io::Error::new(io::ErrorKind::NotFound, err);
    }
    backend_error(op, &probe::chain(&err))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_are_sharded_by_the_first_two_hex_digits_under_the_prefix() {
        let sha = "ab".repeat(32);
        assert_eq!(
            object_key("mx/", &sha).as_ref(),
            format!("mx/ab/{sha}").as_str()
        );
        assert_eq!(object_key("", &sha).as_ref(), format!("ab/{sha}").as_str());
        assert_eq!(sha256_of("mx/", &format!("mx/ab/{sha}")), Some(sha.clone()));
        assert_eq!(sha256_of("mx/", &format!("mx/cd/{sha}")), None);
        assert_eq!(sha256_of("mx/", "mx/.probe-1"), None);
        assert_eq!(sha256_of("", &format!("other/ab/{sha}")), None);
    }
}
