//! Fuzzes the X-Matrix header parser: it must never panic, and whatever it accepts must print
//! back to a header that parses to the same credential.
#![no_main]

use libfuzzer_sys::fuzz_target;
use mxmedia_proto::XMatrix;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if let Ok(parsed) = XMatrix::parse(text) {
        assert_eq!(XMatrix::parse(&parsed.to_string()), Ok(parsed));
    }
});
