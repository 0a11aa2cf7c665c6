//! An upload refused as too large: the client, still sending its body, reads the 413
//! `M_TOO_LARGE` instead of a reset connection, and a client that never stops sending is cut
//! off after a bounded time.

use std::time::{Duration, Instant};

use tokio::{
    io::{AsyncReadExt as _, AsyncWriteExt as _},
    net::TcpStream,
};

use crate::common::{ALICE, TestServer};

/// The server's limit in these tests.
const LIMIT: u64 = 1 << 20;
/// Bytes per write, and the pause between writes: about 2.5 MiB/s, so the 8 MiB bodies below
/// take over 3 s, longer than actix's default linger (1 s) after an early response.
const WRITE: usize = 64 * 1024;
const PAUSE: Duration = Duration::from_millis(25);
const BODY: usize = 8 << 20;

async fn start() -> TestServer {
    TestServer::start_with(|c| c.media.max_upload_size = bytesize::ByteSize::b(LIMIT)).await
}

fn head(chunked: bool, len: usize) -> String {
    let framing = if chunked {
        "Transfer-Encoding: chunked".to_owned()
    } else {
        format!("Content-Length: {len}")
    };
    format!(
        "POST /_matrix/media/v3/upload HTTP/1.1\r\nHost: localhost\r\nAuthorization: Bearer \
         {ALICE}\r\nContent-Type: application/octet-stream\r\n{framing}\r\n\r\n"
    )
}

/// Whether `got` holds a whole answer with a JSON body.
fn answered(got: &[u8]) -> bool {
    got.windows(4).any(|w| w == b"\r\n\r\n") && got.ends_with(b"}")
}

/// Writes `total` body bytes (as chunks if `chunked`) slowly while reading what the server
/// sends; returns whether every write went through, and what was read by the time the answer
/// was whole, the server closed, or 5 s after the last write.
async fn send_slowly(stream: TcpStream, chunked: bool, total: usize) -> (bool, Vec<u8>) {
    let (mut reader, mut writer) = stream.into_split();
    let read = actix_web::rt::spawn(async move {
        let mut got = Vec::new();
        let mut buf = [0u8; 4096];
        loop {
            match reader.read(&mut buf).await {
                Ok(0) | Err(_) => return got,
                Ok(n) => got.extend_from_slice(&buf[..n]),
            }
            if answered(&got) {
                return got;
            }
        }
    });
    let block = vec![0u8; WRITE];
    let mut sent = 0;
    let mut all_written = true;
    while sent < total {
        let n = WRITE.min(total - sent);
        let wrote = if chunked {
            let mut frame = format!("{n:x}\r\n").into_bytes();
            frame.extend_from_slice(&block[..n]);
            frame.extend_from_slice(b"\r\n");
            writer.write_all(&frame).await
        } else {
            writer.write_all(&block[..n]).await
        };
        if wrote.is_err() {
            all_written = false;
            break;
        }
        sent += n;
        tokio::time::sleep(PAUSE).await;
    }
    if all_written && chunked && writer.write_all(b"0\r\n\r\n").await.is_err() {
        all_written = false;
    }
    let got = tokio::time::timeout(Duration::from_secs(5), read).await;
    let got = got.map(|r| r.unwrap()).unwrap_or_default();
    (all_written, got)
}

fn assert_too_large(got: &[u8], how: &str) {
    let text = String::from_utf8_lossy(got);
    assert!(
        text.starts_with("HTTP/1.1 413"),
        "{how}: the client did not read a 413: {text:?}"
    );
    assert!(
        text.contains(r#""errcode":"M_TOO_LARGE""#),
        "{how}: no M_TOO_LARGE body: {text:?}"
    );
}

/// A body over the limit, announced by Content-Length or sent chunked, and sent slower than
/// the server refuses it: the client writes it all and then reads the 413 `M_TOO_LARGE`;
/// nothing of it stays in `tmp/`.
#[actix_web::test]
async fn a_refused_body_still_being_sent_gets_its_413_read() {
    let server = start().await;
    let addr = server.base.trim_start_matches("http://").to_owned();
    for chunked in [false, true] {
        let how = if chunked { "chunked" } else { "Content-Length" };
        let mut stream = TcpStream::connect(&addr).await.unwrap();
        stream
            .write_all(head(chunked, BODY).as_bytes())
            .await
            .unwrap();
        let (all_written, got) = send_slowly(stream, chunked, BODY).await;
        assert!(
            all_written,
            "{how}: the server reset the connection mid-body"
        );
        assert_too_large(&got, how);
    }
    let tmp = server.dir.path().join("tmp");
    let left: Vec<_> = std::fs::read_dir(&tmp).unwrap().collect();
    assert!(left.is_empty(), "refused uploads left {left:?}");
}

/// A client announcing a body far over what the server drains, or sending chunks without end,
/// is answered 413 and cut off within seconds: refusing a body never costs the server more
/// than a bounded read.
#[actix_web::test]
async fn a_refused_body_is_drained_only_so_far() {
    let server = start().await;
    let addr = server.base.trim_start_matches("http://").to_owned();
    for chunked in [false, true] {
        let how = if chunked { "chunked" } else { "Content-Length" };
        let mut stream = TcpStream::connect(&addr).await.unwrap();
        let endless = 1usize << 40;
        stream
            .write_all(head(chunked, endless).as_bytes())
            .await
            .unwrap();
        let started = Instant::now();
        let (mut reader, mut writer) = stream.into_split();
        let writing = actix_web::rt::spawn(async move {
            let block = vec![0u8; WRITE];
            let mut frame = format!("{WRITE:x}\r\n").into_bytes();
            frame.extend_from_slice(&block);
            frame.extend_from_slice(b"\r\n");
            let frame = if chunked { frame } else { block };
            // As fast as the server reads, until it closes.
            while writer.write_all(&frame).await.is_ok() {}
        });
        let mut got = Vec::new();
        let mut buf = [0u8; 4096];
        let closed = tokio::time::timeout(Duration::from_secs(20), async {
            loop {
                match reader.read(&mut buf).await {
                    Ok(0) | Err(_) => return,
                    Ok(n) => got.extend_from_slice(&buf[..n]),
                }
            }
        })
        .await;
        assert!(
            closed.is_ok(),
            "{how}: an endless refused body was read for 20 s"
        );
        writing.abort();
        assert!(
            started.elapsed() < Duration::from_secs(15),
            "{how}: cut off only after {:?}",
            started.elapsed()
        );
        if chunked {
            assert_too_large(&got, how);
        }
    }
}
