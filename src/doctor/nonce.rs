//! The doctor nonce: how a running mxmedia recognises the requests of `mxmedia doctor` and
//! answers them with what it saw, revealing nothing to anyone else.
//!
//! `mxmedia doctor` writes a fresh random nonce, with an expiry a few minutes ahead, to
//! `doctor.nonce` in the data dir (mode 0600, so only the service user and root can read or
//! write it) and sends it in the `X-Mxmedia-Doctor` header through the public URL. A server
//! whose data dir holds that very nonce adds an `X-Mxmedia-Doctor-Echo` header to its answer:
//! the `Host`, `X-Forwarded-For` and `X-Forwarded-Proto` it received. Any other value, an expired
//! nonce or no nonce file at all changes nothing in the answer, so outsiders learn nothing, and
//! an echo proves the answer came from the mxmedia serving this data dir (not the homeserver,
//! not another instance). The command removes the file when it ends.
//!
//! The same nonce, inside the signed request target, lets the doctor's federation request to
//! our own server pass the refusal of requests claiming our server name (see
//! `http::federation`): only someone who can write the data dir can make one, and the
//! signature binds it to that one request.

use std::{
    io::Write as _,
    path::{Path, PathBuf},
    time::Duration,
};

use sha2::{Digest as _, Sha256};

/// The nonce file's name in the data dir.
pub const FILE_NAME: &str = "doctor.nonce";
/// The request header carrying the nonce.
pub const HEADER: &str = "x-mxmedia-doctor";
/// The response header carrying what the server saw, for the nonce's holder only.
pub const ECHO_HEADER: &str = "x-mxmedia-doctor-echo";
/// The query parameter carrying the nonce in the doctor's signed federation request.
pub const QUERY_PARAM: &str = "mxmedia_doctor";
/// How long a nonce is honoured: longer than any doctor run, short enough that a leaked nonce
/// (it travels through the proxy, and to the homeserver when a path is misrouted) soon is
/// worthless.
pub const LIFETIME: Duration = Duration::from_secs(300);
/// Length of a nonce: 32 random bytes as hex.
const NONCE_LEN: usize = 64;
/// Longest nonce file read: a nonce, a timestamp and a little slack.
const MAX_FILE: u64 = 256;

/// The nonce file of one data dir.
#[derive(Debug, Clone)]
pub struct NonceFile {
    path: PathBuf,
}

impl NonceFile {
    pub fn in_data_dir(data_dir: &Path) -> Self {
        Self {
            path: data_dir.join(FILE_NAME),
        }
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Writes a fresh nonce valid until `now_ms + LIFETIME` and returns it. Written under a
    /// temporary name with mode 0600 and renamed, so the server never reads half a file.
    pub fn create(&self, now_ms: u64) -> std::io::Result<String> {
        use std::os::unix::fs::OpenOptionsExt as _;
        let nonce = hex::encode(rand::random::<[u8; 32]>());
        let expires = now_ms.saturating_add(u64::try_from(LIFETIME.as_millis()).unwrap_or(0));
        let tmp = self.path.with_extension("nonce.tmp");
        let _ = std::fs::remove_file(&tmp);
        let mut file = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&tmp)?;
        writeln!(file, "{nonce} {expires}")?;
        file.sync_all()?;
        std::fs::rename(&tmp, &self.path)?;
        Ok(nonce)
    }

    /// Removes the nonce, so it is honoured no longer.
    pub fn remove(&self) {
        let _ = std::fs::remove_file(&self.path);
    }

    /// Whether `presented` is the nonce this file holds, unexpired at `now_ms`. Anything that
    /// cannot be the nonce is refused before the file is read.
    pub async fn holds(&self, presented: &str, now_ms: u64) -> bool {
        if presented.len() != NONCE_LEN || !presented.bytes().all(|b| b.is_ascii_hexdigit()) {
            return false;
        }
        let path = self.path.clone();
        let Ok(Ok(contents)) = tokio::task::spawn_blocking(move || read_small(&path)).await else {
            return false;
        };
        matches_file(&contents, presented, now_ms)
    }
}

fn read_small(path: &Path) -> std::io::Result<String> {
    use std::io::Read as _;
    let mut contents = String::new();
    std::fs::File::open(path)?
        .take(MAX_FILE)
        .read_to_string(&mut contents)?;
    Ok(contents)
}

/// Compares digests, so how long the comparison takes says nothing about the nonce.
fn matches_file(contents: &str, presented: &str, now_ms: u64) -> bool {
    let mut fields = contents.split_whitespace();
    let (Some(nonce), Some(expires), None) = (fields.next(), fields.next(), fields.next()) else {
        return false;
    };
    let Ok(expires) = expires.parse::<u64>() else {
        return false;
    };
    now_ms < expires && Sha256::digest(nonce.as_bytes()) == Sha256::digest(presented.as_bytes())
}

/// What the server saw of a doctor request, as carried in `ECHO_HEADER`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Echo {
    pub host: Option<String>,
    pub forwarded_for: Option<String>,
    pub forwarded_proto: Option<String>,
}

impl Echo {
    /// The header value: form-encoded, so any header text survives the round trip.
    pub fn encode(&self) -> String {
        let mut out = url::form_urlencoded::Serializer::new(String::new());
        for (name, value) in [
            ("host", &self.host),
            ("x-forwarded-for", &self.forwarded_for),
            ("x-forwarded-proto", &self.forwarded_proto),
        ] {
            if let Some(value) = value {
                out.append_pair(name, value);
            }
        }
        out.finish()
    }

    pub fn decode(value: &str) -> Self {
        let mut echo = Self::default();
        for (name, value) in url::form_urlencoded::parse(value.as_bytes()) {
            let slot = match &*name {
                "host" => &mut echo.host,
                "x-forwarded-for" => &mut echo.forwarded_for,
                "x-forwarded-proto" => &mut echo.forwarded_proto,
                _ => continue,
            };
            *slot = Some(value.into_owned());
        }
        echo
    }
}

#[cfg(test)]
mod tests {
    use super::{Echo, NonceFile, matches_file};

    /// Only the exact, unexpired nonce of the file is honoured; nothing else is.
    #[tokio::test]
    async fn only_the_written_nonce_is_honoured_until_it_expires() {
        let dir = tempfile::tempdir().unwrap();
        let file = NonceFile::in_data_dir(dir.path());
        let nonce = file.create(1_000).unwrap();
        assert!(file.holds(&nonce, 2_000).await);
        let other = "0".repeat(64);
        assert!(!file.holds(&other, 2_000).await);
        assert!(!file.holds(&nonce[..63], 2_000).await);
        assert!(!file.holds(&nonce, 1_000 + 300_000).await, "expired");
        file.remove();
        assert!(!file.holds(&nonce, 2_000).await, "removed");
        assert!(!matches_file("", "", 0));
        assert!(!matches_file("abc", "abc", 0));
    }

    /// The file is readable by its owner only: the nonce is a credential.
    #[test]
    fn nonce_file_is_private() {
        use std::os::unix::fs::PermissionsExt as _;
        let dir = tempfile::tempdir().unwrap();
        let file = NonceFile::in_data_dir(dir.path());
        file.create(0).unwrap();
        let mode = std::fs::metadata(file.path()).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
    }

    /// Header text of any kind comes back as the server saw it.
    #[test]
    fn echo_round_trips() {
        let echo = Echo {
            host: Some("matrix.example.org:8448".into()),
            forwarded_for: Some("203.0.113.9, 10.0.0.1".into()),
            forwarded_proto: None,
        };
        assert_eq!(Echo::decode(&echo.encode()), echo);
    }
}
