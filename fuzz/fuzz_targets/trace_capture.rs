//! The capture files of `xdplb trace`: pcap (either byte order, micro- or
//! nanosecond timestamps) and pcapng, read by `trace::capture::parse`,
//! then each frame summarised as the report does (`Summary::of_frame`).
//!
//! Holds: no panic; a capture that reads has frames, none longer on the
//! wire than captured; summaries describe the whole frame.

#![no_main]

use std::path::Path;

use libfuzzer_sys::fuzz_target;
use xdplb::trace::{Summary, capture};

fuzz_target!(|data: &[u8]| {
    match capture::parse(Path::new("fuzz.pcap"), data) {
        Ok(c) => {
            assert!(!c.frames.is_empty(), "a capture without frames was read");
            for f in &c.frames {
                assert!(f.orig_len as usize >= f.data.len(), "{f:?}");
                let s = Summary::of_frame(&f.data);
                assert_eq!(s.len, f.data.len());
                assert!(!s.text.is_empty());
            }
        }
        Err(e) => assert!(e.to_string().starts_with("fuzz.pcap: "), "{e}"),
    }
});
