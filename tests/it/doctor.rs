//! `mxmedia doctor` against a real mxmedia: the nonce echo the server gives only to the
//! doctor, the one exception to the refusal of requests signed as our own server, and a whole
//! doctor run over HTTPS with our own published key.

use std::net::TcpListener;

use mxmedia::doctor::{
    self, Options, Status,
    nonce::{ECHO_HEADER, Echo, HEADER, NonceFile, QUERY_PARAM},
};
use mxmedia_proto::{RequestParts, ServerName, sign_request};

use crate::{
    common::{ALICE, TestServer},
    fake_remote::Pki,
    federation::federate,
};

async fn echo_of(server: &TestServer, nonce: Option<&str>) -> Option<Echo> {
    let mut request = server
        .client
        .get(server.url("/_matrix/client/v1/media/config"))
        .insert_header(("x-forwarded-for", "203.0.113.7"))
        .insert_header(("x-forwarded-proto", "https"));
    if let Some(nonce) = nonce {
        request = request.insert_header((HEADER, nonce));
    }
    let res = request.send().await.unwrap();
    // The answer itself is the same as for anyone: no token, no media config.
    assert_eq!(res.status(), 401);
    res.headers()
        .get(ECHO_HEADER)
        .map(|v| Echo::decode(v.to_str().unwrap()))
}

/// Only a request carrying the nonce this data dir holds, unexpired, learns what mxmedia saw of
/// it (Host, X-Forwarded-For, X-Forwarded-Proto); any other request, or the same nonce once
/// removed, gets the ordinary answer and nothing more.
#[actix_web::test]
async fn only_the_doctor_nonce_gets_an_echo() {
    let server = TestServer::start().await;
    let file = NonceFile::in_data_dir(server.dir.path());
    assert_eq!(
        echo_of(&server, Some(&"a".repeat(64))).await,
        None,
        "no nonce file"
    );
    let nonce = file.create(mxmedia::clock::now_ms()).unwrap();
    let echo = echo_of(&server, Some(&nonce))
        .await
        .expect("echo for the nonce");
    assert_eq!(
        echo.host.as_deref(),
        Some(server.base.trim_start_matches("http://"))
    );
    assert_eq!(echo.forwarded_for.as_deref(), Some("203.0.113.7"));
    assert_eq!(echo.forwarded_proto.as_deref(), Some("https"));
    assert_eq!(echo_of(&server, None).await, None, "no header");
    let mut wrong = nonce.clone().into_bytes();
    wrong[0] = if wrong[0] == b'0' { b'1' } else { b'0' };
    let wrong = String::from_utf8(wrong).unwrap();
    assert_eq!(
        echo_of(&server, Some(&wrong)).await,
        None,
        "a nonce one digit off"
    );
    // Written long ago: expired.
    let old = file.create(0).unwrap();
    assert_eq!(echo_of(&server, Some(&old)).await, None, "expired nonce");
    file.remove();
    assert_eq!(echo_of(&server, Some(&nonce)).await, None, "removed nonce");
}

/// An HTTPS mxmedia whose server name is its own address, publishing its own key: what a
/// remote server would reach.
async fn self_federating(
    pki: &Pki,
    tweak: impl FnOnce(&mut mxmedia::config::Config),
) -> TestServer {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let name = addr.to_string();
    let pem_dir = tempfile::tempdir().unwrap();
    let (cert, key) = pki.write_server_pem(pem_dir.path());
    let server = TestServer::start_on(listener, |c| {
        federate(c, pki, None);
        c.server_name = name.parse().unwrap();
        c.listen = addr;
        c.federation.serve_server_keys = true;
        c.tls.cert = Some(cert);
        c.tls.key = Some(key);
        tweak(c);
    })
    .await;
    // The listener read the files at start.
    drop(pem_dir);
    server
}

/// A client trusting the test CA.
fn trusting(pki: &Pki) -> awc::Client {
    let tls = mxmedia::net::tls::client_config(true, Some(&pki.ca_file)).unwrap();
    awc::Client::builder()
        .connector(awc::Connector::new().rustls_0_23(std::sync::Arc::new(tls)))
        .finish()
}

