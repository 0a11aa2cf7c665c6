use proptest::prelude::*;

use super::{Framer, Limits, Overflow, boundary, disposition_filename, sanitize_content_type};

fn frame(boundary: &str, input: &[u8], chunk: usize, limits: Limits) -> Result<Vec<u8>, Overflow> {
    let mut framer = Framer::new(boundary, limits);
    let mut out = Vec::new();
    for piece in input.chunks(chunk.max(1)) {
        out.extend_from_slice(&framer.feed(piece)?);
    }
    out.extend_from_slice(&framer.finish());
    Ok(out)
}

fn normalise(boundary: &str, input: &[u8], chunk: usize) -> Vec<u8> {
    frame(boundary, input, chunk, Limits::default()).unwrap()
}

const CRLF_BODY: &[u8] = b"\r\n--B1\r\nContent-Type: application/json\r\n\r\n{}\r\n--B1\r\n\
Content-Type: text/plain\r\n\r\nline one\nline two\r\n\r\n--B1--\r\n";

/// A well-formed CRLF body passes through byte for byte, however it is split.
#[test]
fn crlf_body_is_unchanged() {
    for chunk in [1, 2, 3, 7, 64, 4096] {
        assert_eq!(
            normalise("B1", CRLF_BODY, chunk),
            CRLF_BODY,
            "chunk {chunk}"
        );
    }
}

/// LF-only structure becomes CRLF; LFs inside a part's bytes stay as they were.
#[test]
fn lf_only_structure_becomes_crlf() {
    let lf = b"--B1\nContent-Type: application/json\n\n{}\n--B1\n\
Content-Type: text/plain\n\nline one\nline two\n\n--B1--\n";
    let expected = b"--B1\r\nContent-Type: application/json\r\n\r\n{}\r\n--B1\r\n\
Content-Type: text/plain\r\n\r\nline one\nline two\n\r\n--B1--\r\n";
    for chunk in [1, 2, 5, 4096] {
        assert_eq!(
            normalise("B1", lf, chunk),
            expected.to_vec(),
            "chunk {chunk}"
        );
    }
}

/// Binary bytes with CRs and LFs in them are not touched.
#[test]
fn binary_body_is_untouched() {
    let payload: Vec<u8> = (0..=255u8).cycle().take(5000).collect();
    let mut body = b"--xyz\r\n\r\n{}\r\n--xyz\r\nContent-Type: a/b\r\n\r\n".to_vec();
    body.extend_from_slice(&payload);
    body.extend_from_slice(b"\r\n--xyz--\r\n");
    for chunk in [1, 3, 100, 10_000] {
        assert_eq!(normalise("xyz", &body, chunk), body, "chunk {chunk}");
    }
}

/// A preamble, a part's header block or the metadata part longer than its limit fails the
/// body as soon as the limit is passed, whatever the chunking; at the limit it is accepted.
#[test]
fn framing_over_its_limits_fails() {
    let limits = Limits {
        preamble: 100,
        headers: 200,
        first_part: 300,
    };
    let body = |preamble: usize, header: usize, metadata: usize| {
        let mut b = "p".repeat(preamble).into_bytes();
        b.extend_from_slice(b"--B1\r\nX-Pad: ");
        b.extend_from_slice("h".repeat(header).as_bytes());
        b.extend_from_slice(b"\r\n\r\n");
        b.extend_from_slice("{".repeat(metadata).as_bytes());
        b.extend_from_slice(b"\r\n--B1\r\nContent-Type: a/b\r\n\r\n");
        b.extend_from_slice(&[7u8; 5000]);
        b.extend_from_slice(b"\r\n--B1--\r\n");
        b
    };
    for chunk in [1, 7, 64, 100_000] {
        let ok = frame("B1", &body(100, 100, 300), chunk, limits);
        assert!(ok.is_ok(), "{chunk} {ok:?}");
        assert_eq!(
            frame("B1", &body(101, 100, 300), chunk, limits),
            Err(Overflow::Preamble(100))
        );
        assert_eq!(
            frame("B1", &body(0, 200, 300), chunk, limits),
            Err(Overflow::Headers(200))
        );
        assert_eq!(
            frame("B1", &body(0, 0, 301), chunk, limits),
            Err(Overflow::FirstPart(300))
        );
    }
}

