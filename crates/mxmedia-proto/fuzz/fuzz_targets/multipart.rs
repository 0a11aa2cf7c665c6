//! Fuzzes the framing of federation media answers: `Framer` must never panic, must give the
//! same bytes and verdict however the body is cut into chunks, must hold back no more than a
//! delimiter's length, must pass CRLF bodies through unchanged, and `multer` (what mxmedia
//! parses the framed bytes with) must read whatever it lets through without panicking or
//! holding more than the limits allow.
#![no_main]

use futures_util::stream;
use libfuzzer_sys::fuzz_target;
use mxmedia_proto::multipart::{Framer, Limits};

const BOUNDARIES: &[&str] = &["B", "6b1d4a3c0e2f49b8", "quirky boundary:1", "--"];

fn frame(boundary: &str, body: &[u8], chunk: usize, limits: Limits) -> Result<Vec<Vec<u8>>, ()> {
    let mut framer = Framer::new(boundary, limits);
    let mut out = Vec::new();
    for piece in body.chunks(chunk.max(1)) {
        let framed = framer.feed(piece).map_err(|_| ())?;
        assert!(framed.len() <= 2 * (piece.len() + boundary.len() + 4), "output grows");
        out.push(framed);
    }
    let tail = framer.finish();
    assert!(tail.len() <= boundary.len() + 3, "held back {}", tail.len());
    out.push(tail);
    Ok(out)
}

fuzz_target!(|data: &[u8]| {
    let Some((&selector, body)) = data.split_first() else {
        return;
    };
    let boundary = BOUNDARIES[usize::from(selector & 3)];
    let chunk = usize::from(selector >> 2) + 1;
    let limits = Limits {
        preamble: 64,
        headers: 128,
        first_part: 256,
    };
    let whole = frame(boundary, body, body.len().max(1), limits);
    let pieces = frame(boundary, body, chunk, limits);
    let join = |r: &Result<Vec<Vec<u8>>, ()>| r.clone().map(|p| p.concat());
    assert_eq!(join(&whole), join(&pieces), "chunking changed the result");
    let Ok(pieces) = pieces else {
        return;
    };
    if !body.windows(2).any(|w| w[1] == b'\n' && w[0] != b'\r') && !body.starts_with(b"\n") {
        assert_eq!(pieces.concat(), body, "a CRLF body is passed through unchanged");
    }
    let stream = stream::iter(
        pieces
            .into_iter()
            .map(|p| Ok::<_, std::io::Error>(bytes::Bytes::from(p))),
    );
    let mut multipart = multer::Multipart::new(stream, boundary);
    futures_executor::block_on(async {
        for _ in 0..3 {
            let Ok(Some(mut field)) = multipart.next_field().await else {
                return;
            };
            let _ = field.headers().get("content-type");
            let mut got = 0usize;
            while let Ok(Some(chunk)) = field.chunk().await {
                got += chunk.len();
            }
            assert!(got <= body.len(), "no bytes invented");
        }
    });
});
