//! Moving one blob between two backends: streamed from the source through a staging file in
//! the data dir while hashed, refused unless the hash and length are the ones its record
//! names, persisted in the target as any upload is, and checked there by its length.
//!
//! A blob is written to the target only after its bytes were verified, and both backends make
//! a blob visible only once it is whole (a rename after fsync; a completed S3 put), so a blob
//! present in the target with its record's length is a verified copy: a rerun skips it,
//! having asked the target for the length only (`BlobStore::len`: a HEAD, not a GET).

use std::{
    io::{self, Read},
    path::Path,
};

use crate::store::{
    backends::FileBlob,
    blob::{BlobStore, CHUNK_SIZE, Staging},
};

/// What became of one blob.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Outcome {
    /// The target already had it.
    AlreadyThere,
    /// Copied and verified (or, in a dry run, would be).
    Copied,
    /// Not copied, and why.
    Failed(String),
}

/// The length of `sha256` in `store`, or `None` when it is not there: a HEAD in a bucket, a
/// `stat` on disk, so a rerun over blobs already copied reads none of their bytes.
pub(crate) fn stored_len(store: &dyn BlobStore, sha256: &str) -> io::Result<Option<u64>> {
    store.len(sha256)
}

/// Copies `blob` from `source` to `target` unless the target has it; with `tmp_dir` `None`
/// (a dry run) only says what would happen, reading nothing but lengths.
pub(crate) fn copy_blob(
    source: &dyn BlobStore,
    target: &dyn BlobStore,
    tmp_dir: Option<&Path>,
    blob: &FileBlob,
) -> Outcome {
    match copy_or_fail(source, target, tmp_dir, blob) {
        Ok(outcome) => outcome,
        Err(e) => Outcome::Failed(e.to_string()),
    }
}

fn copy_or_fail(
    source: &dyn BlobStore,
    target: &dyn BlobStore,
    tmp_dir: Option<&Path>,
    blob: &FileBlob,
) -> io::Result<Outcome> {
    let FileBlob { sha256, len } = blob;
    if stored_len(target, sha256).map_err(|e| context("checking the target", e))? == Some(*len) {
        return Ok(Outcome::AlreadyThere);
    }
    let Some(tmp_dir) = tmp_dir else {
        return Ok(
            match source
                .len(sha256)
                .map_err(|e| context("checking the source", e))?
            {
                None => Outcome::Failed(MISSING.to_owned()),
                Some(found) if found == *len => Outcome::Copied,
                Some(found) => Outcome::Failed(format!(
                    "the source holds {found} bytes, its record says {len}"
                )),
            },
        );
    };
    let mut reader = match source.open(sha256) {
        Ok(reader) => reader,
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            return Ok(Outcome::Failed(MISSING.to_owned()));
        }
        Err(e) => return Err(context("opening it in the source", e)),
    };
    let mut staging = Staging::new(tmp_dir).map_err(|e| context("staging", e))?;
    let mut buf = vec![0u8; CHUNK_SIZE];
    loop {
        let n = match reader.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(context("reading the source", e)),
        };
        staging
            .write(buf.get(..n).unwrap_or_default())
            .map_err(|e| context("staging", e))?;
    }
    drop(reader);
    let staged = staging.finish().map_err(|e| context("staging", e))?;
    if staged.sha256 != *sha256 || staged.len != *len {
        let found = format!(
            "the source's bytes are corrupt: {} bytes hashing to {}, its record says {len} \
             bytes; not copied",
            staged.len, staged.sha256
        );
        // Dropping the staged file removes it.
        drop(staged);
        return Ok(Outcome::Failed(found));
    }
    target
        .persist(staged)
        .map_err(|e| context("writing to the target", e))?;
    match stored_len(target, sha256).map_err(|e| context("checking the copy", e))? {
        Some(found) if found == *len => Ok(Outcome::Copied),
        found => Ok(Outcome::Failed(format!(
            "the target holds {} after the copy, expected {len} bytes",
            found.map_or_else(|| "nothing".to_owned(), |n| format!("{n} bytes"))
        ))),
    }
}

const MISSING: &str = "missing in the source (and not in the target)";

fn context(what: &str, e: io::Error) -> io::Error {
    io::Error::new(e.kind(), format!("{what}: {e}"))
}

#[cfg(test)]
#[allow(clippy::unwrap_used, reason = "test code")]
mod tests {
    use std::fs;

    use super::*;
    use crate::store::blob::{FileBlobs, file_path};

    fn put(store: &dyn BlobStore, tmp: &Path, bytes: &[u8]) -> FileBlob {
        let mut staging = Staging::new(tmp).unwrap();
        staging.write(bytes).unwrap();
        let staged = staging.finish().unwrap();
        let blob = FileBlob {
            sha256: staged.sha256.clone(),
            len: staged.len,
        };
        store.persist(staged).unwrap();
        blob
    }

    /// A blob is copied byte for byte, a second copy is skipped, and a source whose bytes do
    /// not match their hash is reported and leaves nothing in the target.
    #[test]
    fn copies_verified_blobs_once_and_refuses_corrupt_ones() {
        let dir = tempfile::tempdir().unwrap();
        let tmp = dir.path().join("tmp");
        fs::create_dir_all(&tmp).unwrap();
        let source = FileBlobs::open(dir.path().join("from")).unwrap();
        let target = FileBlobs::open(dir.path().join("to")).unwrap();
        let bytes: Vec<u8> = (0..(3 * CHUNK_SIZE + 17))
            .map(|i| u8::try_from(i % 251).unwrap())
            .collect();
        let good = put(&source, &tmp, &bytes);
        let bad = put(&source, &tmp, b"these bytes will rot");

        assert_eq!(
            copy_blob(&source, &target, Some(&tmp), &good),
            Outcome::Copied
        );
        let copied = fs::read(file_path(&dir.path().join("to"), &good.sha256)).unwrap();
        assert_eq!(copied, bytes);
        assert_eq!(
            copy_blob(&source, &target, Some(&tmp), &good),
            Outcome::AlreadyThere
        );

        fs::write(
            file_path(&dir.path().join("from"), &bad.sha256),
            b"these bytes have rot",
        )
        .unwrap();
        let Outcome::Failed(why) = copy_blob(&source, &target, Some(&tmp), &bad) else {
            panic!("a corrupt source blob was copied");
        };
        assert!(why.contains("corrupt"), "{why}");
        assert_eq!(stored_len(&target, &bad.sha256).unwrap(), None);
        // No staging file is left behind.
        assert_eq!(fs::read_dir(&tmp).unwrap().count(), 0);
    }
}
