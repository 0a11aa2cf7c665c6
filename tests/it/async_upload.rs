//! Asynchronous uploads (`/create` then `PUT`), and downloads waiting for them.

use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use crate::common::{ALICE, BOB, TestServer, assert_error};
use actix_web::http::Method;

async fn create(server: &TestServer, token: &str) -> (String, u64) {
    let mut res = server
        .send_as(
            Method::POST,
            server.url("/_matrix/media/v1/create"),
            token,
            "{}",
        )
        .await;
    assert_eq!(res.status(), 200);
    let body: serde_json::Value = res.json().await.unwrap();
    let id = body["content_uri"]
        .as_str()
        .unwrap()
        .strip_prefix("mxc://localhost/")
        .unwrap()
        .to_owned();
    (id, body["unused_expires_at"].as_u64().unwrap())
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64
}

/// The full life of an async upload: reserve, wait, fill once, serve.
#[actix_web::test]
async fn create_put_download() {
    let server = TestServer::start().await;
    let (id, expires) = create(&server, ALICE).await;
    let day = 24 * 3600 * 1000;
    assert!(
        expires.abs_diff(now_ms() + day) < 60_000,
        "expires about 24 h from now"
    );

    let started = Instant::now();
    let mut res = server
        .get_as(
            format!("{}?timeout_ms=700", server.download_url(&id)),
            ALICE,
        )
        .await;
    assert_error(&mut res, 504, "M_NOT_YET_UPLOADED").await;
    assert!(
        started.elapsed() >= Duration::from_millis(650),
        "waited for the timeout"
    );

    let put_url = server.url(&format!(
        "/_matrix/media/v3/upload/localhost/{id}?filename=later.txt"
    ));
    let mut res = server
        .send_as(Method::PUT, &put_url, BOB, "not yours")
        .await;
    assert_error(&mut res, 403, "M_FORBIDDEN").await;

    let mut res = server
        .client
        .put(&put_url)
        .bearer_auth(ALICE)
        .insert_header(("content-type", "text/plain"))
        .send_body("arrived")
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    assert_eq!(
        res.json::<serde_json::Value>().await.unwrap(),
        serde_json::json!({})
    );

    let mut res = server.send_as(Method::PUT, &put_url, ALICE, "again").await;
    assert_error(&mut res, 409, "M_CANNOT_OVERWRITE_MEDIA").await;

    let mut res = server.get_as(server.download_url(&id), ALICE).await;
    assert_eq!(res.status(), 200);
    assert_eq!(
        res.headers().get("content-disposition").unwrap(),
        "inline; filename=later.txt"
    );
    assert_eq!(res.body().await.unwrap(), "arrived");

    let mut res = server
        .send_as(
            Method::PUT,
            server.url("/_matrix/media/v3/upload/localhost/neverCreated"),
            ALICE,
            "x",
        )
        .await;
    assert_error(&mut res, 404, "M_NOT_FOUND").await;
    let mut res = server
        .send_as(
            Method::PUT,
            server.url("/_matrix/media/v3/upload/other.example/abc"),
            ALICE,
            "x",
        )
        .await;
    assert_error(&mut res, 404, "M_NOT_FOUND").await;
}

/// A download waiting on a pending id gets the bytes as soon as the upload lands.
#[actix_web::test]
async fn download_waits_for_upload() {
    let server = TestServer::start().await;
    let (id, _) = create(&server, ALICE).await;
    let waiter = server
        .client
        .get(format!("{}?timeout_ms=10000", server.download_url(&id)))
        .bearer_auth(ALICE)
        .send();
    let uploader = async {
        tokio::time::sleep(Duration::from_millis(300)).await;
        let res = server
            .send_as(
                Method::PUT,
                server.url(&format!("/_matrix/media/v3/upload/localhost/{id}")),
                ALICE,
                "late bytes",
            )
            .await;
        assert_eq!(res.status(), 200);
        Instant::now()
    };
    let started = Instant::now();
    let (res, _) = tokio::join!(waiter, uploader);
    let mut res = res.unwrap();
    assert_eq!(res.status(), 200);
    assert_eq!(res.body().await.unwrap(), "late bytes");
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "answered on upload, not on timeout"
    );
}

