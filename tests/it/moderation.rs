//! Moderation through the admin APIs: who is an admin (the config list, or the homeserver's
//! word), Synapse's admin media routes with their shapes, pages and errors, quarantine that
//! keeps the bytes and hides every copy of them, and the shared hash list.

use std::{
    net::TcpListener,
    sync::{
        Arc, Mutex,
        atomic::{AtomicUsize, Ordering},
    },
};

use actix_web::{App, HttpRequest, HttpResponse, HttpServer, http::Method, web};
use serde_json::{Value, json};

use crate::common::{ALICE, BOB, TestServer, assert_error, pseudo_random};

const PHOTO: &[u8] = include_bytes!("../fixtures/photo_640x480.jpg");

async fn call(server: &TestServer, method: Method, path: &str, token: &str) -> (u16, Value) {
    let mut res = server.send_as(method, server.url(path), token, "").await;
    let status = res.status().as_u16();
    let body = res.body().limit(1 << 20).await.unwrap();
    (status, serde_json::from_slice(&body).unwrap_or(Value::Null))
}

async fn download_status(server: &TestServer, id: &str) -> u16 {
    server
        .get_as(server.download_url(id), BOB)
        .await
        .status()
        .as_u16()
}

fn admin_alice(c: &mut mxmedia::config::Config) {
    c.auth.admins = vec!["@alice:localhost".into()];
}

/// Uploads `bytes` as bob and returns the media id.
async fn upload_as_bob(server: &TestServer, bytes: &[u8], name: &str) -> String {
    let mut res = server
        .client
        .post(server.url(&format!("/_matrix/media/v3/upload?filename={name}")))
        .bearer_auth(BOB)
        .insert_header(("content-type", "application/octet-stream"))
        .send_body(bytes.to_vec())
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    let body: Value = res.json().await.unwrap();
    body["content_uri"].as_str().unwrap()["mxc://localhost/".len()..].to_owned()
}

/// A stand-in homeserver: `whoami` for `carol_tok` (an admin) and `dave_tok` (not one), Synapse's
/// admin check answered to admins only, and the media of the room `!spam:localhost`.
struct FakeHomeserver {
    url: String,
    admin_checks: Arc<AtomicUsize>,
    room_media: Arc<Mutex<Value>>,
    handle: actix_web::dev::ServerHandle,
}

fn bearer(req: &HttpRequest) -> String {
    req.headers()
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .unwrap_or("")
        .to_owned()
}

fn not_admin() -> HttpResponse {
    HttpResponse::Forbidden()
        .json(json!({"errcode": "M_FORBIDDEN", "error": "You are not a server admin"}))
}

async fn whoami(req: HttpRequest) -> HttpResponse {
    match bearer(&req).as_str() {
        "carol_tok" => HttpResponse::Ok().json(json!({"user_id": "@carol:localhost"})),
        "dave_tok" => HttpResponse::Ok().json(json!({"user_id": "@dave:localhost"})),
        _ => HttpResponse::Unauthorized()
            .json(json!({"errcode": "M_UNKNOWN_TOKEN", "error": "nope"})),
    }
}

async fn is_admin(
    req: HttpRequest,
    path: web::Path<String>,
    checks: web::Data<AtomicUsize>,
) -> HttpResponse {
    checks.fetch_add(1, Ordering::SeqCst);
    if bearer(&req) != "carol_tok" {
        return not_admin();
    }
    HttpResponse::Ok().json(json!({"admin": path.as_str() == "@carol:localhost"}))
}

async fn room_media(
    req: HttpRequest,
    path: web::Path<String>,
    media: web::Data<Mutex<Value>>,
) -> HttpResponse {
    if bearer(&req) != "carol_tok" {
        return not_admin();
    }
    if path.as_str() != "!spam:localhost" {
        return HttpResponse::NotFound()
            .json(json!({"errcode": "M_NOT_FOUND", "error": "Room not found"}));
    }
    let listed = media.lock().unwrap().clone();
    HttpResponse::Ok().json(listed)
}