/// A request signed with our own key for our own server name is refused as before, unless its
/// signed target carries the doctor nonce: then it is verified like any other, against the keys
/// our public key endpoint serves, and a bad signature is still refused.
#[actix_web::test]
async fn own_signature_is_accepted_only_with_the_nonce() {
    let pki = Pki::new();
    let server = self_federating(&pki, |_| {}).await;
    let identity = mxmedia::federation::identity::Identity::load(&server.config).unwrap();
    let ours: ServerName = server.config.server_name.clone();
    let file = NonceFile::in_data_dir(server.dir.path());
    let nonce = file.create(mxmedia::clock::now_ms()).unwrap();
    let signed_get = |uri: String, signed_uri: String| {
        let request = RequestParts {
            method: "GET",
            uri: &signed_uri,
            origin: &ours,
            destination: &ours,
            content: None,
        };
        let auth = sign_request(&request, &identity.key).unwrap().to_string();
        let client = trusting(&pki);
        let url = server.url(&uri);
        async move {
            let mut res = client
                .get(url)
                .insert_header(("authorization", auth))
                .send()
                .await
                .unwrap();
            let body: serde_json::Value = res.json().await.unwrap();
            (res.status().as_u16(), body)
        }
    };
    let plain = "/_matrix/federation/v1/media/download/nothingHere".to_owned();
    let (status, body) = signed_get(plain.clone(), plain).await;
    assert_eq!(status, 401, "{body}");
    assert!(
        body["error"].as_str().unwrap().contains("this server"),
        "{body}"
    );

    let with_nonce =
        format!("/_matrix/federation/v1/media/download/nothingHere?{QUERY_PARAM}={nonce}");
    let (status, body) = signed_get(with_nonce.clone(), with_nonce.clone()).await;
    assert_eq!(
        (status, body["errcode"].as_str()),
        (404, Some("M_NOT_FOUND")),
        "{body}"
    );

    // The nonce in the URL but a signature over another target: refused.
    let (status, body) = signed_get(with_nonce.clone(), "/other".into()).await;
    assert_eq!(status, 401, "{body}");

    let wrong = format!(
        "/_matrix/federation/v1/media/download/nothingHere?{QUERY_PARAM}={}",
        "0".repeat(64)
    );
    let (status, body) = signed_get(wrong.clone(), wrong).await;
    assert_eq!(status, 401, "{body}");
    assert!(
        body["error"].as_str().unwrap().contains("this server"),
        "{body}"
    );
}

/// Run straight against mxmedia over HTTPS (no proxy), doctor finds every media prefix
/// answered by this mxmedia, uploads, downloads, thumbnails and removes its 1 MiB image, gets
/// its own signed federation request verified with the published key, and fails exactly two
/// checks with their fixes: no proxy adds X-Forwarded-*, and no homeserver answers
/// `/_matrix/federation/v1/version` at the federation address. It leaves no nonce behind.
#[actix_web::test]
async fn doctor_run_against_mxmedia_itself() {
    let pki = Pki::new();
    let server = self_federating(&pki, |c| c.auth.admins.push("@alice:localhost".into())).await;
    let options = Options {
        base_url: None,
        token: Some(ALICE.into()),
    };
    let report = doctor::run(&server.config, &options).await.unwrap();
    let text = report.text();
    let status = |id: &str| {
        report
            .get(id)
            .unwrap_or_else(|| panic!("no check {id}:\n{text}"))
            .status
    };
    for id in [
        "local.data_dir",
        "local.free_space",
        "local.store",
        "discovery.client",
        "route.client_v1",
        "route.client_msc3916",
        "route.media_v3",
        "route.media_r0",
        "route.federation_v1",
        "local.tls",
        "upload",
        "upload.download",
        "upload.thumbnail",
        "upload.delete",
        "federation.signed_request",
    ] {
        assert_eq!(status(id), Status::Pass, "{id}:\n{text}");
    }
    let failed: Vec<&str> = report
        .checks
        .iter()
        .filter(|c| c.status == Status::Fail)
        .map(|c| c.id)
        .collect();
    assert_eq!(failed, ["discovery.federation", "route.headers"], "{text}");
    let headers = report.get("route.headers").unwrap();
    assert!(
        headers
            .fix
            .as_deref()
            .unwrap()
            .contains("proxy_set_header X-Forwarded-For"),
        "{text}"
    );
    assert!(!report.ok());
    assert!(text.lines().last().unwrap().contains("2 failed"), "{text}");
    assert!(
        !server.dir.path().join(doctor::nonce::FILE_NAME).exists(),
        "nonce left behind"
    );
    let json = report.json();
    assert_eq!(json["failed"], 2);
    assert_eq!(
        json["checks"].as_array().unwrap().len(),
        report.checks.len()
    );
}

/// When the public name resolves into `federation.ip_range_denylist` (loopback, by default),
/// doctor blames that setting, not the proxy, and tries nothing behind it.
#[actix_web::test]
async fn denied_public_address_names_the_denylist() {
    let pki = Pki::new();
    let server = self_federating(&pki, |_| {}).await;
    let mut config = server.config.clone();
    config.federation.ip_range_denylist = mxmedia::config::Config::default()
        .federation
        .ip_range_denylist;
    let report = doctor::run(&config, &Options::default()).await.unwrap();
    let text = report.text();
    let check = report.get("discovery.client").unwrap();
    assert_eq!(check.status, Status::Fail, "{text}");
    assert!(
        check
            .fix
            .as_deref()
            .unwrap()
            .contains("MXMEDIA_FEDERATION__IP_RANGE_DENYLIST"),
        "{text}"
    );
    assert_eq!(
        report.get("route.client_v1").unwrap().status,
        Status::Skip,
        "{text}"
    );
}
