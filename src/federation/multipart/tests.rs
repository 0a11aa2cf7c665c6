use super::{Normalizer, boundary, disposition_filename, sanitize_content_type};

fn normalise(boundary: &str, input: &[u8], chunk: usize) -> Vec<u8> {
    let mut n = Normalizer::new(boundary);
    let mut out = Vec::new();
    for piece in input.chunks(chunk.max(1)) {
        out.extend_from_slice(&n.feed(piece));
    }
    out.extend_from_slice(&n.finish());
    out
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
