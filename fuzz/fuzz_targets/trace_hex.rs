//! The `--hex` frames of `xdplb trace` (also the reproducers the packet
//! fuzzer prints): `trace::capture::parse_hex`, then the frame's summary.
//!
//! Holds: no panic; the bytes read are the hex digits given (written back
//! as hex they read the same); the summary describes the whole frame.

#![no_main]

use libfuzzer_sys::fuzz_target;
use xdplb::trace::{Summary, capture};

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    match capture::parse_hex(text) {
        Ok(frame) => {
            assert!(!frame.data.is_empty());
            let hex: String = frame.data.iter().map(|b| format!("{b:02x}")).collect();
            let trimmed = text.trim();
            let body = trimmed
                .strip_prefix("0x")
                .or_else(|| trimmed.strip_prefix("0X"))
                .unwrap_or(trimmed);
            let digits = body.chars().filter(char::is_ascii_hexdigit).count();
            assert_eq!(hex.len(), digits, "{text:?}");
            let again = capture::parse_hex(&hex).expect("hex written back reads");
            assert_eq!(again, frame);
            assert_eq!(Summary::of_frame(&frame.data).len, frame.data.len());
        }
        Err(e) => assert!(e.to_string().starts_with("--hex "), "{e}"),
    }
});