impl FakeHomeserver {
    fn start() -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let admin_checks = Arc::new(AtomicUsize::new(0));
        let room = Arc::new(Mutex::new(json!({"local": [], "remote": []})));
        let (checks, media) = (
            web::Data::from(admin_checks.clone()),
            web::Data::from(room.clone()),
        );
        let server = HttpServer::new(move || {
            App::new()
                .app_data(checks.clone())
                .app_data(media.clone())
                .route("/_matrix/client/v3/account/whoami", web::get().to(whoami))
                .route(
                    "/_synapse/admin/v1/users/{user}/admin",
                    web::get().to(is_admin),
                )
                .route(
                    "/_synapse/admin/v1/room/{room}/media",
                    web::get().to(room_media),
                )
        })
        .workers(1)
        .listen(listener)
        .unwrap()
        .run();
        let handle = server.handle();
        actix_web::rt::spawn(server);
        Self {
            url,
            admin_checks,
            room_media: room,
            handle,
        }
    }
}

impl Drop for FakeHomeserver {
    fn drop(&mut self) {
        let handle = self.handle.clone();
        actix_web::rt::spawn(async move { handle.stop(false).await });
    }
}

/// A homeserver admin is an admin here too: asked with their own token, the answer cached;
/// a user the homeserver does not call admin gets 403 `M_FORBIDDEN`, no token 401. A room's
/// media, which only the homeserver knows, is quarantined as the homeserver lists it.
#[actix_web::test]
async fn homeserver_admins_and_room_quarantine() {
    let hs = FakeHomeserver::start();
    let hs_url = hs.url.clone();
    let server = TestServer::start_with(|c| c.auth.homeserver_url = Some(hs_url)).await;
    let (spam, other_spam, kept) = (
        server
            .upload(&pseudo_random(5000, 1), "image/png", None)
            .await,
        server
            .upload(&pseudo_random(5000, 2), "image/png", None)
            .await,
        server
            .upload(&pseudo_random(5000, 3), "image/png", None)
            .await,
    );
    let info = format!("/_synapse/admin/v1/media/localhost/{kept}");
    let (code, body) = call(&server, Method::GET, &info, "carol_tok").await;
    assert_eq!(code, 200, "{body}");
    assert_eq!(body["media_info"]["media_id"], json!(kept));
    let (code, _) = call(&server, Method::GET, &info, "carol_tok").await;
    assert_eq!(code, 200);
    assert_eq!(
        hs.admin_checks.load(Ordering::SeqCst),
        1,
        "the homeserver's answer is cached"
    );
    for token in ["dave_tok", ALICE] {
        let mut res = server
            .send_as(Method::GET, server.url(&info), token, "")
            .await;
        assert_error(&mut res, 403, "M_FORBIDDEN").await;
    }
    let mut res = server.client.get(server.url(&info)).send().await.unwrap();
    assert_error(&mut res, 401, "M_MISSING_TOKEN").await;

    *hs.room_media.lock().unwrap() = json!({
        "local": [
            format!("mxc://localhost/{spam}"),
            format!("mxc://localhost/{other_spam}"),
            "not an mxc uri",
        ],
        "remote": ["mxc://elsewhere.test/neverfetched"],
    });
    let room = "/_synapse/admin/v1/room/!spam:localhost/media/quarantine";
    let (code, _) = call(&server, Method::POST, room, "dave_tok").await;
    assert_eq!(code, 403, "non-admins change nothing");
    assert_eq!(download_status(&server, &spam).await, 200);
    let (code, body) = call(&server, Method::POST, room, "carol_tok").await;
    assert_eq!((code, body), (200, json!({"num_quarantined": 2})));
    assert_eq!(download_status(&server, &spam).await, 404);
    assert_eq!(download_status(&server, &other_spam).await, 404);
    assert_eq!(download_status(&server, &kept).await, 200);
    let (_, body) = call(
        &server,
        Method::GET,
        &format!("/_synapse/admin/v1/media/localhost/{spam}"),
        "carol_tok",
    )
    .await;
    assert_eq!(
        body["media_info"]["quarantined_by"],
        json!("@carol:localhost")
    );
    let (code, body) = call(
        &server,
        Method::POST,
        "/_synapse/admin/v1/room/!nope:localhost/media/quarantine",
        "carol_tok",
    )
    .await;
    assert_eq!((code, &body["errcode"]), (404, &json!("M_NOT_FOUND")));
    // The legacy path does the same.
    let legacy = "/_synapse/admin/v1/quarantine_media/!spam:localhost";
    let (code, body) = call(&server, Method::POST, legacy, "carol_tok").await;
    assert_eq!(
        (code, body),
        (200, json!({"num_quarantined": 0})),
        "already quarantined"
    );
}

