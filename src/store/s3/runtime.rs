//! Where S3 requests run: a small runtime of mxmedia's own, waited on from any thread over a
//! plain channel, and every request measured (requests, errors, latency by operation) and
//! bounded by a deadline.

use std::{
    future::Future,
    io,
    time::{Duration, Instant},
};

use super::{BackendError, Shared, probe};

/// The runtime S3 requests run on. Shut down without waiting when the store goes, which may
/// be inside another runtime (where dropping one would panic).
pub(super) struct Runtime(pub(super) Option<tokio::runtime::Runtime>);

impl Drop for Runtime {
    fn drop(&mut self) {
        if let Some(runtime) = self.0.take() {
            runtime.shutdown_background();
        }
    }
}

pub(super) fn run_on<T: Send + 'static>(
    shared: &Shared,
    fut: impl Future<Output = T> + Send + 'static,
) -> io::Result<T> {
    let handle = spawn_on(shared, fut)?;
    wait(handle)
}

/// A task on the S3 runtime, whose result `wait` collects.
pub(super) type Task<T> = std::sync::mpsc::Receiver<T>;

pub(super) fn spawn_on<T: Send + 'static>(
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

/// A task on the S3 runtime awaited from another runtime (an upload's, on an actix worker):
/// the caller's task waits without blocking its thread.
pub(super) fn spawn_async<T: Send + 'static>(
    shared: &Shared,
    fut: impl Future<Output = T> + Send + 'static,
) -> io::Result<tokio::sync::oneshot::Receiver<T>> {
    let runtime = shared
        .runtime
        .0
        .as_ref()
        .ok_or_else(|| io::Error::other(BackendError("the S3 runtime is shut down".into())))?;
    let (tx, rx) = tokio::sync::oneshot::channel();
    runtime.spawn(async move {
        let _ = tx.send(fut.await);
    });
    Ok(rx)
}

/// Awaits a task of `spawn_async`.
pub(super) async fn join<T>(task: tokio::sync::oneshot::Receiver<T>) -> io::Result<T> {
    task.await
        .map_err(|_| io::Error::other(BackendError("an S3 request was lost".into())))
}

/// Waits on a plain channel, not tokio's, so that any thread may wait.
pub(super) fn wait<T>(task: Task<T>) -> io::Result<T> {
    task.recv()
        .map_err(|_| io::Error::other(BackendError("an S3 request was lost".into())))
}

/// Runs one request with its metrics: requests, errors and latency by operation.
pub(super) async fn measured<T>(
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

pub(super) fn backend_error(op: &str, message: &str) -> io::Error {
    io::Error::other(BackendError(format!("{op}: {message}")))
}

/// An `object_store` error as the store sees it: a missing object is `NotFound` (as a missing
/// file is), anything else the backend's failure, with its whole cause chain for the log.
pub(super) fn from_object_store(op: &str, err: object_store::Error) -> io::Error {
    if let object_store::Error::NotFound { .. } = err {
        return io::Error::new(io::ErrorKind::NotFound, err);
    }
    backend_error(op, &probe::chain(&err))
}
