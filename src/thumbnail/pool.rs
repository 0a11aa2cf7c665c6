//! Dedicated threads for image work, fed by a bounded queue, with a time budget per job.
//!
//! Separate from the HTTP workers and from tokio's blocking pool, so decoding can never starve
//! either. When the queue is full a job is refused at once (the caller answers 429).
//!
//! A decoder call cannot be interrupted from outside its thread, so the budget is enforced
//! around it: a watchdog thread answers the caller of a job that has run past its budget with
//! [`Refused::TimedOut`], and starts a new worker in place of the overrunning one, which exits
//! when its job finally returns. So a file that pins a decoder costs one thread for as long as
//! the decode runs, never the pool. Replacements are capped: at most `max_abandoned` overrunning
//! threads exist at once; past that an overrunning worker is not replaced (its caller is still
//! answered at the budget) and the pool runs short-handed until one finishes, so an attacker
//! cannot make it spawn threads without bound. The cost checks of `mxmedia-image`, before any
//! decoding, are what make overruns rare.

use std::{
    sync::{
        Arc, Mutex, PoisonError, Weak,
        atomic::{AtomicBool, AtomicUsize, Ordering},
        mpsc::{self, Receiver, SyncSender, TrySendError},
    },
    thread,
    time::{Duration, Instant},
};

use num_traits::ToPrimitive as _;
use tokio::sync::oneshot;

/// Why a job gave no value.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refused {
    /// The queue is full.
    Busy,
    /// The job ran past the time budget; it may still be running, unobserved.
    TimedOut(Duration),
    /// The job panicked, or the pool has stopped.
    Lost,
}

/// Answers a job's caller with a timeout.
type Expire = Box<dyn FnOnce() + Send>;

/// A queued job: `run` does the work and answers the caller; `expire` answers the caller with
/// a timeout instead. Whichever comes first answers; the other finds the answer gone.
struct Job {
    run: Box<dyn FnOnce() + Send>,
    expire: Expire,
}

/// What a worker is doing, seen by the watchdog.
#[derive(Default)]
struct Slot {
    /// Since when the current job runs, and how to answer its caller on expiry. Taken by the
    /// watchdog at expiry.
    running: Mutex<Option<(Instant, Expire)>>,
    /// Set by the watchdog when it started a replacement for this worker: the worker exits
    /// after its current job.
    replaced: AtomicBool,
}

struct Shared {
    receiver: Mutex<Receiver<Job>>,
    queued: AtomicUsize,
    budget: Duration,
    /// The workers that are not replaced.
    slots: Mutex<Vec<Arc<Slot>>>,
    /// Replaced workers still running their overrunning job.
    abandoned: AtomicUsize,
    max_abandoned: usize,
    spawned: AtomicUsize,
}

#[derive(Clone)]
pub struct Pool {
    sender: Arc<SyncSender<Job>>,
    shared: Arc<Shared>,
}

impl Pool {
    /// `workers` threads, `queue` waiting jobs, `budget` per job, and at most `max_abandoned`
    /// overrunning threads replaced at a time.
    pub fn new(workers: usize, queue: usize, budget: Duration, max_abandoned: usize) -> Self {
        let (sender, receiver) = mpsc::sync_channel::<Job>(queue.max(1));
        let shared = Arc::new(Shared {
            receiver: Mutex::new(receiver),
            queued: AtomicUsize::new(0),
            budget,
            slots: Mutex::new(Vec::new()),
            abandoned: AtomicUsize::new(0),
            max_abandoned,
            spawned: AtomicUsize::new(0),
        });
        for _ in 0..workers.max(1) {
            spawn_worker(&shared);
        }
        let sender = Arc::new(sender);
        let watched = (Arc::downgrade(&sender), Arc::clone(&shared));
        let watchdog = thread::Builder::new()
            .name("thumbnailer-watchdog".into())
            .spawn(move || watchdog(&watched.0, &watched.1));
        if let Err(e) = watchdog {
            tracing::error!(error = %e, "could not start the thumbnailer watchdog");
        }
        Self { sender, shared }
    }

