use super::{decode, decode_url_safe, encode, encode_url_safe};

const VECTORS: [(&str, &str); 7] = [
    ("", ""),
    ("f", "Zg"),
    ("fo", "Zm8"),
    ("foo", "Zm9v"),
    ("foob", "Zm9vYg"),
    ("fooba", "Zm9vYmE"),
    ("foobar", "Zm9vYmFy"),
];

/// The unpadded base64 test vectors of [spec: unpadded base64](https://spec.matrix.org/v1.16/appendices/#unpadded-base64) encode exactly and decode back.
#[test]
fn spec_vectors() {
    for (plain, encoded) in VECTORS {
        assert_eq!(encode(plain), encoded);
        assert_eq!(decode(encoded).unwrap(), plain.as_bytes());
    }
}

/// Decoders accept padded input too ([spec: unpadded base64](https://spec.matrix.org/v1.16/appendices/#unpadded-base64) SHOULD).
#[test]
fn padded_input_accepted() {
    assert_eq!(decode("Zg==").unwrap(), b"f");
    assert_eq!(decode("Zm8=").unwrap(), b"fo");
    assert_eq!(decode("Zm9vYmFy").unwrap(), b"foobar");
}

/// Garbage, wrong padding, and the other alphabet are refused by the standard decoder.
#[test]
fn bad_input_refused() {
    for bad in ["Z", "Zg===", "Zm9v!", "Zm 9v", "-_-_", "Zm9v\n"] {
        assert!(decode(bad).is_err(), "{bad:?}");
    }
}

/// The URL-safe variant uses `-` and `_` and is only accepted by its own decoder.
#[test]
fn url_safe_variant() {
    let bytes = [0xfb, 0xff, 0xbf];
    assert_eq!(encode(bytes), "+/+/");
    assert_eq!(encode_url_safe(bytes), "-_-_");
    assert_eq!(decode_url_safe("-_-_").unwrap(), bytes);
    assert!(decode_url_safe("+/+/").is_err());
}

/// Non-zero trailing bits are ignored, as Python's decoder does (the spec's seed relies on it).
#[test]
fn trailing_bits_ignored() {
    assert_eq!(decode("Zh").unwrap(), b"f");
    assert_eq!(
        decode("YJDBA9Xnr2sVqXD9Vj7XVUnmFZcZrlw8Md7kMW+3XA1")
            .unwrap()
            .len(),
        32
    );
}
