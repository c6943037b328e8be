//! Types and pure logic shared by the XDP program and the daemon.
//!
//! Every map key and value is `#[repr(C)]` with explicit padding, and holds
//! only integers (no bool, Option or enum), so both sides agree on the bytes.
//!
//! Byte order: addresses (`[u32; 4]`) and ports (`u16`) hold the packet's
//! bytes as they are on the wire, read as native integers (`addr` converts
//! both ways). IPv4 uses word 0 and zeroes the rest. Everything else is host
//! order.
#![no_std]

pub mod addr;
pub mod csum;
pub mod hash;
pub mod maps;

pub use addr::*;
pub use maps::*;
