//! Slow and idle clients (slowloris): they are cut off after the `[http]` timeouts, leave no
//! upload temp files, and never delay a normal client's download.

use std::time::{Duration, Instant};

use tokio::{
    io::{AsyncReadExt as _, AsyncWriteExt as _},
    net::TcpStream,
};

use crate::common::{ALICE, TestServer, pseudo_random};

const SLOWLORIS: usize = 300;
const IDLE: usize = 1000;
const SLOW_UPLOADS: usize = 20;

/// Lets this process hold the ~2,700 sockets of the test (both ends live here).
fn raise_open_files_limit() {
    use nix::sys::resource::{Resource, getrlimit, setrlimit};
    let (soft, hard) = getrlimit(Resource::RLIMIT_NOFILE).unwrap();
    if soft < hard {
        setrlimit(Resource::RLIMIT_NOFILE, hard, hard).unwrap();
    }
    let needed = 2 * (SLOWLORIS + IDLE + SLOW_UPLOADS) as u64 + 512;
    assert!(
        hard >= needed,
        "this test needs `ulimit -n` of at least {needed} (hard limit is {hard})"
    );
}

/// Reads until the server closes the connection; returns what it sent, or `None` if it kept the
/// connection open past `wait`.
async fn closed_within(stream: &mut TcpStream, wait: Duration) -> Option<Vec<u8>> {
    let mut got = Vec::new();
    let read = tokio::time::timeout(wait, async {
        let mut buf = [0u8; 4096];
        loop {
            match stream.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(n) => got.extend_from_slice(&buf[..n]),
            }
        }
    })
    .await;
    read.ok().map(|()| got)
}

/// Hundreds of clients sending headers a byte at a time, a thousand connections that never send
/// anything, and authenticated uploads whose bodies trickle or stall: a normal download still
/// completes in well under a second meanwhile, and once the timeouts pass every slow connection is
/// closed (uploads with 408 `M_UNKNOWN`) and `tmp/` holds no upload temp file.
#[actix_web::test]
async fn slowloris_and_idle_connections_are_cut_off_without_leftovers() {
    raise_open_files_limit();
    let server = TestServer::start_with(|c| {
        c.http.request_head_timeout_secs = 2;
        c.http.body_idle_timeout_secs = 2;
        c.http.keep_alive_secs = 2;
    })
    .await;
    let addr = server.base.trim_start_matches("http://").to_owned();
    let file = pseudo_random(300 * 1024, 1);
    let id = server.upload(&file, "application/octet-stream", None).await;

    let mut idle = Vec::with_capacity(IDLE);
    for _ in 0..IDLE {
        idle.push(TcpStream::connect(&addr).await.unwrap());
    }
    // Each slowloris task sends its request head one byte every 100 ms and never finishes it.
    let mut slowloris = Vec::with_capacity(SLOWLORIS);
    for _ in 0..SLOWLORIS {
        let mut stream = TcpStream::connect(&addr).await.unwrap();
        slowloris.push(actix_web::rt::spawn(async move {
            let head = b"GET /_matrix/client/v1/media/config HTTP/1.1\r\nHost: x\r\nX-Pad: ";
            for byte in head.iter().chain(std::iter::repeat(&b'a')) {
                if stream.write_all(&[*byte]).await.is_err() {
                    break;
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            closed_within(&mut stream, Duration::from_secs(1)).await
        }));
    }
    // Half the uploads stop sending after a few bytes; the others send a byte every 500 ms, far
    // below `body_min_rate`.
    let mut uploads = Vec::with_capacity(SLOW_UPLOADS);
    for i in 0..SLOW_UPLOADS {
        let mut stream = TcpStream::connect(&addr).await.unwrap();
        uploads.push(actix_web::rt::spawn(async move {
            let head = format!(
                "POST /_matrix/media/v3/upload HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer \
                 {ALICE}\r\nContent-Type: application/octet-stream\r\nContent-Length: 1000000\r\n\r\n"
            );
            stream.write_all(head.as_bytes()).await.unwrap();
            // Read while trickling: the 408 must be seen before the writes meet a reset.
            let (mut reader, mut writer) = stream.into_split();
            let mut reply = Vec::new();
            let mut buf = [0u8; 4096];
            let mut left = if i % 2 == 0 { 5 } else { usize::MAX };
            let deadline = tokio::time::sleep(Duration::from_secs(30));
            tokio::pin!(deadline);
            loop {
                tokio::select! {
                    read = reader.read(&mut buf) => match read {
                        Ok(0) | Err(_) => return Some(reply),
                        Ok(n) => reply.extend_from_slice(&buf[..n]),
                    },
                    () = tokio::time::sleep(Duration::from_millis(500)), if left > 0 => {
                        left -= 1;
                        let _ = writer.write_all(b"x").await;
                    }
                    () = &mut deadline => return None,
                }
            }
        }));
    }

    // While all of them hold connections, a normal client downloads, several times.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let mut slowest = Duration::ZERO;
    for _ in 0..5 {
        let started = Instant::now();
        let mut res = server.get_as(server.download_url(&id), ALICE).await;
        assert_eq!(res.status(), 200);
        assert_eq!(res.body().limit(1 << 20).await.unwrap(), file.as_slice());
        slowest = slowest.max(started.elapsed());
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(
        slowest < Duration::from_millis(500),
        "a download took {slowest:?} beside the slow clients"
    );
    let (_, tmp_files) = server.stored_files();
    assert!(tmp_files > 0, "the slow uploads should be staging by now");

    for task in uploads {
        let reply = task
            .await
            .unwrap()
            .expect("a slow upload's connection stayed open");
        let reply = String::from_utf8_lossy(&reply);
        assert!(reply.starts_with("HTTP/1.1 408"), "{reply}");
        assert!(reply.contains("\"errcode\":\"M_UNKNOWN\""), "{reply}");
    }
    for task in slowloris {
        let reply = task
            .await
            .unwrap()
            .expect("a slowloris connection stayed open");
        let reply = String::from_utf8_lossy(&reply);
        assert!(
            reply.is_empty() || reply.starts_with("HTTP/1.1 408"),
            "{reply}"
        );
    }
    for mut stream in idle {
        assert!(
            closed_within(&mut stream, Duration::from_secs(1))
                .await
                .is_some(),
            "an idle connection stayed open"
        );
    }
    assert_eq!(
        server.stored_files().1,
        0,
        "upload temp files were left in tmp/"
    );
}
