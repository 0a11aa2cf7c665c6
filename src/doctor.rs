//! `mxmedia doctor`: checks the whole path to this mxmedia from the outside, the way a client and
//! a remote server reach it, and says for each problem the line that fixes it.
//!
//! Run with the server's configuration, as the service user (it writes a nonce to the data
//! dir). The checks, one group per file:
//! - `local`: the data dir, free space, the store or the running server;
//! - `homeserver`: the homeserver's `whoami` and clock;
//! - `routes`: the public client URL (`.well-known/matrix/client`) and federation address
//!   (server discovery, the code federation uses), and for every media prefix whether a request
//!   sent there is answered by this mxmedia, with the `Host` and forwarding headers it needs
//!   (proved with the nonce, `nonce`);
//! - `upload` (with `--token`): a real upload just over the usual proxy body limit, its
//!   download, a thumbnail, and its removal;
//! - `certificates`: the TLS certificates of the public names;
//! - `federation`: the homeserver publishes our signing key, and a request we sign to our own
//!   public federation media path reaches us and verifies against the published keys, as it
//!   must for remote servers to accept us.
//!
//! Every outgoing request goes through the federation client (`net`'s guard, the federation
//! denylist and TLS settings), or to the homeserver as token checks do.

pub mod certificates;
pub mod federation;
pub mod homeserver;
pub mod local;
pub mod nonce;
pub mod routes;
pub mod upload;

use std::{sync::Arc, time::Duration};

use serde::Serialize;

use crate::{
    config::Config,
    federation::{Federation, identity::Identity, resolve::Destination},
};

/// Longest body read from any answer but the test download.
const MAX_PROBE_BODY: usize = 64 * 1024;
/// The setting that decides which addresses doctor (and federation) may reach.
const DENYLIST: &str = "federation.ip_range_denylist";
/// Time allowed for one request.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(20);

/// What the command was asked to do.
#[derive(Debug, Clone, Default)]
pub struct Options {
    /// The public client URL, instead of the one `.well-known/matrix/client` names.
    pub base_url: Option<String>,
    /// An access token for the upload round trip.
    pub token: Option<String>,
}

/// The outcome of one check.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    Pass,
    /// Works, but needs attention soon (a certificate about to expire).
    Warn,
    Fail,
    /// Not run: it needs something that is missing or already failed.
    Skip,
}

/// One line of the report.
#[derive(Debug, Clone, Serialize)]
pub struct Check {
    /// Stable, for monitoring: `route.client_v1`, `upload`, `federation.signed_request`…
    pub id: &'static str,
    pub title: String,
    pub status: Status,
    pub detail: String,
    /// What to change, naming the config line or variable.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub fix: Option<String>,
}

impl Check {
    pub fn pass(id: &'static str, title: impl Into<String>, detail: impl Into<String>) -> Self {
        Self::new(id, title, Status::Pass, detail, None)
    }

    pub fn fail(
        id: &'static str,
        title: impl Into<String>,
        detail: impl Into<String>,
        fix: impl Into<String>,
    ) -> Self {
        Self::new(id, title, Status::Fail, detail, Some(fix.into()))
    }

    pub fn warn(
        id: &'static str,
        title: impl Into<String>,
        detail: impl Into<String>,
        fix: impl Into<String>,
    ) -> Self {
        Self::new(id, title, Status::Warn, detail, Some(fix.into()))
    }

    pub fn skip(id: &'static str, title: impl Into<String>, why: impl Into<String>) -> Self {
        Self::new(id, title, Status::Skip, why, None)
    }

    fn new(
        id: &'static str,
        title: impl Into<String>,
        status: Status,
        detail: impl Into<String>,
        fix: Option<String>,
    ) -> Self {
        Self {
            id,
            title: title.into(),
            status,
            detail: detail.into(),
            fix,
        }
    }
}

/// Every check, in the order run.
#[derive(Debug, Default, Serialize)]
pub struct Report {
    pub checks: Vec<Check>,
}

impl Report {
    fn count(&self, status: Status) -> usize {
        self.checks.iter().filter(|c| c.status == status).count()
    }

    /// Whether nothing failed (warnings and skipped checks are not failures).
    pub fn ok(&self) -> bool {
        self.count(Status::Fail) == 0
    }

    /// The check with `id`, if it ran.
    pub fn get(&self, id: &str) -> Option<&Check> {
        self.checks.iter().find(|c| c.id == id)
    }

    fn passed(&self, id: &str) -> bool {
        self.get(id).is_some_and(|c| c.status == Status::Pass)
    }

    fn failed(&self, id: &str) -> bool {
        self.get(id).is_some_and(|c| c.status == Status::Fail)
    }

    /// One line per check, then the counts.
    pub fn text(&self) -> String {
        let mut out = String::new();
        for check in &self.checks {
            let mark = match check.status {
                Status::Pass => "✓",
                Status::Warn => "!",
                Status::Fail => "✗",
                Status::Skip => "-",
            };
            out.push_str(&format!("{mark} {}: {}", check.title, check.detail));
            if let Some(fix) = &check.fix {
                out.push_str(&format!(" — fix: {fix}"));
            }
            out.push('\n');
        }
        out.push_str(&self.summary());
        out.push('\n');
        out
    }

    pub fn summary(&self) -> String {
        format!(
            "{} passed, {} failed, {} warnings, {} skipped",
            self.count(Status::Pass),
            self.count(Status::Fail),
            self.count(Status::Warn),
            self.count(Status::Skip)
        )
    }

    /// The report for monitoring: every check and the counts.
    pub fn json(&self) -> serde_json::Value {
        serde_json::json!({
            "ok": self.ok(),
            "passed": self.count(Status::Pass),
            "failed": self.count(Status::Fail),
            "warnings": self.count(Status::Warn),
            "skipped": self.count(Status::Skip),
            "checks": self.checks,
        })
    }
}

