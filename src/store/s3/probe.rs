//! The bucket check that start-up and `mxmedia check-config` make: a probe object is put, read
//! back and deleted, and a failure says which of the usual mistakes it is (no such host,
//! nothing listening, wrong key, no such bucket, wrong region), not only what S3 answered.

use std::{fmt, time::SystemTime};

use bytes::Bytes;
use object_store::{ObjectStoreExt as _, PutPayload, path::Path};

use super::S3Blobs;

/// What is wrong with the configured bucket.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Problem {
    /// The endpoint's host name does not resolve.
    Dns,
    /// Nothing accepts connections at the endpoint.
    Refused,
    /// The endpoint accepted the connection but did not answer in time.
    Timeout,
    /// The key is unknown, its secret wrong, or it may not use the bucket (401/403).
    Denied,
    /// The bucket does not exist.
    NoSuchBucket,
    /// Requests are signed for a region the endpoint is not.
    WrongRegion,
    /// The probe read back differs from what was written.
    Mismatch,
    /// Anything else; the detail says what.
    Other,
}

/// A failed bucket check, for the operator.
#[derive(Debug)]
pub struct CheckError {
    pub problem: Problem,
    pub bucket: String,
    pub step: &'static str,
    pub detail: String,
}

impl fmt::Display for CheckError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let what = match self.problem {
            Problem::Dns => {
                "the endpoint's host name does not resolve (check MXMEDIA_STORE__S3__ENDPOINT)"
            }
            Problem::Refused => {
                "connection refused: nothing listens at MXMEDIA_STORE__S3__ENDPOINT (is the S3 \
                 server running, is the port right?)"
            }
            Problem::Timeout => "the S3 endpoint did not answer in time",
            Problem::Denied => {
                "access denied (401/403): check MXMEDIA_STORE__S3__ACCESS_KEY_ID and its secret, \
                 and that the key may read and write the bucket; a key allowed only its own \
                 bucket is denied any other, so check MXMEDIA_STORE__S3__BUCKET too"
            }
            Problem::NoSuchBucket => "no such bucket (check MXMEDIA_STORE__S3__BUCKET)",
            Problem::WrongRegion => {
                "wrong region: the endpoint expects another MXMEDIA_STORE__S3__REGION"
            }
            Problem::Mismatch => "the probe object read back differs from what was written",
            Problem::Other => "the S3 request failed",
        };
        write!(
            f,
            "S3 bucket `{}` is not usable ({} of a probe object): {what}: {}",
            self.bucket, self.step, self.detail
        )
    }
}

impl std::error::Error for CheckError {}

impl S3Blobs {
    /// Puts, reads back and deletes a probe object: the bucket is reachable and writable.
    pub fn check(&self) -> Result<(), CheckError> {
        let nanos = SystemTime::now()
            .duration_since(SystemTime::UNIX_EPOCH)
            .unwrap_or_default()
            .as_nanos();
        // Not a blob key (`<2 hex>/<sha256>`), so a sweep never mistakes it for one.
        let key = Path::from(format!(
            "{}mxmedia-probe-{}-{nanos}",
            self.shared.prefix,
            std::process::id()
        ));
        let body = Bytes::from_static(b"mxmedia bucket probe");
        let fail = |step, problem, detail: String| CheckError {
            problem,
            bucket: self.shared.bucket.clone(),
            step,
            detail,
        };
        let deadline = self.shared.op_deadline;
        let store = self.client();
        let (target, payload) = (key.clone(), PutPayload::from(body.clone()));
        self.run(async move { tokio::time::timeout(deadline, store.put(&target, payload)).await })
            .map_err(|e| fail("put", Problem::Other, e.to_string()))?
            .map_err(|_| fail("put", Problem::Timeout, format!("{}s", deadline.as_secs())))?
            .map_err(|e| fail("put", classify(&e), chain(&e)))?;
        let store = self.client();
        let target = key.clone();
        let read = self
            .run(async move {
                tokio::time::timeout(deadline, async { store.get(&target).await?.bytes().await })
                    .await
            })
            .map_err(|e| fail("get", Problem::Other, e.to_string()))?
            .map_err(|_| fail("get", Problem::Timeout, format!("{}s", deadline.as_secs())))?
            .map_err(|e| fail("get", classify(&e), chain(&e)))?;
        if read != body {
            return Err(fail(
                "get",
                Problem::Mismatch,
                format!("{} bytes instead of {}", read.len(), body.len()),
            ));
        }
        let store = self.client();
        self.run(async move { tokio::time::timeout(deadline, store.delete(&key)).await })
            .map_err(|e| fail("delete", Problem::Other, e.to_string()))?
            .map_err(|_| {
                fail(
                    "delete",
                    Problem::Timeout,
                    format!("{}s", deadline.as_secs()),
                )
            })?
            .map_err(|e| fail("delete", classify(&e), chain(&e)))?;
        Ok(())
    }
}

/// Which usual mistake an error shows. object_store keeps the HTTP status and S3's error code
/// only in its messages, so they are read from the whole chain of causes.
fn classify(err: &object_store::Error) -> Problem {
    let text = chain(err);
    let has = |needle: &str| text.contains(needle);
    if let object_store::Error::PermissionDenied { .. }
    | object_store::Error::Unauthenticated { .. } = err
    {
        return if has("region") || has("AuthorizationHeaderMalformed") {
            Problem::WrongRegion
        } else {
            Problem::Denied
        };
    }
    if has("NoSuchBucket") || has("bucket does not exist") {
        Problem::NoSuchBucket
    } else if has("AuthorizationHeaderMalformed")
        || has("IllegalLocationConstraint")
        || has("PermanentRedirect")
        || has("incorrectly configured region")
        || has("region")
    {
        Problem::WrongRegion
    } else if has("InvalidAccessKeyId")
        || has("SignatureDoesNotMatch")
        || has("AccessDenied")
        || has("403 Forbidden")
    {
        Problem::Denied
    } else if has("dns error") || has("failed to lookup address") {
        Problem::Dns
    } else if has("Connection refused") || has("connection refused") {
        Problem::Refused
    } else if has("timed out") || has("Timeout") {
        Problem::Timeout
    } else if let object_store::Error::NotFound { .. } = err {
        // A 404 on a put: the bucket, not the key, is missing.
        Problem::NoSuchBucket
    } else {
        Problem::Other
    }
}

/// An error with all its causes, one line.
pub(super) fn chain(err: &(dyn std::error::Error + 'static)) -> String {
    let mut text = err.to_string();
    let mut source = err.source();
    while let Some(cause) = source {
        let more = cause.to_string();
        if !text.contains(&more) {
            text.push_str(": ");
            text.push_str(&more);
        }
        source = cause.source();
    }
    text
}