/// Too many pending reservations: 429 with Retry-After and retry_after_ms.
#[actix_web::test]
async fn pending_limit() {
    let server = TestServer::start_with(|c| c.media.max_pending_uploads = 2).await;
    create(&server, ALICE).await;
    create(&server, ALICE).await;
    let mut res = server
        .send_as(
            Method::POST,
            server.url("/_matrix/media/v1/create"),
            ALICE,
            "{}",
        )
        .await;
    assert!(res.headers().get("retry-after").is_some());
    let body: serde_json::Value = res.json().await.unwrap();
    assert_eq!(res.status(), 429);
    assert_eq!(body["errcode"], "M_LIMIT_EXCEEDED");
    assert!(body["retry_after_ms"].as_u64().unwrap() > 3_600_000);
    // Another user is not affected.
    create(&server, BOB).await;
}

/// An expired reservation is gone: PUT and download both say 404.
#[actix_web::test]
async fn expired_reservation() {
    let server = TestServer::start_with(|c| c.media.unused_expiry_secs = 1).await;
    let (id, _) = create(&server, ALICE).await;
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let mut res = server.get_as(server.download_url(&id), ALICE).await;
    assert_error(&mut res, 404, "M_NOT_FOUND").await;
    let mut res = server
        .send_as(
            Method::PUT,
            server.url(&format!("/_matrix/media/v3/upload/localhost/{id}")),
            ALICE,
            "x",
        )
        .await;
    assert_error(&mut res, 404, "M_NOT_FOUND").await;
}

/// `/create` wants a JSON object (or nothing).
#[actix_web::test]
async fn create_rejects_non_json() {
    let server = TestServer::start().await;
    let mut res = server
        .send_as(
            Method::POST,
            server.url("/_matrix/media/v1/create"),
            ALICE,
            "not json",
        )
        .await;
    assert_error(&mut res, 400, "M_NOT_JSON").await;
    let res = server
        .client
        .post(server.url("/_matrix/media/v1/create"))
        .bearer_auth(ALICE)
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
}