/// What the checks share: the configuration, the clients, and what earlier checks found.
pub struct Doctor<'a> {
    pub config: &'a Config,
    pub options: &'a Options,
    pub federation: Federation,
    /// Through the federation guard: for the public URLs.
    pub client: awc::Client,
    /// For the homeserver, as token checks reach it.
    pub homeserver: awc::Client,
    pub identity: Option<Arc<Identity>>,
    /// The nonce written to the data dir, when it could be.
    pub nonce: Option<String>,
    /// The public client URL, without a trailing slash, once found.
    pub base_url: Option<String>,
    /// Where remote servers reach us, once discovered.
    pub destination: Option<Destination>,
    pub report: Report,
}

/// Runs every check. Needs an actix system (awc clients are tied to it).
pub async fn run(config: &Config, options: &Options) -> anyhow::Result<Report> {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let federation = Federation::new(&config.federation)?;
    let tls = Arc::new(crate::net::tls::client_config(true, None)?);
    let mut doctor = Doctor {
        config,
        options,
        client: federation.client(),
        federation,
        homeserver: homeserver_client(tls),
        identity: None,
        nonce: None,
        base_url: None,
        destination: None,
        report: Report::default(),
    };
    let nonce_file = nonce::NonceFile::in_data_dir(&config.data_dir);
    local::data_dir(&mut doctor, &nonce_file);
    local::free_space(&mut doctor);
    local::store(&mut doctor);
    homeserver::homeserver(&mut doctor).await;
    routes::discover(&mut doctor).await;
    routes::media_routes(&mut doctor).await;
    certificates::certificates(&mut doctor).await;
    upload::round_trip(&mut doctor).await;
    federation::signing_key(&mut doctor).await;
    federation::signed_request(&mut doctor).await;
    if doctor.nonce.is_some() {
        nonce_file.remove();
    }
    Ok(doctor.report)
}

/// Like the server's homeserver client (token checks): plain TLS with the web PKI roots, no
/// redirects followed.
fn homeserver_client(tls: Arc<rustls::ClientConfig>) -> awc::Client {
    awc::Client::builder()
        .connector(awc::Connector::new().rustls_0_23(tls))
        .add_default_header(("user-agent", concat!("mxmedia/", env!("CARGO_PKG_VERSION"))))
        .disable_redirects()
        .timeout(REQUEST_TIMEOUT)
        .finish()
}

impl Doctor<'_> {
    fn push(&mut self, mut check: Check) {
        // Whatever the check, an address our own denylist refuses is the thing to fix first:
        // mxmedia cannot reach itself there either (its own keys, for one).
        if check.status == Status::Fail
            && (check.detail.contains(DENYLIST) || check.detail.contains("address is not allowed"))
        {
            check.fix = Some(format!(
                "the public name resolves to an address in {DENYLIST} \
                 (MXMEDIA_FEDERATION__IP_RANGE_DENYLIST): leave the proxy's public address out \
                 of it"
            ));
        }
        self.report.checks.push(check);
    }

    /// Sends a request through the federation guard with the doctor nonce, reading at most
    /// `limit` bytes of the answer. IP literals are checked against the denylist here: the
    /// guard's resolver never sees them.
    async fn send(
        &self,
        request: awc::ClientRequest,
        body: Option<bytes::Bytes>,
        limit: usize,
    ) -> Result<Answer, String> {
        let uri = request.get_uri().clone();
        if let Some(ip) = uri.host().and_then(crate::net::literal_ip)
            && self.federation.denies(ip)
        {
            return Err(format!(
                "{} is in {DENYLIST}",
                uri.host().unwrap_or_default()
            ));
        }
        let mut request = request.timeout(REQUEST_TIMEOUT);
        if let Some(nonce) = &self.nonce {
            request = request.insert_header((nonce::HEADER, nonce.as_str()));
        }
        let sent = match body {
            Some(body) => request.send_body(body).await,
            None => request.send().await,
        };
        let mut response = sent.map_err(|e| format!("{uri}: {e}"))?;
        let status = response.status().as_u16();
        let headers = response.headers().clone();
        let body = response
            .body()
            .limit(limit)
            .await
            .map_err(|e| format!("reading the answer of {uri}: {e}"))?;
        let echo = headers
            .get(nonce::ECHO_HEADER)
            .and_then(|v| v.to_str().ok())
            .map(nonce::Echo::decode);
        Ok(Answer {
            status,
            headers,
            body,
            echo,
        })
    }
}

/// An answer to a doctor request.
pub struct Answer {
    pub status: u16,
    pub headers: awc::http::header::HeaderMap,
    pub body: bytes::Bytes,
    /// What mxmedia saw, when this mxmedia answered.
    pub echo: Option<nonce::Echo>,
}

impl Answer {
    fn json(&self) -> Option<serde_json::Value> {
        serde_json::from_slice(&self.body).ok()
    }

    fn errcode(&self) -> Option<String> {
        self.json()?.get("errcode")?.as_str().map(str::to_owned)
    }

    fn content_type(&self) -> &str {
        self.headers
            .get("content-type")
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
    }

    /// The answer in a few words, for a report line.
    fn describe(&self) -> String {
        let server = self
            .headers
            .get("server")
            .and_then(|v| v.to_str().ok())
            .map(|s| format!(" from {s}"))
            .unwrap_or_default();
        match self.errcode() {
            Some(code) => format!("HTTP {} {code}{server}", self.status),
            None if self.content_type().starts_with("text/html") => {
                format!("HTTP {} HTML page{server}", self.status)
            }
            None => format!("HTTP {}{server}", self.status),
        }
    }
}
