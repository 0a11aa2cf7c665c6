//! Fuzzes canonical JSON: it must never panic, and its output must be a fixed point.
#![no_main]

use libfuzzer_sys::fuzz_target;
use mxmedia_proto::canonical_json::{canonical_json, canonical_json_str};

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if let Ok(canonical) = canonical_json_str(text) {
        let Ok(value) = serde_json::from_str::<serde_json::Value>(&canonical) else {
            panic!("canonical output is not JSON: {canonical}");
        };
        assert_eq!(canonical_json(&value).as_deref(), Ok(canonical.as_str()));
    }
});