/// Two overlapping PUTs to one id: one wins, the other gets 409, the content is the winner's.
#[actix_web::test]
async fn concurrent_puts() {
    let server = TestServer::start().await;
    let (id, _) = create(&server, ALICE).await;
    let url = server.url(&format!("/_matrix/media/v3/upload/localhost/{id}"));
    let slow_body = futures_util::stream::unfold(0, |n| async move {
        if n == 5 {
            return None;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
        Some((
            Ok::<_, std::io::Error>(bytes::Bytes::from_static(b"slow-")),
            n + 1,
        ))
    });
    let first = server
        .client
        .put(&url)
        .bearer_auth(ALICE)
        .send_stream(slow_body);
    let second = async {
        tokio::time::sleep(Duration::from_millis(150)).await;
        server
            .client
            .put(&url)
            .bearer_auth(ALICE)
            .send_body("fast")
            .await
    };
    let (first, second) = tokio::join!(first, second);
    let (mut first, mut second) = (first.unwrap(), second.unwrap());
    let winner = match (first.status().as_u16(), second.status().as_u16()) {
        (200, 409) => {
            assert_error(&mut second, 409, "M_CANNOT_OVERWRITE_MEDIA").await;
            "slow-slow-slow-slow-slow-"
        }
        (409, 200) => {
            assert_error(&mut first, 409, "M_CANNOT_OVERWRITE_MEDIA").await;
            "fast"
        }
        other => panic!("expected one 200 and one 409, got {other:?}"),
    };
    let mut res = server.get_as(server.download_url(&id), ALICE).await;
    assert_eq!(res.body().await.unwrap(), winner);
}

/// The pending cap holds under a burst: of 20 simultaneous `/create` calls by one user, exactly
/// `max_pending_uploads` succeed and every other one gets 429 with a retry time.
#[actix_web::test]
async fn parallel_creates_respect_pending_limit() {
    let server = TestServer::start_with(|c| c.media.max_pending_uploads = 5).await;
    let creates = (0..20).map(|_| {
        server
            .client
            .post(server.url("/_matrix/media/v1/create"))
            .bearer_auth(ALICE)
            .send_body("{}")
    });
    let results = futures_util::future::join_all(creates).await;
    let (mut ok, mut limited) = (0, 0);
    for res in results {
        let mut res = res.unwrap();
        match res.status().as_u16() {
            200 => ok += 1,
            429 => {
                assert!(res.headers().get("retry-after").is_some());
                let body: serde_json::Value = res.json().await.unwrap();
                assert_eq!(body["errcode"], "M_LIMIT_EXCEEDED");
                assert!(body["retry_after_ms"].as_u64().unwrap() > 3_600_000);
                limited += 1;
            }
            other => panic!("unexpected status {other}"),
        }
    }
    assert_eq!((ok, limited), (5, 15));
}

/// Someone who did not create an id learns nothing about it from `PUT`: 403 `M_FORBIDDEN`
/// whether it is still pending, already uploaded or expired, and the upload is refused.
#[actix_web::test]
async fn put_by_non_creator_is_forbidden_in_every_state() {
    let server = TestServer::start_with(|c| c.media.unused_expiry_secs = 2).await;
    let put_url = |id: &str| server.url(&format!("/_matrix/media/v3/upload/localhost/{id}"));
    let (completed, _) = create(&server, ALICE).await;
    let (expired, _) = create(&server, ALICE).await;
    let res = server
        .send_as(Method::PUT, put_url(&completed), ALICE, "alice's")
        .await;
    assert_eq!(res.status(), 200);
    tokio::time::sleep(Duration::from_millis(2100)).await;
    let (pending, _) = create(&server, ALICE).await;

    for id in [&pending, &completed, &expired] {
        let mut res = server
            .send_as(Method::PUT, put_url(id), BOB, "bob's bytes")
            .await;
        assert_error(&mut res, 403, "M_FORBIDDEN").await;
    }
    // Nothing changed: the completed media is still alice's, the pending id still fillable.
    let mut res = server.get_as(server.download_url(&completed), BOB).await;
    assert_eq!(res.body().await.unwrap(), "alice's");
    let res = server
        .send_as(Method::PUT, put_url(&pending), ALICE, "late")
        .await;
    assert_eq!(res.status(), 200);
}

/// A `PUT` wakes only the downloads waiting for its own id: a waiter for another id sleeps on
/// to its deadline and gets 504 `M_NOT_YET_UPLOADED`, never woken; and an id's registry entry
/// goes when its last waiter does.
#[actix_web::test]
async fn put_wakes_only_waiters_of_its_id() {
    let server = TestServer::start().await;
    let (a, _) = create(&server, ALICE).await;
    let (b, _) = create(&server, ALICE).await;
    let wait = |id: &str, timeout_ms: u64| {
        server
            .client
            .get(format!(
                "{}?timeout_ms={timeout_ms}",
                server.download_url(id)
            ))
            .bearer_auth(ALICE)
            .send()
    };
    let waiter_a = wait(&a, 10_000);
    let waiter_b = wait(&b, 1_500);
    let uploader = async {
        // Both waiters are registered before the upload, without guessing at timing.
        while server.media.upload_waiters().1 < 2 {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        let res = server
            .send_as(
                Method::PUT,
                server.url(&format!("/_matrix/media/v3/upload/localhost/{a}")),
                ALICE,
                "for a",
            )
            .await;
        assert_eq!(res.status(), 200);
    };
    let (res_a, mut res_b, ()) = tokio::join!(
        async {
            let mut res = waiter_a.await.unwrap();
            assert_eq!(res.status(), 200);
            assert_eq!(res.body().await.unwrap(), "for a");
            // Woken once, for a; b still waits.
            assert_eq!(server.media.upload_waiters(), (1, 1));
        },
        async { waiter_b.await.unwrap() },
        uploader
    );
    let () = res_a;
    assert_error(&mut res_b, 504, "M_NOT_YET_UPLOADED").await;
    assert_eq!(server.media.upload_waiters(), (1, 0), "b was never woken");
}
