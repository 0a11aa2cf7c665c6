//! Single flight: concurrent requests for the same key share one piece of work.
//!
//! The first caller for a key starts the work in a spawned task (so a caller that goes away does
//! not cancel it for the others); every caller for that key until the work finishes awaits the
//! same result. The task removes its entry when done, so a later caller starts afresh, and is
//! expected to find the result in the store by then. Used for thumbnails, remote media and URL
//! previews alike.
//!
//! The map only ever holds work in progress, so its size is the number of distinct keys being
//! worked on. Where the keys come from outsiders and the work costs something (key fetches,
//! token checks), `bounded` caps that number: past it, `try_run_local` refuses to start new work
//! (joining a flight already running is always allowed, it costs nothing more).

use std::{
    collections::HashMap,
    future::Future,
    hash::Hash,
    sync::{Arc, Mutex},
};

use futures_util::{
    FutureExt as _,
    future::{BoxFuture, Shared},
};

type Flight<V> = Shared<BoxFuture<'static, Result<V, Lost>>>;

/// The work task ended without a value (it panicked or the runtime is shutting down).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Lost;

/// New work was not started: as many keys as allowed are in flight, or `admit` said no.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Busy;

pub struct SingleFlight<K, V> {
    inflight: Arc<Mutex<HashMap<K, Flight<V>>>>,
    max_keys: usize,
}

impl<K, V> Default for SingleFlight<K, V> {
    fn default() -> Self {
        Self::bounded(usize::MAX)
    }
}

impl<K, V> SingleFlight<K, V> {
    /// At most `max_keys` distinct keys in flight through `try_run_local`.
    pub fn bounded(max_keys: usize) -> Self {
        Self {
            inflight: Arc::new(Mutex::new(HashMap::new())),
            max_keys,
        }
    }
}