    /// Runs `f` on a pool thread, answering `TimedOut` once it has run for the budget.
    pub async fn run<T, F>(&self, f: F) -> Result<T, Refused>
    where
        F: FnOnce() -> T + Send + 'static,
        T: Send + 'static,
    {
        let (tx, rx) = oneshot::channel::<Result<T, Refused>>();
        let answer = Arc::new(Mutex::new(Some(tx)));
        let late = Arc::clone(&answer);
        let budget = self.shared.budget;
        let job = Job {
            run: Box::new(move || {
                // A panic in `f` drops the sender unused; the caller then sees the job as lost,
                // and the thread lives.
                let value = std::panic::catch_unwind(std::panic::AssertUnwindSafe(f));
                if let (Ok(value), Some(tx)) = (value, take(&answer)) {
                    let _ = tx.send(Ok(value));
                }
            }),
            expire: Box::new(move || {
                if let Some(tx) = take(&late) {
                    let _ = tx.send(Err(Refused::TimedOut(budget)));
                }
            }),
        };
        self.shared.queued.fetch_add(1, Ordering::Relaxed);
        match self.sender.try_send(job) {
            Ok(()) => {}
            Err(TrySendError::Full(_)) => {
                self.shared.queued.fetch_sub(1, Ordering::Relaxed);
                return Err(Refused::Busy);
            }
            Err(TrySendError::Disconnected(_)) => {
                self.shared.queued.fetch_sub(1, Ordering::Relaxed);
                return Err(Refused::Lost);
            }
        }
        rx.await.unwrap_or(Err(Refused::Lost))
    }

    /// Threads started since the pool was made, replacements included.
    pub fn threads_started(&self) -> usize {
        self.shared.spawned.load(Ordering::Relaxed)
    }
}

fn take<T>(answer: &Mutex<Option<T>>) -> Option<T> {
    answer.lock().unwrap_or_else(PoisonError::into_inner).take()
}

fn spawn_worker(shared: &Arc<Shared>) {
    let slot = Arc::new(Slot::default());
    shared
        .slots
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .push(Arc::clone(&slot));
    let n = shared.spawned.fetch_add(1, Ordering::Relaxed);
    let worker = Arc::clone(shared);
    let spawned = thread::Builder::new()
        .name(format!("thumbnailer-{n}"))
        .spawn(move || work(&worker, &slot));
    if let Err(e) = spawned {
        tracing::error!(error = %e, "could not start a thumbnailer thread");
    }
}

fn work(shared: &Shared, slot: &Slot) {
    loop {
        // Hold the lock only to take a job, never while running it.
        let job = match shared.receiver.lock() {
            Ok(rx) => rx.recv(),
            Err(_) => return,
        };
        let Ok(job) = job else { return };
        let depth = shared
            .queued
            .fetch_sub(1, Ordering::Relaxed)
            .saturating_sub(1);
        metrics::gauge!("mxmedia_thumbnail_queue_depth").set(depth.to_f64().unwrap_or(f64::MAX));
        *slot.running.lock().unwrap_or_else(PoisonError::into_inner) =
            Some((Instant::now(), job.expire));
        (job.run)();
        slot.running
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take();
        if slot.replaced.load(Ordering::Acquire) {
            let left = shared
                .abandoned
                .fetch_sub(1, Ordering::AcqRel)
                .saturating_sub(1);
            metrics::gauge!("mxmedia_thumbnail_abandoned_threads")
                .set(left.to_f64().unwrap_or(f64::MAX));
            return;
        }
    }
}

/// Expires jobs past the budget and replaces their workers, until the pool is dropped.
fn watchdog(sender: &Weak<SyncSender<Job>>, shared: &Arc<Shared>) {
    let tick = (shared.budget / 20).clamp(Duration::from_millis(5), Duration::from_millis(250));
    while sender.strong_count() > 0 {
        thread::sleep(tick);
        let overrunning: Vec<Arc<Slot>> = shared
            .slots
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .iter()
            .filter(|slot| {
                slot.running
                    .lock()
                    .unwrap_or_else(PoisonError::into_inner)
                    .as_ref()
                    .is_some_and(|(started, _)| started.elapsed() >= shared.budget)
            })
            .cloned()
            .collect();
        for slot in overrunning {
            let Some((_, expire)) = slot
                .running
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .take()
            else {
                continue; // finished meanwhile
            };
            metrics::counter!("mxmedia_thumbnail_timeouts_total").increment(1);
            tracing::warn!(budget = ?shared.budget, "thumbnail job ran past its time budget");
            expire();
            replace(shared, &slot);
        }
    }
}

