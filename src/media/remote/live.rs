//! Remote media followed while it is fetched: the first request for an uncached file starts
//! one fetch as a task of its own, and it and every request for the same file meanwhile (the
//! waiters, joining at any time) are answered from the fetch's staging file as it fills.
//!
//! A reader reads the file by position through its own handle, a bounded piece at a time, and
//! only the bytes the fetch has written to disk, so memory per reader stays bounded whatever the
//! file's size and a slow reader slows nobody: the fetch never waits for a reader. The file's
//! last byte is handed out only once the fetch has committed it, so a fetch that fails midway,
//! or loses to an admin's removal, leaves every reader with a cut-off transfer, never a complete
//! file. A reader also stops as soon as the media is blocked, without waiting for the commit
//! (`Takedown`, on the cache's generation tickets). A disconnecting reader only drops its own
//! handle: the fetch goes on for the others.

use std::{
    collections::HashMap,
    fs::File,
    os::unix::fs::FileExt as _,
    sync::{Arc, Mutex},
};

use bytes::Bytes;
use futures_util::{StreamExt as _, stream::BoxStream};
use tokio::sync::{Notify, watch};

use crate::{
    error::{Error, Result},
    federation::media::{FetchFailure, Fetched},
    media::cache::{MediaCache, Ticket},
    model::{id::MediaKey, meta::Content},
    store::Store,
};

/// Bytes read from the staging file at once by one reader: its memory, whatever the file size.
const READ_SIZE: usize = 128 * 1024;

/// One fetch in flight, shared by its task and every request following it.
pub struct Live {
    state: watch::Sender<Progress>,
    /// Told when an admin removes the media: the fetch stops where it is.
    cancel: Notify,
}

#[derive(Clone, Default)]
struct Progress {
    /// Set once, when the media's bytes begin.
    body: Option<Arc<Body>>,
    /// Bytes of the staging file on disk.
    written: u64,
    /// Set once, when the fetch has ended: committed, or failed and stored nothing.
    outcome: Option<Result<Content, FetchFailure>>,
}

/// What the origin said the bytes are, and where they land.
pub struct Body {
    fetched: Fetched,
    len: Option<u64>,
    file: File,
}

/// How a fetch stands when a request looks at it.
pub(crate) enum Started {
    /// Its bytes are coming.
    Body(Arc<Body>),
    /// It ended before a request could follow its bytes.
    Done(Result<Content, FetchFailure>),
}

impl Live {
    fn new() -> Self {
        Self {
            state: watch::channel(Progress::default()).0,
            cancel: Notify::new(),
        }
    }

    /// Stops the fetch: its readers are cut off and nothing is stored.
    pub(super) fn cancel(&self) {
        self.cancel.notify_one();
    }

    /// The media's bytes begin, to be written to `file`.
    pub(super) fn begin(&self, fetched: Fetched, len: Option<u64>, file: File) {
        let body = Arc::new(Body { fetched, len, file });
        self.state.send_modify(|p| p.body = Some(body));
    }

    /// `written` bytes of the staging file are on disk.
    pub(super) fn wrote(&self, written: u64) {
        self.state.send_modify(|p| p.written = written);
    }

    fn end(&self, outcome: Result<Content, FetchFailure>) {
        self.state.send_modify(|p| p.outcome = Some(outcome));
    }

    /// Waits until the bytes begin or the fetch ends.
    pub(crate) async fn started(&self) -> Started {
        let mut progress = self.state.subscribe();
        loop {
            {
                let now = progress.borrow_and_update();
                if let Some(outcome) = &now.outcome {
                    return Started::Done(outcome.clone());
                }
                if let Some(body) = &now.body {
                    return Started::Body(Arc::clone(body));
                }
            }
            if progress.changed().await.is_err() {
                return Started::Done(Err(lost()));
            }
        }
    }

    /// Waits until the fetch ends.
    pub(crate) async fn outcome(&self) -> Result<Content, FetchFailure> {
        let mut progress = self.state.subscribe();
        match progress.wait_for(|p| p.outcome.is_some()).await {
            Ok(now) => now.outcome.clone().unwrap_or_else(|| Err(lost())),
            Err(_) => Err(lost()),
        }
    }
}

fn lost() -> FetchFailure {
    FetchFailure::Local("remote fetch task lost".into())
}

/// The fetches in flight, by flight key. Holds only work in progress: its size is the number of
/// distinct files being fetched.
#[derive(Default)]
pub(super) struct Flights(Arc<Mutex<HashMap<String, Arc<Live>>>>);

impl Flights {
    /// Joins the fetch for `key`, or starts `fetch` as a local task of this worker (awc's client
    /// is `!Send`). The flag is true for the caller that started it.
    pub(super) fn join<Fut>(
        &self,
        key: &str,
        fetch: impl FnOnce(Arc<Live>) -> Fut,
    ) -> (Arc<Live>, bool)
    where
        Fut: Future<Output = Result<Content, FetchFailure>> + 'static,
    {
        let Ok(mut map) = self.0.lock() else {
            let live = Arc::new(Live::new());
            live.end(Err(lost()));
            return (live, false);
        };
        if let Some(live) = map.get(key) {
            return (Arc::clone(live), false);
        }
        let live = Arc::new(Live::new());
        map.insert(key.to_owned(), Arc::clone(&live));
        let landing = Landing {
            flights: Arc::clone(&self.0),
            key: key.to_owned(),
            live: Arc::clone(&live),
            outcome: None,
        };
        let work = fetch(Arc::clone(&live));
        tokio::task::spawn_local(async move {
            let mut landing = landing;
            let outcome = tokio::select! {
                outcome = work => outcome,
                () = landing.live.cancel.notified() => Err(FetchFailure::NotFound),
            };
            landing.outcome = Some(outcome);
        });
        (live, true)
    }

