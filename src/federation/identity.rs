//! Our signing identity: the key mxmedia signs federation requests with, as its homeserver.
//!
//! Remote servers check our X-Matrix signatures against the keys our *homeserver* publishes
//! ([spec: request authentication](https://spec.matrix.org/v1.16/server-server-api/#request-authentication)), so the key is either the homeserver's own (its key file, shared) or a
//! dedicated one that the homeserver has been told to publish. Which key is in use, and whether
//! the homeserver publishes it, is the first thing to check when remote servers refuse us.

use std::path::{Path, PathBuf};

use anyhow::Context as _;
use mxmedia_proto::{MediaId, ServerName, SigningKey, validate_server_keys};

use crate::config::Config;

/// File name of the key generated in the data dir when none is configured.
pub const GENERATED_KEY_FILE: &str = "signing.key";

pub struct Identity {
    pub server_name: ServerName,
    pub key: SigningKey,
    /// Where the key was read from.
    pub path: PathBuf,
}

impl std::fmt::Debug for Identity {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Identity")
            .field("server_name", &self.server_name)
            .field("key_id", self.key.key_id())
            .field("path", &self.path)
            .finish_non_exhaustive()
    }
}

impl Identity {
    /// The configured key file, else the data dir's own key, generated on first use.
    pub fn load(config: &Config) -> anyhow::Result<Self> {
        let server_name = config.server_name.clone();
        let key_id = config.federation.signing_key_id.as_ref();
        if let Some(path) = &config.federation.signing_key_path {
            let contents = std::fs::read_to_string(path).with_context(|| {
                format!(
                    "reading MXMEDIA_FEDERATION__SIGNING_KEY_PATH={}",
                    path.display()
                )
            })?;
            let key = SigningKey::from_key_file(&contents, key_id).with_context(|| {
                format!(
                    "MXMEDIA_FEDERATION__SIGNING_KEY_PATH={}: no usable key{}",
                    path.display(),
                    key_id
                        .as_ref()
                        .map(|id| format!(" with id {id} (MXMEDIA_FEDERATION__SIGNING_KEY_ID)"))
                        .unwrap_or_default()
                )
            })?;
            return Ok(Self {
                server_name,
                key,
                path: path.clone(),
            });
        }
        let path = config.data_dir.join(GENERATED_KEY_FILE);
        let key = if path.exists() {
            let contents = std::fs::read_to_string(&path)
                .with_context(|| format!("reading {}", path.display()))?;
            SigningKey::from_key_file(&contents, key_id)
                .with_context(|| format!("{}: no usable key", path.display()))?
        } else {
            let key = new_key()?;
            write_key_file(&path, &key)?;
            tracing::warn!(
                key_id = %key.key_id(),
                path = %path.display(),
                "generated a signing key for federation requests; remote servers accept it only \
                 once the homeserver publishes it: append the line in this file to the \
                 homeserver's signing key file (Synapse: signing_key_path) and restart the \
                 homeserver, or set MXMEDIA_FEDERATION__SIGNING_KEY_PATH to the homeserver's key \
                 file"
            );
            key
        };
        Ok(Self {
            server_name,
            key,
            path,
        })
    }
}

/// A fresh key with a random version, so keys made on different machines never share an ID.
pub fn new_key() -> anyhow::Result<SigningKey> {
    let suffix: String = MediaId::generate().as_str().chars().take(6).collect();
    SigningKey::generate(&format!("mxmedia_{suffix}")).context("generating a signing key")
}

/// Writes a key file readable by its owner only; refuses to replace an existing file.
pub fn write_key_file(path: &Path, key: &SigningKey) -> anyhow::Result<()> {
    use std::{io::Write as _, os::unix::fs::OpenOptionsExt as _};
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .with_context(|| format!("creating {}", path.display()))?;
    file.write_all(key.to_key_file_line().as_bytes())?;
    file.sync_all()?;
    Ok(())
}

/// What the homeserver publishes about our key.
#[derive(Debug, PartialEq, Eq)]
pub enum Published {
    /// Listed in `verify_keys` with our public key.
    Yes,
    /// Listed under our key ID, but with another public key.
    WrongKey,
    /// Not listed; the IDs that are.
    Missing(Vec<String>),
}

/// Checks a `/_matrix/key/v2/server` answer from our homeserver against our key.
pub fn check_published(
    identity: &Identity,
    response: &serde_json::Value,
    now_ms: u64,
) -> anyhow::Result<Published> {
    let keys = validate_server_keys(&identity.server_name, response, now_ms)
        .context("the homeserver's key response does not validate")?;
    Ok(match keys.verify_keys.get(identity.key.key_id()) {
        Some(key) if *key == identity.key.verify_key() => Published::Yes,
        Some(_) => Published::WrongKey,
        None => Published::Missing(
            keys.verify_keys
                .keys()
                .map(|id| id.as_str().to_owned())
                .collect(),
        ),
    })
}

/// Fetches our homeserver's published keys and logs clearly whether remote servers will accept
/// our signatures. Returns the outcome for `check-config`.
pub async fn verify_published(
    identity: &Identity,
    homeserver_url: &str,
    client: &awc::Client,
) -> anyhow::Result<Published> {
    let url = format!(
        "{}/_matrix/key/v2/server",
        homeserver_url.trim_end_matches('/')
    );
    let mut response = client
        .get(&url)
        .timeout(std::time::Duration::from_secs(10))
        .send()
        .await
        .map_err(|e| anyhow::anyhow!("fetching {url}: {e}"))?;
    if !response.status().is_success() {
        anyhow::bail!("fetching {url}: HTTP {}", response.status());
    }
    let body = response
        .body()
        .limit(super::MAX_JSON_BODY)
        .await
        .map_err(|e| anyhow::anyhow!("reading {url}: {e}"))?;
    let json: serde_json::Value =
        serde_json::from_slice(&body).with_context(|| format!("{url} did not return JSON"))?;
    check_published(identity, &json, crate::clock::now_ms())
}

/// Logs the outcome of `verify_published` the way an admin needs to read it.
pub fn log_published(identity: &Identity, outcome: &anyhow::Result<Published>) {
    let key_id = identity.key.key_id();
    match outcome {
        Ok(Published::Yes) => {
            tracing::info!(%key_id, "the homeserver publishes our signing key");
        }
        Ok(Published::WrongKey) => tracing::warn!(
            %key_id,
            path = %identity.path.display(),
            "the homeserver publishes another public key under our key id: remote servers will \
             refuse our federation requests. Use the homeserver's key file or a key with a new id"
        ),
        Ok(Published::Missing(published)) => tracing::warn!(
            %key_id,
            published = %published.join(", "),
            path = %identity.path.display(),
            "the homeserver does not publish our signing key: remote servers will refuse our \
             federation requests. Append the key line from this file to the homeserver's signing \
             key file and restart it, or point MXMEDIA_FEDERATION__SIGNING_KEY_PATH at the \
             homeserver's key file"
        ),
        Err(e) => tracing::warn!(
            %key_id,
            error = %format!("{e:#}"),
            "could not check that the homeserver publishes our signing key"
        ),
    }
}
