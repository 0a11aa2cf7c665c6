use super::{RangeRequest, content_disposition, content_type_header, is_inline, parse_range};

/// Content-Type / Content-Disposition cases for [serving inline content](https://spec.matrix.org/v1.16/client-server-api/#serving-inline-content).
#[test]
fn disposition_vectors() {
    let cases = [
        (
            "image/png",
            Some("cat.png"),
            "image/png",
            "inline; filename=cat.png",
        ),
        ("image/png", None, "image/png", "inline"),
        (
            "application/pdf",
            Some("War and Peace.pdf"),
            "application/pdf",
            "attachment; filename*=utf-8''War%20and%20Peace.pdf",
        ),
        (
            "text/plain",
            Some("日本.txt"),
            "text/plain; charset=UTF-8",
            "inline; filename*=utf-8''%E6%97%A5%E6%9C%AC.txt",
        ),
        (
            "text/html",
            Some("x.html"),
            "text/html; charset=UTF-8",
            "attachment; filename=x.html",
        ),
        (
            "image/svg+xml",
            Some("a.svg"),
            "image/svg+xml; charset=UTF-8",
            "attachment; filename=a.svg",
        ),
        (
            "IMAGE/PNG",
            Some("a.png"),
            "IMAGE/PNG",
            "inline; filename=a.png",
        ),
        (
            "video/mp4; codecs=avc1",
            None,
            "video/mp4; codecs=avc1",
            "inline",
        ),
        (
            "application/octet-stream",
            None,
            "application/octet-stream",
            "attachment",
        ),
    ];
    for (stored, name, sent_type, sent_disposition) in cases {
        assert_eq!(content_type_header(stored), sent_type);
        let disposition = if is_inline(stored) {
            "inline"
        } else {
            "attachment"
        };
        assert_eq!(
            content_disposition(disposition, name),
            sent_disposition,
            "{stored} {name:?}"
        );
    }
}

/// A stored name can never inject a header line.
#[test]
fn disposition_strips_control_characters() {
    let header = content_disposition("attachment", Some("evil\r\nSet-Cookie: a=b.txt"));
    assert!(!header.contains('\r') && !header.contains('\n'));
    assert!(header.starts_with("attachment; filename*=utf-8''"));
}

#[test]
fn ranges() {
    assert_eq!(parse_range(None, 100), RangeRequest::Full);
    assert_eq!(
        parse_range(Some("bytes=0-9"), 100),
        RangeRequest::Partial { start: 0, end: 9 }
    );
    assert_eq!(
        parse_range(Some("bytes=90-"), 100),
        RangeRequest::Partial { start: 90, end: 99 }
    );
    assert_eq!(
        parse_range(Some("bytes=-10"), 100),
        RangeRequest::Partial { start: 90, end: 99 }
    );
    assert_eq!(
        parse_range(Some("bytes=-1000"), 100),
        RangeRequest::Partial { start: 0, end: 99 }
    );
    assert_eq!(
        parse_range(Some("bytes=50-1000"), 100),
        RangeRequest::Partial { start: 50, end: 99 }
    );
    assert_eq!(
        parse_range(Some("bytes=100-"), 100),
        RangeRequest::Unsatisfiable
    );
    assert_eq!(
        parse_range(Some("bytes=-0"), 100),
        RangeRequest::Unsatisfiable
    );
    assert_eq!(parse_range(Some("bytes=0-1,5-6"), 100), RangeRequest::Full);
    assert_eq!(parse_range(Some("bytes=9-1"), 100), RangeRequest::Full);
    assert_eq!(parse_range(Some("items=0-1"), 100), RangeRequest::Full);
    assert_eq!(
        parse_range(Some("bytes=0-"), 0),
        RangeRequest::Unsatisfiable
    );
}