    /// The fetch in flight for `key`, if any.
    pub(super) fn get(&self, key: &str) -> Option<Arc<Live>> {
        self.0.lock().ok()?.get(key).cloned()
    }
}

/// Ends a fetch however its task ends (a panic included): its outcome told to every reader,
/// then its entry removed, so a later request starts afresh (and finds the store filled).
struct Landing {
    flights: Arc<Mutex<HashMap<String, Arc<Live>>>>,
    key: String,
    live: Arc<Live>,
    outcome: Option<Result<Content, FetchFailure>>,
}

impl Drop for Landing {
    fn drop(&mut self) {
        self.live
            .end(self.outcome.take().unwrap_or_else(|| Err(lost())));
        if let Ok(mut map) = self.flights.lock()
            && map
                .get(&self.key)
                .is_some_and(|l| Arc::ptr_eq(l, &self.live))
        {
            map.remove(&self.key);
        }
    }
}

/// Cuts a reader off once an admin blocks its media. A forget anywhere makes the ticket stale;
/// only then is the store asked whether it was this media, and a fresh ticket taken.
pub(crate) struct Takedown {
    store: Store,
    cache: Arc<MediaCache>,
    key: MediaKey,
    ticket: Ticket,
}

impl Takedown {
    /// `ticket` was taken before the request looked at the store.
    pub(crate) fn new(store: Store, cache: Arc<MediaCache>, key: MediaKey, ticket: Ticket) -> Self {
        Self {
            store,
            cache,
            key,
            ticket,
        }
    }

    /// `NotFound` once the media is blocked.
    pub(crate) async fn check(&mut self) -> Result<()> {
        if !self.cache.stale(self.ticket) {
            return Ok(());
        }
        let fresh = self.cache.ticket();
        let key = self.key.clone();
        if self.store.blocking(move |s| s.is_withheld(&key)).await? {
            return Err(Error::NotFound);
        }
        self.ticket = fresh;
        Ok(())
    }
}

/// Remote media being fetched, as one request follows it.
pub struct LiveMedia {
    live: Arc<Live>,
    body: Arc<Body>,
    takedown: Takedown,
}

impl LiveMedia {
    pub(crate) fn new(live: Arc<Live>, body: Arc<Body>, takedown: Takedown) -> Self {
        Self {
            live,
            body,
            takedown,
        }
    }

    /// The type the origin declared, sanitised.
    pub fn content_type(&self) -> &str {
        &self.body.fetched.content_type
    }

    pub fn filename(&self) -> Option<&str> {
        self.body.fetched.filename.as_deref()
    }

    /// The length the origin declared, if it did (and the fetch holds it to it).
    pub fn declared_len(&self) -> Option<u64> {
        self.body.len
    }

    /// The bytes from `start` up to `end` (exclusive; `None`: to the end), as they arrive. The
    /// stream fails, and the transfer with it, when the fetch fails or the media is blocked.
    pub fn stream(self, start: u64, end: Option<u64>) -> BoxStream<'static, Result<Bytes>> {
        let follow = Follow {
            progress: self.live.state.subscribe(),
            body: self.body,
            takedown: self.takedown,
            pos: start,
            end,
        };
        futures_util::stream::try_unfold(follow, |mut follow| async move {
            Ok(follow.next().await?.map(|chunk| (chunk, follow)))
        })
        .boxed()
    }
}

struct Follow {
    progress: watch::Receiver<Progress>,
    body: Arc<Body>,
    takedown: Takedown,
    pos: u64,
    end: Option<u64>,
}

impl Follow {
    async fn next(&mut self) -> Result<Option<Bytes>> {
        loop {
            self.takedown.check().await?;
            let held_back_end = self.held_back_end();
            let (readable, done) = {
                let now = self.progress.borrow_and_update();
                match &now.outcome {
                    Some(Err(failure)) => return Err(Error::from(failure.clone())),
                    Some(Ok(content)) => (self.end.unwrap_or(content.len).min(content.len), true),
                    None => (now.written.min(held_back_end), false),
                }
            };
            if self.pos < readable {
                let want = usize::try_from(readable - self.pos)
                    .unwrap_or(READ_SIZE)
                    .min(READ_SIZE);
                let (body, pos) = (Arc::clone(&self.body), self.pos);
                let chunk = tokio::task::spawn_blocking(move || {
                    let mut buf = vec![0; want];
                    body.file.read_exact_at(&mut buf, pos).map(|()| buf)
                })
                .await
                .map_err(Error::internal)?
                .map_err(Error::internal)?;
                self.pos += u64::try_from(chunk.len()).unwrap_or(u64::MAX);
                return Ok(Some(Bytes::from(chunk)));
            }
            if done {
                if self.end.is_some_and(|end| self.pos < end) {
                    return Err(Error::internal(
                        "remote media shorter than its declared length",
                    ));
                }
                return Ok(None);
            }
            if self.progress.changed().await.is_err() {
                return Err(Error::from(lost()));
            }
        }
    }

    /// Where reading stops while the fetch runs: the file's last byte waits for the commit.
    fn held_back_end(&self) -> u64 {
        let end = self.end.unwrap_or(u64::MAX);
        match self.body.len {
            Some(len) if end < len => end,
            _ => end.min(self.body.len.unwrap_or(u64::MAX)).saturating_sub(1),
        }
    }
}