impl<K, V> SingleFlight<K, V>
where
    K: Hash + Eq + Clone + Send + 'static,
    V: Clone + Send + Sync + 'static,
{
    /// Runs `work` for `key` unless it is already running; either way returns its result.
    /// The flag is true for the caller whose call started the work.
    pub async fn run<F, Fut>(&self, key: K, work: F) -> (Result<V, Lost>, bool)
    where
        F: FnOnce() -> Fut,
        Fut: Future<Output = V> + Send + 'static,
    {
        self.join(
            key,
            work,
            |_| Ok::<(), Busy>(()),
            |fut, done| {
                tokio::spawn(async move {
                    let _done = done;
                    fut.await
                })
            },
        )
        .await
        .unwrap_or((Err(Lost), false))
    }

    /// Like `run`, for work that must stay on the calling thread (awc's client is `!Send`):
    /// the work runs as a local task of this worker, and callers on other workers await its
    /// result all the same.
    pub async fn run_local<F, Fut>(&self, key: K, work: F) -> (Result<V, Lost>, bool)
    where
        F: FnOnce() -> Fut,
        Fut: Future<Output = V> + 'static,
    {
        self.join(key, work, |_| Ok::<(), Busy>(()), spawn_local)
            .await
            .unwrap_or((Err(Lost), false))
    }

    /// Like `run_local`, but new work starts only while fewer than the bound's keys are in
    /// flight and `admit` (asked only then, under the map's lock) agrees; otherwise `Busy`.
    /// Joining running work is never refused.
    pub async fn try_run_local<F, Fut>(
        &self,
        key: K,
        admit: impl FnOnce() -> bool,
        work: F,
    ) -> Result<(Result<V, Lost>, bool), Busy>
    where
        F: FnOnce() -> Fut,
        Fut: Future<Output = V> + 'static,
    {
        let max_keys = self.max_keys;
        let admit = |in_flight: usize| {
            if in_flight < max_keys && admit() {
                Ok(())
            } else {
                Err(Busy)
            }
        };
        self.join(key, work, admit, spawn_local).await
    }

    /// Like `run_local`, but a caller that would start the work must first pass `admit`; one
    /// that joins work already running never asks it. Refused, nothing starts and `admit`'s
    /// error is returned. (For rate limits that bound work started, not answers given.)
    pub async fn run_local_admitted<F, Fut, E>(
        &self,
        key: K,
        admit: impl FnOnce() -> Result<(), E>,
        work: F,
    ) -> Result<(Result<V, Lost>, bool), E>
    where
        F: FnOnce() -> Fut,
        Fut: Future<Output = V> + 'static,
    {
        self.join(key, work, |_| admit(), spawn_local).await
    }

    /// Joins the flight for `key`, or starts one with `spawn`, which must hold `Done` until the
    /// work ends, if `admit` agrees. `admit` is asked only by a caller that would start the work,
    /// under the map's lock (so no flight can start in between), with the number in flight.
    async fn join<F, Fut, E>(
        &self,
        key: K,
        work: F,
        admit: impl FnOnce(usize) -> Result<(), E>,
        spawn: impl FnOnce(Fut, Done<K, V>) -> tokio::task::JoinHandle<V>,
    ) -> Result<(Result<V, Lost>, bool), E>
    where
        F: FnOnce() -> Fut,
    {
        let (flight, leader) = {
            let Ok(mut map) = self.inflight.lock() else {
                return Ok((Err(Lost), false));
            };
            if let Some(flight) = map.get(&key) {
                // A waiter's work is never run: free what it holds now, not after the wait.
                let flight = flight.clone();
                drop(work);
                (flight, false)
            } else {
                admit(map.len())?;
                let done = Done(Arc::clone(&self.inflight), Some(key.clone()));
                let handle = spawn(work(), done);
                let flight: Flight<V> = async move { handle.await.map_err(|_| Lost) }
                    .boxed()
                    .shared();
                map.insert(key, flight.clone());
                (flight, true)
            }
        };
        Ok((flight.await, leader))
    }

    /// Keys with work in progress.
    pub fn len(&self) -> usize {
        self.inflight.lock().map(|m| m.len()).unwrap_or(0)
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

fn spawn_local<K: Hash + Eq + 'static, V: 'static, Fut>(
    fut: Fut,
    done: Done<K, V>,
) -> tokio::task::JoinHandle<V>
where
    Fut: Future<Output = V> + 'static,
{
    tokio::task::spawn_local(async move {
        let _done = done;
        fut.await
    })
}

/// Removes a flight's entry when its task ends, however it ends (a panic included), so a
/// later caller starts afresh instead of awaiting a flight that will never land.
struct Done<K: Hash + Eq, V>(Arc<Mutex<HashMap<K, Flight<V>>>>, Option<K>);

impl<K: Hash + Eq, V> Drop for Done<K, V> {
    fn drop(&mut self) {
        if let (Some(key), Ok(mut map)) = (self.1.take(), self.0.lock()) {
            map.remove(&key);
        }
    }
}

#[cfg(test)]
mod tests {
    use std::{
        sync::{
            Arc,
            atomic::{AtomicUsize, Ordering},
        },
        time::Duration,
    };

    use super::SingleFlight;

    /// A caller that joins a flight drops its own work (and what it holds) at once.
    #[tokio::test]
    async fn waiter_work_is_dropped_before_the_wait() {
        let flights = Arc::new(SingleFlight::<&'static str, u32>::default());
        let (release, wait) = tokio::sync::oneshot::channel::<()>();
        let leader = {
            let flights = flights.clone();
            tokio::spawn(async move {
                flights
                    .run("k", || async move {
                        let _ = wait.await;
                        7
                    })
                    .await
            })
        };
        tokio::time::sleep(Duration::from_millis(20)).await;
        let held = Arc::new(());
        let in_work = Arc::clone(&held);
        let waiter = {
            let flights = flights.clone();
            tokio::spawn(async move {
                flights
                    .run("k", move || async move {
                        drop(in_work);
                        8
                    })
                    .await
            })
        };
        tokio::time::sleep(Duration::from_millis(20)).await;
        assert_eq!(
            Arc::strong_count(&held),
            1,
            "dropped while the flight still runs"
        );
        release.send(()).unwrap();
        assert_eq!(waiter.await.unwrap().0.unwrap(), 7);
        assert_eq!(leader.await.unwrap().0.unwrap(), 7);
    }

    /// Fifty concurrent callers for one key cause one piece of work and all get its result.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn concurrent_callers_share_one_run() {
        let flights = Arc::new(SingleFlight::<&'static str, u32>::default());
        let runs = Arc::new(AtomicUsize::new(0));
        let mut tasks = Vec::new();
        for _ in 0..50 {
            let (flights, runs) = (flights.clone(), runs.clone());
            tasks.push(tokio::spawn(async move {
                flights
                    .run("k", || async move {
                        runs.fetch_add(1, Ordering::SeqCst);
                        tokio::time::sleep(Duration::from_millis(100)).await;
                        42
                    })
                    .await
            }));
        }
        let mut leaders = 0;
        for task in tasks {
            let (value, leader) = task.await.unwrap();
            assert_eq!(value, Ok(42));
            leaders += usize::from(leader);
        }
        assert_eq!(runs.load(Ordering::SeqCst), 1);
        assert_eq!(leaders, 1);
        assert!(flights.is_empty(), "entry removed when done");
    }

    /// A caller that gives up does not cancel the work for the others.
    #[tokio::test]
    async fn cancelled_leader_does_not_cancel_work() {
        let flights = Arc::new(SingleFlight::<u8, u8>::default());
        let leader = {
            let flights = flights.clone();
            tokio::spawn(async move {
                flights
                    .run(1, || async {
                        tokio::time::sleep(Duration::from_millis(100)).await;
                        7
                    })
                    .await
            })
        };
        tokio::time::sleep(Duration::from_millis(20)).await;
        leader.abort();
        let (value, started) = flights.run(1, || async { 0 }).await;
        assert_eq!((value, started), (Ok(7), false));
    }

    /// Once finished, the next call for the key runs the work again.
    #[tokio::test]
    async fn finished_work_is_not_reused() {
        let flights = SingleFlight::<u8, u8>::default();
        assert_eq!(flights.run(1, || async { 1 }).await, (Ok(1), true));
        assert_eq!(flights.run(1, || async { 2 }).await, (Ok(2), true));
    }

    /// A bounded map starts no more than its bound of distinct keys at once, still lets callers
    /// join running work, and has room again once work ends.
    #[tokio::test]
    async fn bounded_flights_refuse_new_keys_but_not_joiners() {
        let local = tokio::task::LocalSet::new();
        local
            .run_until(async {
                let flights = std::rc::Rc::new(SingleFlight::<u32, u32>::bounded(2));
                let (release, wait) = tokio::sync::watch::channel(false);
                let mut held = Vec::new();
                for key in 0..2 {
                    let (flights, mut wait) = (flights.clone(), wait.clone());
                    held.push(tokio::task::spawn_local(async move {
                        flights
                            .try_run_local(
                                key,
                                || true,
                                move || async move {
                                    let _ = wait.wait_for(|go| *go).await;
                                    key
                                },
                            )
                            .await
                    }));
                }
                tokio::task::yield_now().await;
                assert_eq!(flights.len(), 2);
                let refused = flights.try_run_local(9, || true, || async { 9 }).await;
                assert_eq!(refused, Err(super::Busy), "a third key is refused");
                let joiner = {
                    let flights = flights.clone();
                    tokio::task::spawn_local(async move {
                        flights.try_run_local(1, || false, || async { 99 }).await
                    })
                };
                tokio::task::yield_now().await;
                release.send(true).unwrap();
                assert_eq!(
                    joiner.await.unwrap(),
                    Ok((Ok(1), false)),
                    "joined, not refused"
                );
                for task in held {
                    assert!(task.await.unwrap().is_ok());
                }
                let refused = flights.try_run_local(9, || false, || async { 9 }).await;
                assert_eq!(refused, Err(super::Busy), "admit can refuse");
                let started = flights.try_run_local(9, || true, || async { 9 }).await;
                assert_eq!(started, Ok((Ok(9), true)), "room again once work ended");
            })
            .await;
    }
}
