//! The smallest actix-web server the design allows: one worker, one route answering a static
//! 64 KiB body, no middleware. `bench/download.sh` runs it beside mxmedia and nginx as the
//! framework's ceiling, so every run prints how close mxmedia is to it. Not part of the product.
//!
//! `cargo run --release --example bare_actix -- [listen address, default 127.0.0.1:18082]`

use actix_web::{App, HttpResponse, HttpServer, web};

static BODY: [u8; 64 * 1024] = [0x5a; 64 * 1024];

async fn body() -> HttpResponse {
    HttpResponse::Ok()
        .content_type("application/octet-stream")
        .body(&BODY[..])
}

#[actix_web::main]
async fn main() -> std::io::Result<()> {
    let listen = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "127.0.0.1:18082".to_owned());
    HttpServer::new(|| App::new().route("/64KiB.bin", web::get().to(body)))
        .workers(1)
        .bind(listen)?
        .run()
        .await
}
