#![allow(
    clippy::indexing_slicing,
    reason = "a test indexes what it just asserted the shape of; a panic is a test failure"
)]
use std::path::Path;

use super::{CertResolver, TlsError};

/// A self-signed certificate for `localhost` and its key, as PEM.
fn pair() -> (String, String) {
    let rcgen::CertifiedKey { cert, signing_key } =
        rcgen::generate_simple_self_signed(vec!["localhost".to_owned()]).unwrap();
    (cert.pem(), signing_key.serialize_pem())
}

fn write(dir: &Path, (cert, key): &(String, String)) {
    std::fs::write(dir.join("cert.pem"), cert).unwrap();
    std::fs::write(dir.join("key.pem"), key).unwrap();
}

fn served(resolver: &CertResolver) -> Vec<u8> {
    resolver.current().cert[0].to_vec()
}

fn der(pem: &str) -> Vec<u8> {
    use rustls::pki_types::{CertificateDer, pem::PemObject as _};
    CertificateDer::from_pem_slice(pem.as_bytes())
        .unwrap()
        .to_vec()
}

/// A reload serves the files as they are now; a failed one keeps what was served.
#[test]
fn reload_swaps_or_keeps() {
    let dir = tempfile::tempdir().unwrap();
    let (first, second) = (pair(), pair());
    write(dir.path(), &first);
    let resolver =
        CertResolver::load(&dir.path().join("cert.pem"), &dir.path().join("key.pem")).unwrap();
    assert_eq!(served(&resolver), der(&first.0));

    write(dir.path(), &second);
    resolver.reload().unwrap();
    assert_eq!(served(&resolver), der(&second.0));

    std::fs::write(dir.path().join("cert.pem"), "not a certificate").unwrap();
    assert!(matches!(resolver.reload(), Err(TlsError::NoCert { .. })));
    assert_eq!(served(&resolver), der(&second.0));

    // A certificate with someone else's key: refused, not served.
    std::fs::write(dir.path().join("cert.pem"), &first.0).unwrap();
    assert!(matches!(resolver.reload(), Err(TlsError::Mismatch { .. })));
    assert_eq!(served(&resolver), der(&second.0));

    std::fs::remove_file(dir.path().join("key.pem")).unwrap();
    assert!(matches!(resolver.reload(), Err(TlsError::Key { .. })));
    assert_eq!(served(&resolver), der(&second.0));
}

/// Start-up fails on an unusable pair, and the message names the file.
#[test]
fn load_names_the_bad_file() {
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("missing.pem");
    let err = CertResolver::load(&missing, &missing).unwrap_err();
    assert!(err.to_string().contains("missing.pem"), "{err}");
}
