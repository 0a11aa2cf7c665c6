//! Doctor check of the homeserver: its `whoami` answers (with `--token`, for that token), and
//! its clock agrees with ours.

use std::time::{Duration, SystemTime};

use super::{Check, Doctor, MAX_PROBE_BODY};

/// Clock difference to the homeserver worth a warning, and one that breaks things: key
/// validity and token expiry are compared across servers.
const SKEW_WARN: Duration = Duration::from_secs(30);
const SKEW_FAIL: Duration = Duration::from_secs(300);

/// The homeserver's `whoami` answers, and its clock agrees with ours.
pub async fn homeserver(doctor: &mut Doctor<'_>) {
    let title = "homeserver whoami";
    let Some(url) = doctor.config.auth.homeserver_url.clone() else {
        doctor.push(Check::skip(
            "local.homeserver",
            title,
            "no auth.homeserver_url: tokens are checked against auth.static_tokens only",
        ));
        doctor.push(Check::skip(
            "local.clock",
            "clock",
            "no homeserver to compare with",
        ));
        return;
    };
    let url = format!(
        "{}/_matrix/client/v3/account/whoami",
        url.trim_end_matches('/')
    );
    let mut request = doctor.homeserver.get(&url);
    if let Some(token) = &doctor.options.token {
        request = request.bearer_auth(token);
    }
    let sent_at = SystemTime::now();
    let mut response = match request.send().await {
        Ok(response) => response,
        Err(e) => {
            doctor.push(Check::fail(
                "local.homeserver",
                title,
                format!("{url}: {e}"),
                "set MXMEDIA_AUTH__HOMESERVER_URL to the homeserver's client listener as seen \
                 from this host (e.g. http://127.0.0.1:8008)",
            ));
            doctor.push(Check::skip(
                "local.clock",
                "clock",
                "the homeserver did not answer",
            ));
            return;
        }
    };
    let status = response.status().as_u16();
    let date = response
        .headers()
        .get("date")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<awc::http::header::HttpDate>().ok())
        .map(SystemTime::from);
    let body = response
        .body()
        .limit(MAX_PROBE_BODY)
        .await
        .unwrap_or_default();
    let json: Option<serde_json::Value> = serde_json::from_slice(&body).ok();
    let field = |name: &str| {
        json.as_ref()
            .and_then(|j| j.get(name))
            .and_then(serde_json::Value::as_str)
            .map(str::to_owned)
    };
    match (status, field("user_id"), field("errcode")) {
        (200, Some(user), _) => doctor.push(Check::pass(
            "local.homeserver",
            title,
            format!("{url} answers: the token is {user}'s"),
        )),
        (401, _, Some(code)) if doctor.options.token.is_none() => doctor.push(Check::pass(
            "local.homeserver",
            title,
            format!("{url} answers ({code} without a token)"),
        )),
        (401, _, Some(code)) => doctor.push(Check::fail(
            "local.homeserver",
            title,
            format!("{url} refuses the --token ({code})"),
            "pass a current access token of a user on this homeserver",
        )),
        _ => doctor.push(Check::fail(
            "local.homeserver",
            title,
            format!("{url} answered HTTP {status}, not a Matrix whoami"),
            "MXMEDIA_AUTH__HOMESERVER_URL must name the homeserver's client API (the URL \
             under which /_matrix/client/v3 lives)",
        )),
    }
    let Some(date) = date else {
        doctor.push(Check::skip(
            "local.clock",
            "clock",
            "the homeserver sent no Date header",
        ));
        return;
    };
    // HTTP dates have a resolution of one second.
    let skew = match date.duration_since(sent_at) {
        Ok(ahead) => ahead,
        Err(behind) => behind.duration().saturating_sub(Duration::from_secs(1)),
    };
    let detail = format!("{}s apart from the homeserver's Date", skew.as_secs());
    let fix = "synchronise the clocks of both hosts (systemd-timesyncd or chrony)";
    if skew >= SKEW_FAIL {
        doctor.push(Check::fail("local.clock", "clock", detail, fix));
    } else if skew >= SKEW_WARN {
        doctor.push(Check::warn("local.clock", "clock", detail, fix));
    } else {
        doctor.push(Check::pass("local.clock", "clock", detail));
    }
}
