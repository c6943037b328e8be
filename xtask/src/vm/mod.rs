//! The pieces of `cargo xtask vm-test` (driven by vm_test.rs): host
//! packages and .debs through apt, the guest kernels, the guest's initramfs
//! (cpio), QEMU, and the serial-console report.

pub mod apt;
pub mod cpio;
pub mod kernel;
pub mod qemu;
pub mod report;
pub mod rootfs;