/// Quarantine keeps the bytes but serves them to nobody, under any id holding them: existing
/// copies, and uploads made later. Protected media is passed by. Unquarantine undoes it all.
#[actix_web::test]
async fn quarantine_hides_every_copy_and_keeps_the_bytes() {
    let server = TestServer::start_with(|c| {
        admin_alice(c);
        c.store.inline_blob_max = bytesize::ByteSize::kib(1);
    })
    .await;
    let bad = pseudo_random(20_000, 7);
    let (first, copy, sticker, other) = (
        upload_as_bob(&server, &bad, "a.bin").await,
        upload_as_bob(&server, &bad, "b.bin").await,
        upload_as_bob(&server, &bad, "sticker.bin").await,
        upload_as_bob(&server, &pseudo_random(20_000, 8), "c.bin").await,
    );
    let photo = server.upload(PHOTO, "image/jpeg", None).await;
    let thumb = format!(
        "/_matrix/client/v1/media/thumbnail/localhost/{photo}?width=96&height=96&method=crop"
    );
    assert_eq!(server.get_as(server.url(&thumb), BOB).await.status(), 200);
    let protect = format!("/_synapse/admin/v1/media/protect/{sticker}");
    assert_eq!(
        call(&server, Method::POST, &protect, ALICE).await,
        (200, json!({}))
    );

    let quarantine = format!("/_synapse/admin/v1/media/quarantine/localhost/{first}");
    let (code, _) = call(&server, Method::POST, &quarantine, BOB).await;
    assert_eq!(code, 403);
    assert_eq!(
        download_status(&server, &first).await,
        200,
        "refused calls change nothing"
    );
    assert_eq!(
        call(&server, Method::POST, &quarantine, ALICE).await,
        (200, json!({}))
    );
    let files = server.stored_files();
    for id in [&first, &copy] {
        let mut res = server.get_as(server.download_url(id), BOB).await;
        assert_error(&mut res, 404, "M_NOT_FOUND").await;
    }
    assert_eq!(download_status(&server, &sticker).await, 200, "protected");
    assert_eq!(download_status(&server, &other).await, 200);
    let later = upload_as_bob(&server, &bad, "again.bin").await;
    assert_eq!(
        download_status(&server, &later).await,
        404,
        "uploaded after"
    );

    let (_, body) = call(
        &server,
        Method::GET,
        &format!("/_synapse/admin/v1/media/localhost/{copy}"),
        ALICE,
    )
    .await;
    let info = &body["media_info"];
    assert_eq!(info["quarantined_by"], json!("@alice:localhost"));
    assert_eq!(info["user_id"], json!("@bob:localhost"));
    assert_eq!(info["media_length"], json!(20_000));
    assert_eq!(info["upload_name"], json!("b.bin"));
    assert_eq!(info["safe_from_quarantine"], json!(false));
    assert_eq!(info["media_origin"], json!("localhost"));
    assert!(info["sha256"].as_str().unwrap().len() == 64);

    // A thumbnail of quarantined media is quarantined with it.
    let photo_q = format!("/_synapse/admin/v1/media/quarantine/localhost/{photo}");
    call(&server, Method::POST, &photo_q, ALICE).await;
    assert_eq!(server.get_as(server.url(&thumb), BOB).await.status(), 404);
    assert_eq!(server.stored_files(), files, "quarantine deletes nothing");

    let unquarantine = format!("/_synapse/admin/v1/media/unquarantine/localhost/{first}");
    assert_eq!(
        call(&server, Method::POST, &unquarantine, ALICE).await,
        (200, json!({}))
    );
    for id in [&first, &copy, &later] {
        assert_eq!(
            download_status(&server, id).await,
            200,
            "released with its bytes"
        );
    }
    let fresh = upload_as_bob(&server, &bad, "fresh.bin").await;
    assert_eq!(download_status(&server, &fresh).await, 200);
    // Unprotected, the sticker goes with the next quarantine of its bytes.
    let unprotect = format!("/_synapse/admin/v1/media/unprotect/{sticker}");
    assert_eq!(
        call(&server, Method::POST, &unprotect, ALICE).await,
        (200, json!({}))
    );
    call(&server, Method::POST, &quarantine, ALICE).await;
    assert_eq!(download_status(&server, &sticker).await, 404);

    // A user's media, all at once.
    let user = "/_synapse/admin/v1/user/@bob:localhost/media/quarantine";
    let (code, body) = call(&server, Method::POST, user, ALICE).await;
    assert_eq!(code, 200);
    assert_eq!(
        body["num_quarantined"],
        json!(1),
        "only `other` was not quarantined yet"
    );
    assert_eq!(download_status(&server, &other).await, 404);
}