/// An endless preamble or header line fails after the limit, having held back almost nothing:
/// the framer never buffers what it has not matched.
#[test]
fn endless_framing_fails_without_buffering() {
    let limits = Limits::default();
    for head in [&b""[..], b"--B1\r\nX-Long: "] {
        let mut framer = Framer::new("B1", limits);
        let mut out = framer.feed(head).unwrap().len();
        let chunk = [b'a'; 1024];
        let mut fed = 0;
        let failed = loop {
            fed += chunk.len();
            match framer.feed(&chunk) {
                Ok(bytes) => out += bytes.len(),
                Err(e) => break e,
            }
            assert!(fed < 1 << 20, "never failed");
        };
        assert!(fed <= limits.headers + 2048, "{failed}: failed after {fed}");
        assert!(out <= fed + head.len(), "nothing invented");
        assert!(framer.feed(b"--B1").is_err(), "stays failed");
    }
}

/// The epilogue after the close delimiter is not framing: it is passed through unchecked.
#[test]
fn epilogue_is_not_limited() {
    let mut body = b"--B1\r\n\r\n{}\r\n--B1\r\n\r\nbytes\r\n--B1--\r\n".to_vec();
    body.extend_from_slice(&[b'e'; 100_000]);
    assert_eq!(normalise("B1", &body, 4096), body);
}

proptest! {
    /// However a body is cut into chunks, the framer gives the same bytes and the same verdict.
    #[test]
    fn chunking_does_not_matter(
        body in proptest::collection::vec(
            prop_oneof![Just(b'\n'), Just(b'\r'), Just(b'-'), Just(b'B'), Just(b'x')], 0..400),
        chunk in 1usize..50,
    ) {
        let limits = Limits { preamble: 40, headers: 40, first_part: 60 };
        let whole = frame("B", &body, body.len().max(1), limits);
        prop_assert_eq!(frame("B", &body, chunk, limits), whole);
    }
}

/// Boundaries are read quoted or not; other types and absurd boundaries are refused.
#[test]
fn boundary_from_content_type() {
    assert_eq!(
        boundary("multipart/mixed; boundary=abc123").as_deref(),
        Some("abc123")
    );
    assert_eq!(
        boundary("multipart/mixed; boundary=\"a:b c\"").as_deref(),
        Some("a:b c")
    );
    assert_eq!(boundary("Multipart/Mixed;boundary=X").as_deref(), Some("X"));
    assert_eq!(boundary("application/json"), None);
    assert_eq!(boundary("multipart/mixed"), None);
    assert_eq!(
        boundary(&format!("multipart/mixed; boundary={}", "a".repeat(71))),
        None
    );
}

/// `filename*` wins over `filename`; quoting, escapes and path separators are handled.
#[test]
fn filenames_from_disposition() {
    assert_eq!(
        disposition_filename("inline; filename=cat.png").as_deref(),
        Some("cat.png")
    );
    assert_eq!(
        disposition_filename("attachment; filename=\"a \\\"b\\\"; c.txt\"").as_deref(),
        Some("a \"b\"; c.txt")
    );
    assert_eq!(
        disposition_filename("inline; filename=x.bin; filename*=utf-8''%C3%A9t%C3%A9.png")
            .as_deref(),
        Some("été.png")
    );
    assert_eq!(
        disposition_filename("inline; filename=\"../../etc/passwd\"").as_deref(),
        Some("....etcpasswd")
    );
    assert_eq!(disposition_filename("inline"), None);
    assert_eq!(disposition_filename("inline; filename=\"\""), None);
}

/// Remote content types are stored only when they are well-formed.
#[test]
fn content_types_are_sanitised() {
    assert_eq!(sanitize_content_type(Some("image/png")), "image/png");
    assert_eq!(
        sanitize_content_type(Some("text/plain; charset=utf-8")),
        "text/plain; charset=utf-8"
    );
    for bad in [
        None,
        Some(""),
        Some("nonsense"),
        Some("text/html\r\nX: y"),
        Some("*/*"),
    ] {
        assert_eq!(
            sanitize_content_type(bad),
            "application/octet-stream",
            "{bad:?}"
        );
    }
}
