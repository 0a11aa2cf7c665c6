//! Access tokens: static tokens, and a real HTTP homeserver answering `whoami` on loopback.

use std::{
    net::TcpListener,
    sync::{
        Arc,
        atomic::{AtomicUsize, Ordering},
    },
    time::Duration,
};

use actix_web::{App, HttpRequest, HttpResponse, HttpServer, web};

use crate::common::{ALICE, TestServer, assert_error};
use actix_web::http::Method;

/// No token is 401 M_MISSING_TOKEN, a wrong one 401 M_UNKNOWN_TOKEN, on every endpoint.
#[actix_web::test]
async fn missing_and_unknown_tokens() {
    let server = TestServer::start().await;
    let id = server.upload(b"secret", "text/plain", None).await;
    for url in [
        server.download_url(&id),
        server.url("/_matrix/client/v1/media/config"),
    ] {
        let mut res = server.client.get(&url).send().await.unwrap();
        assert_error(&mut res, 401, "M_MISSING_TOKEN").await;
        let mut res = server.get_as(&url, "nope").await;
        assert_error(&mut res, 401, "M_UNKNOWN_TOKEN").await;
        let mut res = server
            .client
            .get(&url)
            .insert_header(("authorization", format!("Basic {ALICE}")))
            .send()
            .await
            .unwrap();
        assert_error(&mut res, 401, "M_MISSING_TOKEN").await;
    }
    let mut res = server
        .client
        .post(server.url("/_matrix/media/v3/upload"))
        .send_body("x")
        .await
        .unwrap();
    assert_error(&mut res, 401, "M_MISSING_TOKEN").await;
    assert_eq!(server.stored_files().0, 0);
}

/// The deprecated `?access_token=` works while allowed, and not together with a header.
#[actix_web::test]
async fn query_string_token() {
    let server = TestServer::start().await;
    let id = server.upload(b"q", "text/plain", None).await;
    let res = server
        .client
        .get(format!("{}?access_token={ALICE}", server.download_url(&id)))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    let mut res = server
        .get_as(
            format!("{}?access_token={ALICE}", server.download_url(&id)),
            ALICE,
        )
        .await;
    assert_error(&mut res, 401, "M_MISSING_TOKEN").await;

    let server = TestServer::start_with(|c| c.auth.allow_query_token = false).await;
    let id = server.upload(b"q", "text/plain", None).await;
    let mut res = server
        .client
        .get(format!("{}?access_token={ALICE}", server.download_url(&id)))
        .send()
        .await
        .unwrap();
    assert_error(&mut res, 401, "M_MISSING_TOKEN").await;
}

/// A stand-in homeserver: `good` is a user, `guest` a guest, everything else unknown.
struct FakeHomeserver {
    url: String,
    hits: Arc<AtomicUsize>,
    handle: actix_web::dev::ServerHandle,
}

async fn whoami(req: HttpRequest, hits: web::Data<AtomicUsize>) -> HttpResponse {
    hits.fetch_add(1, Ordering::SeqCst);
    match req
        .headers()
        .get("authorization")
        .and_then(|v| v.to_str().ok())
    {
        // A homeserver taking its time, so that callers pile up behind one check.
        Some("Bearer slow") => {
            tokio::time::sleep(Duration::from_millis(300)).await;
            HttpResponse::Ok().json(serde_json::json!({"user_id": "@dave:localhost"}))
        }
        Some("Bearer good") => HttpResponse::Ok()
            .json(serde_json::json!({"user_id": "@carol:localhost", "device_id": "D"})),
        Some("Bearer expired") => HttpResponse::Unauthorized().json(serde_json::json!({
            "errcode": "M_UNKNOWN_TOKEN", "error": "Access token has expired", "soft_logout": true
        })),
        Some("Bearer guest") => HttpResponse::Ok()
            .json(serde_json::json!({"user_id": "@guest1:localhost", "is_guest": true})),
        _ => HttpResponse::Unauthorized()
            .json(serde_json::json!({"errcode": "M_UNKNOWN_TOKEN", "error": "nope"})),
    }
}

impl FakeHomeserver {
    fn start() -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let hits = Arc::new(AtomicUsize::new(0));
        let data = web::Data::from(hits.clone());
        let server = HttpServer::new(move || {
            App::new()
                .app_data(data.clone())
                .route("/_matrix/client/v3/account/whoami", web::get().to(whoami))
        })
        .workers(1)
        .listen(listener)
        .unwrap()
        .run();
        let handle = server.handle();
        actix_web::rt::spawn(server);
        Self { url, hits, handle }
    }
}

/// Tokens are checked with the homeserver, good answers cached, guests limited to downloads.
#[actix_web::test]
async fn homeserver_whoami() {
    let hs = FakeHomeserver::start();
    let url = hs.url.clone();
    let server = TestServer::start_with(move |c| {
        c.auth.static_tokens.clear();
        c.auth.homeserver_url = Some(url);
    })
    .await;
    let mut res = server
        .send_as(
            Method::POST,
            server.url("/_matrix/media/v3/upload"),
            "good",
            "via hs",
        )
        .await;
    assert_eq!(res.status(), 200);
    let body: serde_json::Value = res.json().await.unwrap();
    let id = body["content_uri"]
        .as_str()
        .unwrap()
        .rsplit('/')
        .next()
        .unwrap()
        .to_owned();
    for _ in 0..3 {
        let res = server.get_as(server.download_url(&id), "good").await;
        assert_eq!(res.status(), 200);
    }
    assert_eq!(
        hs.hits.load(Ordering::SeqCst),
        1,
        "one whoami for four requests"
    );

    let mut res = server.get_as(server.download_url(&id), "bad").await;
    assert_error(&mut res, 401, "M_UNKNOWN_TOKEN").await;

    // An expired (refreshable) token keeps the homeserver's soft-logout hint.
    let mut res = server.get_as(server.download_url(&id), "expired").await;
    assert_eq!(res.status(), 401);
    let body: serde_json::Value = res.json().await.unwrap();
    assert_eq!(body["errcode"], "M_UNKNOWN_TOKEN");
    assert_eq!(body["soft_logout"], true);

    let res = server.get_as(server.download_url(&id), "guest").await;
    assert_eq!(res.status(), 200, "guests may download");
    let mut res = server
        .send_as(
            Method::POST,
            server.url("/_matrix/media/v3/upload"),
            "guest",
            "x",
        )
        .await;
    assert_error(&mut res, 403, "M_GUEST_ACCESS_FORBIDDEN").await;

    // The homeserver goes away: an uncached token is a 502, never accepted.
    hs.handle.stop(false).await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    let mut res = server.get_as(server.download_url(&id), "other").await;
    assert_error(&mut res, 502, "M_UNKNOWN").await;
}

/// Twenty concurrent requests with one token the cache does not know yet share one `whoami`
/// call to the homeserver, and all get the user.
#[actix_web::test]
async fn concurrent_requests_with_a_new_token_share_one_whoami() {
    let hs = FakeHomeserver::start();
    let url = hs.url.clone();
    let server = TestServer::start_with(move |c| {
        c.auth.homeserver_url = Some(url);
    })
    .await;
    let id = server.upload(b"shared", "text/plain", None).await;
    let download = server.download_url(&id);
    let requests = (0..20).map(|_| server.get_as(&download, "slow"));
    for res in futures_util::future::join_all(requests).await {
        assert_eq!(res.status(), 200);
    }
    assert_eq!(
        hs.hits.load(Ordering::SeqCst),
        1,
        "one whoami for twenty requests"
    );
}
