//! Dedicated threads for image work, fed by a bounded queue.
//!
//! Separate from the HTTP workers and from tokio's blocking pool, so decoding can never starve
//! either. When the queue is full a job is refused at once (the caller answers 429).

use std::{
    sync::{
        Arc, Mutex,
        atomic::{AtomicUsize, Ordering},
        mpsc::{self, SyncSender, TrySendError},
    },
    thread,
};

use tokio::sync::oneshot;

use crate::error::{Error, Result};

type Job = Box<dyn FnOnce() + Send>;

#[derive(Clone)]
pub struct Pool {
    sender: SyncSender<Job>,
    queued: Arc<AtomicUsize>,
}

impl Pool {
    pub fn new(workers: usize, queue: usize) -> Self {
        let (sender, receiver) = mpsc::sync_channel::<Job>(queue.max(1));
        let receiver = Arc::new(Mutex::new(receiver));
        let queued = Arc::new(AtomicUsize::new(0));
        for i in 0..workers.max(1) {
            let receiver = Arc::clone(&receiver);
            let queued = Arc::clone(&queued);
            let spawned = thread::Builder::new()
                .name(format!("thumbnailer-{i}"))
                .spawn(move || {
                    loop {
                        // Hold the lock only to take a job, never while running it.
                        let job = match receiver.lock() {
                            Ok(rx) => rx.recv(),
                            Err(_) => return,
                        };
                        let Ok(job) = job else { return };
                        let depth = queued.fetch_sub(1, Ordering::Relaxed).saturating_sub(1);
                        #[allow(clippy::cast_precision_loss)]
                        metrics::gauge!("mxmedia_thumbnail_queue_depth").set(depth as f64);
                        job();
                    }
                });
            if let Err(e) = spawned {
                tracing::error!(error = %e, "could not start a thumbnailer thread");
            }
        }
        Self { sender, queued }
    }

    /// Runs `f` on a pool thread. `RateLimited` when the queue is full.
    pub async fn run<T, F>(&self, f: F) -> Result<T>
    where
        F: FnOnce() -> T + Send + 'static,
        T: Send + 'static,
    {
        let (tx, rx) = oneshot::channel();
        let job: Job = Box::new(move || {
            // A panic in `f` drops `tx`; the caller then sees the job as lost, and the thread lives.
            if let Ok(value) = std::panic::catch_unwind(std::panic::AssertUnwindSafe(f)) {
                let _ = tx.send(value);
            }
        });
        self.queued.fetch_add(1, Ordering::Relaxed);
        match self.sender.try_send(job) {
            Ok(()) => {}
            Err(TrySendError::Full(_)) => {
                self.queued.fetch_sub(1, Ordering::Relaxed);
                return Err(Error::RateLimited {
                    retry_after: super::RETRY_AFTER,
                });
            }
            Err(TrySendError::Disconnected(_)) => {
                self.queued.fetch_sub(1, Ordering::Relaxed);
                return Err(Error::internal(anyhow::anyhow!("thumbnailer pool stopped")));
            }
        }
        rx.await
            .map_err(|_| Error::internal(anyhow::anyhow!("thumbnail job failed")))
    }
}

#[cfg(test)]
mod tests {
    use std::{sync::mpsc, time::Duration};

    use super::Pool;

    /// A full queue refuses new work at once instead of queueing forever.
    #[tokio::test]
    async fn full_queue_is_refused() {
        let pool = Pool::new(1, 1);
        let (release, wait) = mpsc::channel::<()>();
        let blocked = {
            let pool = pool.clone();
            tokio::spawn(async move { pool.run(move || wait.recv().is_ok()).await })
        };
        tokio::time::sleep(Duration::from_millis(50)).await;
        let queued = {
            let pool = pool.clone();
            tokio::spawn(async move { pool.run(|| 2).await })
        };
        tokio::time::sleep(Duration::from_millis(50)).await;
        let refused = pool.run(|| 3).await;
        assert_eq!(refused.err().map(|e| e.errcode()), Some("M_LIMIT_EXCEEDED"));
        release.send(()).unwrap();
        assert!(blocked.await.unwrap().unwrap());
        assert_eq!(queued.await.unwrap().unwrap(), 2);
    }

    /// A panicking job fails alone; the worker keeps serving.
    #[tokio::test]
    async fn panic_does_not_kill_worker() {
        let pool = Pool::new(1, 4);
        assert!(pool.run(|| panic!("decoder bug")).await.is_err());
        assert_eq!(pool.run(|| 5).await.unwrap(), 5);
    }
}