/// Starts a worker in place of `slot`'s, unless `max_abandoned` are already overrunning.
fn replace(shared: &Arc<Shared>, slot: &Arc<Slot>) {
    let claimed = shared
        .abandoned
        .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
            (n < shared.max_abandoned).then_some(n + 1)
        });
    let Ok(before) = claimed else {
        tracing::warn!(
            max = shared.max_abandoned,
            "too many overrunning thumbnail threads; not replacing one more"
        );
        return;
    };
    metrics::gauge!("mxmedia_thumbnail_abandoned_threads")
        .set((before + 1).to_f64().unwrap_or(f64::MAX));
    slot.replaced.store(true, Ordering::Release);
    shared
        .slots
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .retain(|s| !Arc::ptr_eq(s, slot));
    spawn_worker(shared);
}

#[cfg(test)]
mod tests {
    use std::{
        sync::mpsc,
        time::{Duration, Instant},
    };

    use super::{Pool, Refused};

    const LONG: Duration = Duration::from_secs(60);

    /// A full queue refuses new work at once instead of queueing forever.
    #[tokio::test]
    async fn full_queue_is_refused() {
        let pool = Pool::new(1, 1, LONG, 1);
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
        assert_eq!(pool.run(|| 3).await, Err(Refused::Busy));
        release.send(()).unwrap();
        assert!(blocked.await.unwrap().unwrap());
        assert_eq!(queued.await.unwrap().unwrap(), 2);
    }

    /// A panicking job fails alone; the worker keeps serving.
    #[tokio::test]
    async fn panic_does_not_kill_worker() {
        let pool = Pool::new(1, 4, LONG, 1);
        assert_eq!(pool.run(|| panic!("decoder bug")).await, Err(Refused::Lost));
        assert_eq!(pool.run(|| 5).await.unwrap(), 5);
    }

    /// A job past its budget is answered with a timeout at the budget, and its worker is
    /// replaced so the next job runs at once; at most `max_abandoned` are replaced, and a
    /// replaced worker leaves when its job ends instead of growing the pool.
    #[tokio::test]
    async fn overrun_is_answered_and_replaced() {
        let budget = Duration::from_millis(100);
        let pool = Pool::new(1, 8, budget, 2);
        let (release, wait) = mpsc::channel::<()>();
        let wait = std::sync::Arc::new(std::sync::Mutex::new(wait));
        let stuck = |wait: std::sync::Arc<std::sync::Mutex<mpsc::Receiver<()>>>| {
            move || {
                let _ = wait.lock().unwrap().recv();
            }
        };
        for _ in 0..2 {
            let started = Instant::now();
            let answer = pool.run(stuck(wait.clone())).await;
            assert_eq!(answer, Err(Refused::TimedOut(budget)));
            assert!(started.elapsed() < budget * 5, "{:?}", started.elapsed());
            let started = Instant::now();
            assert_eq!(pool.run(|| 7).await, Ok(7));
            assert!(started.elapsed() < budget, "a replacement took the job");
        }
        assert_eq!(pool.threads_started(), 3);
        // The cap is reached: a third overrun is answered but not replaced.
        let third = {
            let pool = pool.clone();
            let job = stuck(wait.clone());
            tokio::spawn(async move { pool.run(job).await })
        };
        assert_eq!(third.await.unwrap(), Err(Refused::TimedOut(budget)));
        tokio::time::sleep(budget).await;
        assert_eq!(pool.threads_started(), 3, "no thread past the cap");
        // Once the stuck jobs end, the replaced threads leave and a new overrun is replaced.
        for _ in 0..3 {
            release.send(()).unwrap();
        }
        tokio::time::sleep(budget).await;
        assert_eq!(pool.run(|| 8).await, Ok(8));
        assert_eq!(
            pool.run(stuck(wait.clone())).await,
            Err(Refused::TimedOut(budget))
        );
        tokio::time::sleep(budget).await;
        assert_eq!(pool.threads_started(), 4);
        release.send(()).unwrap();
    }
}
