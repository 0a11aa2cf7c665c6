//! One fetch from an origin, owned by the task that runs it so it outlives the request that
//! started it: the bytes spooled to a staging file, then committed (hashed, content-addressed,
//! deduplicated) only once complete, and a failure remembered.

use std::{sync::Arc, time::Instant};

use super::{
    failures::{FailureCache, reason},
    live::Live,
    stored,
};
use crate::{
    clock::now_ms,
    error::{Error, Result},
    federation::media::{Announce, ApiMemory, FetchFailure, Fetched, MediaClient, Wanted},
    model::{
        id::MediaKey,
        meta::{Content, MediaMeta, MediaState},
        thumb::ThumbSpec,
    },
    store::{Expect, Store, StoreError, ThumbRecord, Upload, space::DiskBudget, spool::Spool},
};

/// One fetch, owned by the task that runs it.
pub(super) struct Job {
    pub(super) store: Store,
    pub(super) client: MediaClient,
    pub(super) apis: Arc<ApiMemory>,
    pub(super) failures: Arc<FailureCache>,
    pub(super) key: MediaKey,
    pub(super) flight: String,
    pub(super) timeout_ms: u64,
    pub(super) max_size: u64,
    pub(super) budget: DiskBudget,
}

impl Job {
    /// Runs `fetch`, counting it and remembering its failure.
    pub(super) async fn run<T, F, Fut>(self, fetch: F) -> Result<T, FetchFailure>
    where
        F: FnOnce(Job) -> Fut,
        Fut: Future<Output = Result<T, FetchFailure>>,
    {
        let (failures, flight, key) = (
            Arc::clone(&self.failures),
            self.flight.clone(),
            self.key.clone(),
        );
        let started = Instant::now();
        let result = fetch(self).await;
        metrics::histogram!("mxmedia_remote_fetch_duration_seconds")
            .record(started.elapsed().as_secs_f64());
        if let Err(failure) = &result {
            tracing::warn!(media = %key, ?failure, "remote fetch failed");
            metrics::counter!("mxmedia_remote_fetch_failures_total", "reason" => reason(failure))
                .increment(1);
            failures.put(flight, failure.clone());
        }
        result
    }

    async fn spool(&self) -> Result<Spool, FetchFailure> {
        // Already below the floor: do not ask the origin at all. The bytes that arrive are
        // reserved as they come (`Spool::write`).
        self.budget.check(0).await.map_err(|e| match e {
            StoreError::NoSpace => FetchFailure::NoSpace,
            other => local(other),
        })?;
        let staging = self.store.blocking(Store::stage).await.map_err(local)?;
        Ok(Spool::new(
            staging,
            self.max_size,
            self.budget.reservation(),
        ))
    }

    async fn fetch(
        &self,
        spool: &mut Spool,
        wanted: Wanted,
        announce: Option<Announce>,
    ) -> Result<Fetched, FetchFailure> {
        metrics::counter!("mxmedia_remote_fetches_total").increment(1);
        let fetched = self
            .client
            .fetch(
                &self.apis,
                &self.key.server_name,
                &self.key.media_id,
                wanted,
                self.timeout_ms,
                spool,
                announce,
            )
            .await?;
        metrics::counter!("mxmedia_remote_fetch_bytes_total").increment(spool.len());
        Ok(fetched)
    }
}

/// Fetches an original, letting `live`'s readers follow its bytes as they land.
pub(super) async fn fetch_original(job: Job, live: Arc<Live>) -> Result<Content, FetchFailure> {
    // Claim, then re-check: a fetch that ended just before this one began has stored the file.
    if let Some(content) = stored(&job.store, &job.key).await.map_err(local)? {
        return Ok(content);
    }
    let mut spool = job.spool().await?;
    let file = spool.reader().map_err(local)?;
    let follow = Arc::clone(&live);
    spool.on_flush(move |written| follow.wrote(written));
    let announce: Announce = Box::new(move |fetched: &Fetched, len: Option<u64>| {
        live.begin(fetched.clone(), len, file);
    });
    let fetched = match job
        .fetch(&mut spool, Wanted::Download, Some(announce))
        .await
    {
        Ok(fetched) => fetched,
        Err(failure) => {
            // Readers may still hold the file for a moment: free its space now.
            spool.discard().await;
            return Err(failure);
        }
    };
    let staged = spool.finish().await.map_err(local)?;
    let key = job.key.clone();
    job.store
        .blocking(move |s| {
            let upload = Upload {
                content_type: fetched.content_type,
                filename: fetched.filename,
                uploader: key.server_name.as_str(),
                created_at: now_ms(),
                expect: Expect::Absent,
            };
            // Blocked: an admin blocked the id while we fetched; the store kept nothing.
            match s.commit_upload(&key, staged, upload) {
                Ok(()) | Err(StoreError::Exists) => {}
                Err(e) => return Err(e),
            }
            // Quarantined bytes are quarantined as they are stored: never served.
            match s.get_servable_meta(&key)? {
                Some(MediaMeta {
                    state: MediaState::Complete(content),
                    ..
                }) => Ok(content),
                // Deleted right after it was stored, or quarantined.
                _ => Err(StoreError::NotFound),
            }
        })
        .await
        .map_err(committed)
}

pub(super) async fn fetch_thumbnail(
    job: Job,
    spec: ThumbSpec,
) -> Result<ThumbRecord, FetchFailure> {
    let thumb_key = job.flight.clone();
    let lookup = thumb_key.clone();
    if let Some(record) = job
        .store
        .blocking(move |s| s.get_thumbnail(&lookup))
        .await
        .map_err(local)?
    {
        return Ok(record);
    }
    let mut spool = job.spool().await?;
    let fetched = job.fetch(&mut spool, Wanted::Thumbnail(spec), None).await?;
    if !fetched.content_type.starts_with("image/") {
        return Err(FetchFailure::Remote(format!(
            "thumbnail is {}, not an image",
            fetched.content_type
        )));
    }
    let staged = spool.finish().await.map_err(local)?;
    let key = job.key.clone();
    job.store
        .blocking(move |s| {
            let record = s.commit_thumbnail(&thumb_key, staged, &fetched.content_type)?;
            // Bytes on the quarantine list quarantined the media as they were stored (kept for
            // review): this thumbnail is never served, as a fetched original would not be.
            if s.is_withheld(&key)? {
                return Err(StoreError::NotFound);
            }
            Ok(record)
        })
        .await
        .map_err(committed)
}

/// A commit that lost to a deletion or block answers as missing media does.
fn committed(err: impl Into<Error>) -> FetchFailure {
    match err.into() {
        Error::NotFound => FetchFailure::NotFound,
        other => local(other),
    }
}

fn local(err: impl std::fmt::Display) -> FetchFailure {
    FetchFailure::Local(err.to_string())
}
