#![no_std]
// The program is the `xdplb` binary (src/main.rs); this empty library lets
// lb-userspace declare a build-dependency on the crate.
