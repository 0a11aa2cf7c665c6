//! Doctor checks of federation: will remote servers accept what we sign, and do their requests
//! for our media reach us?
//!
//! Remote servers verify our X-Matrix signatures with the keys our homeserver publishes
//! (<https://spec.matrix.org/v1.16/server-server-api/#request-authentication>), so the first
//! check is the server's start-up check, reused. The second is the whole path: a request we
//! sign, sent to our own public federation media path by server discovery, must reach this
//! mxmedia and verify there against the keys our public key endpoint serves. mxmedia refuses
//! requests claiming its own server name; the signed target carries the doctor nonce, the one
//! exception (see `nonce`).

use std::sync::Arc;

use mxmedia_proto::{RequestParts, sign_request};

use super::{Check, Doctor, MAX_PROBE_BODY, nonce::QUERY_PARAM, routes::FEDERATION_PREFIX};
use crate::federation::identity::{GENERATED_KEY_FILE, Identity, Published, verify_published};

/// The homeserver publishes the key we sign with.
pub async fn signing_key(doctor: &mut Doctor<'_>) {
    let (id, title) = ("federation.signing_key", "signing key published");
    // Loading would make a key when there is none: that is the server's job, at its start.
    if doctor.config.federation.signing_key_path.is_none()
        && !doctor.config.data_dir.join(GENERATED_KEY_FILE).exists()
    {
        doctor.push(Check::fail(
            id,
            title,
            "no signing key yet: the server makes one at its first start",
            "start the server once, or set MXMEDIA_FEDERATION__SIGNING_KEY_PATH to the \
             homeserver's key file",
        ));
        return;
    }
    let identity = match Identity::load(doctor.config) {
        Ok(identity) => Arc::new(identity),
        Err(e) => {
            doctor.push(Check::fail(
                id,
                title,
                format!("no signing key: {e:#}"),
                "set MXMEDIA_FEDERATION__SIGNING_KEY_PATH to a readable key file (or run \
                 `mxmedia generate-key`)",
            ));
            return;
        }
    };
    doctor.identity = Some(Arc::clone(&identity));
    let key_id = identity.key.key_id().to_string();
    let Some(url) = doctor.config.auth.homeserver_url.clone() else {
        doctor.push(Check::skip(
            id,
            title,
            format!("no auth.homeserver_url to ask whether it publishes {key_id}"),
        ));
        return;
    };
    let fix = format!(
        "append the line in {} to the homeserver's signing key file (Synapse: signing_key_path) \
         and restart it, or set MXMEDIA_FEDERATION__SIGNING_KEY_PATH to the homeserver's key file",
        identity.path.display()
    );
    match verify_published(&identity, &url, &doctor.homeserver).await {
        Ok(Published::Yes) => doctor.push(Check::pass(
            id,
            title,
            format!("the homeserver publishes {key_id}"),
        )),
        Ok(Published::WrongKey) => doctor.push(Check::fail(
            id,
            title,
            format!(
                "the homeserver publishes another public key under {key_id}: remote servers \
                 refuse our requests"
            ),
            fix,
        )),
        Ok(Published::Missing(published)) => doctor.push(Check::fail(
            id,
            title,
            format!(
                "the homeserver publishes [{}], not {key_id} ({}): remote servers refuse our \
                 requests",
                published.join(", "),
                identity.path.display()
            ),
            fix,
        )),
        Err(e) => doctor.push(Check::fail(
            id,
            title,
            format!("could not ask the homeserver: {e:#}"),
            "set MXMEDIA_AUTH__HOMESERVER_URL to the homeserver's listener as seen from here",
        )),
    }
}

/// A request signed by us reaches our public federation media path and verifies there.
pub async fn signed_request(doctor: &mut Doctor<'_>) {
    let (id, title) = (
        "federation.signed_request",
        "signed federation request to ourselves",
    );
    // Either failing makes this fail too: it says nothing more, so it is left out.
    if !doctor.report.passed("route.federation_v1") {
        doctor.push(Check::skip(
            id,
            title,
            "the federation media path does not reach mxmedia",
        ));
        return;
    }
    if doctor.report.failed("federation.signing_key") {
        doctor.push(Check::skip(
            id,
            title,
            "the homeserver does not publish our key",
        ));
        return;
    }
    let (Some(identity), Some(destination), Some(nonce)) = (
        doctor.identity.clone(),
        doctor.destination.clone(),
        doctor.nonce.clone(),
    ) else {
        doctor.push(Check::skip(id, title, "nothing to sign with"));
        return;
    };
    let path = format!(
        "{FEDERATION_PREFIX}/download/{}?{QUERY_PARAM}={nonce}",
        mxmedia_proto::MediaId::generate().as_str()
    );
    let request = RequestParts {
        method: "GET",
        uri: &path,
        origin: &identity.server_name,
        destination: &identity.server_name,
        content: None,
    };
    let authorization = match sign_request(&request, &identity.key) {
        Ok(auth) => auth.to_string(),
        Err(e) => {
            doctor.push(Check::fail(
                id,
                title,
                format!("signing failed: {e}"),
                "check MXMEDIA_FEDERATION__SIGNING_KEY_PATH",
            ));
            return;
        }
    };
    let url = destination.url(&path);
    let request = doctor
        .client
        .get(&url)
        .insert_header(("host", destination.host_header.as_str()))
        .insert_header(("authorization", authorization));
    let shown = format!(
        "https://{}:{}{FEDERATION_PREFIX}/",
        destination.host, destination.port
    );
    match doctor.send(request, None, MAX_PROBE_BODY).await {
        // The media id is made up: past the signature check, mxmedia has nothing under it.
        Ok(answer)
            if answer.echo.is_some() && answer.errcode().as_deref() == Some("M_NOT_FOUND") =>
        {
            doctor.push(Check::pass(
                id,
                title,
                format!(
                    "reached mxmedia through {shown} and verified with the published {}",
                    identity.key.key_id()
                ),
            ));
        }
        Ok(answer) if answer.echo.is_some() => {
            let reason = answer
                .json()
                .and_then(|j| j.get("error")?.as_str().map(str::to_owned))
                .unwrap_or_default();
            doctor.push(Check::fail(
                id,
                title,
                format!(
                    "mxmedia refused our own signature: {} {reason}",
                    answer.describe()
                ),
                format!(
                    "mxmedia must fetch https://{}/_matrix/key/v2/server by discovery: check \
                     federation.ip_range_denylist and federation.ca_file",
                    identity.server_name
                ),
            ));
        }
        Ok(answer) => doctor.push(Check::fail(
            id,
            title,
            format!(
                "{shown} was answered by something else ({})",
                answer.describe()
            ),
            "route /_matrix/federation/v1/media/ to mxmedia on the federation address",
        )),
        Err(e) => doctor.push(Check::fail(
            id,
            title,
            format!("no answer: {e}"),
            "check the proxy's error log",
        )),
    }
}
