//! Blobs in an S3-compatible bucket (`[store.s3]`), on `object_store`: keys
//! `<prefix><first two hex digits>/<sha256>`. Content-addressed and immutable, so a second put
//! of a key only ever writes identical bytes; no conditional put is relied on (Garage ignores
//! `If-None-Match: *`).
//!
//! The `BlobStore` calls block; inside, the S3 requests run on a small runtime of their own, so
//! they neither depend on nor occupy the caller's runtime (actix workers are single-threaded).
//! Memory stays flat: puts stream in bounded parts (`put`), reads are streaming GETs (`read`).
//!
//! Every request is bounded: connecting and each wait for bytes by `timeout_secs`, every
//! request as a whole by `op_deadline`, transient failures retried with backoff within it.

mod cache;
mod list;
mod presign;
mod probe;
mod put;
mod read;
mod runtime;

use self::runtime::{Runtime, backend_error, from_object_store, measured, run_on, spawn_on, wait};

use std::{fmt, future::Future, io, sync::Arc, time::Duration};

use object_store::{
    BackoffConfig, ClientOptions, ObjectStoreExt as _, RetryConfig,
    aws::{AmazonS3, AmazonS3Builder},
    path::Path,
};

pub use self::{
    cache::check_dir as check_cache_dir,
    probe::{CheckError, Problem},
};
use super::blob::{BlobRead, BlobStore, Staged};
use crate::config::{FreeSpace, S3Config};

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
    /// How clients may fetch objects directly (`presign`), if at all.
    direct: Option<presign::Direct>,
    /// Part buffers free (of `BUFFERS`), and the uploads waiting for one.
    buffers: Arc<(std::sync::Mutex<usize>, std::sync::Condvar)>,
    /// The local disk cache of blobs (`cache_max_size`), when it is on.
    cache: Option<Arc<cache::Cache>>,
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
                direct: presign::Direct::from_config(config),
                buffers: Arc::new((
                    std::sync::Mutex::new(put::BUFFERS),
                    std::sync::Condvar::new(),
                )),
                cache: None,
            }),
        })
    }

    /// The backend with its local disk cache when `cache_max_size` is set: the cache directory
    /// (`cache_dir`, or `data_dir/s3-cache`) is created and its files indexed. Only the server
    /// uses it; other commands reading the bucket do without.
    pub fn with_cache(
        config: &S3Config,
        data_dir: &std::path::Path,
        floor: FreeSpace,
    ) -> Result<Self, BackendError> {
        let mut blobs = Self::new(config)?;
        if let Some(dir) = config.cache_dir(data_dir) {
            let cache = cache::Cache::open(dir, config.cache_max_size.as_u64(), floor)
                .map_err(|e| BackendError(format!("opening the cache: {e}")))?;
            let shared = Arc::get_mut(&mut blobs.shared)
                .ok_or_else(|| BackendError("the client is already shared".into()))?;
            shared.cache = Some(Arc::new(cache));
        }
        Ok(blobs)
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
}

impl S3Blobs {
    /// From the cache when it holds the blob whole (`len`: the blob's length, if known), else
    /// a GET, teed into the cache when it has room.
    fn open_cached(&self, sha256: &str, len: Option<u64>) -> io::Result<Box<dyn BlobRead>> {
        let Some(cache) = &self.shared.cache else {
            return Ok(Box::new(read::S3Reader::open(
                self.clone(),
                self.key(sha256),
            )?));
        };
        if let Some(file) = cache.get(sha256, len) {
            return Ok(Box::new(file));
        }
        let reader = read::S3Reader::open(self.clone(), self.key(sha256))?;
        Ok(match cache.fill(sha256, reader.len()) {
            Some(fill) => Box::new(cache::Teed::new(reader, fill)),
            None => Box::new(reader),
        })
    }
}

impl BlobStore for S3Blobs {
    fn persist(&self, staged: Staged) -> io::Result<()> {
        // Linked before the staged file goes with the put, in place only once the object is
        // in the bucket: a failed put caches nothing.
        let linked = self
            .shared
            .cache
            .as_ref()
            .and_then(|cache| cache.link(&staged.sha256, staged.len, staged.file.path()));
        self.put(staged)?;
        if let Some(linked) = linked {
            linked.commit();
        }
        Ok(())
    }

    fn sends_ahead(&self) -> bool {
        true
    }

    fn open(&self, sha256: &str) -> io::Result<Box<dyn BlobRead>> {
        self.open_cached(sha256, None)
    }

    fn open_sized(&self, sha256: &str, len: u64) -> io::Result<Box<dyn BlobRead>> {
        self.open_cached(sha256, Some(len))
    }

    fn remove(&self, sha256: &str) -> io::Result<()> {
        if let Some(cache) = &self.shared.cache {
            cache.remove(sha256);
        }
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

    fn serves_directly(&self) -> bool {
        self.shared.direct.is_some()
    }

    fn direct_url(
        &self,
        sha256: &str,
        answer: &super::direct::DirectAnswer,
    ) -> io::Result<Option<super::direct::DirectUrl>> {
        match &self.shared.direct {
            Some(direct) => self.direct(direct, sha256, answer),
            None => Ok(None),
        }
    }
}

/// The key of blob `sha256` under `prefix` (empty or ending in `/`).
pub fn object_key(prefix: &str, sha256: &str) -> Path {
    Path::from(format!(
        "{prefix}{}/{sha256}",
        sha256.get(..2).unwrap_or("00")
    ))
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
