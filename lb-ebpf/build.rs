// The eBPF build links with the `bpf-linker` binary, an undeclared
// dependency: rebuild when it changes (for instance after `xtask setup`).
fn main() {
    let linker = which::which("bpf-linker").expect("bpf-linker not found: run `cargo xtask setup`");
    println!("cargo:rerun-if-changed={}", linker.display());
    // bpf-linker asks LLVM for `-bpf-expand-memcpy-in-order` by default,
    // which also turns every memset and memmove (zeroed structs, header
    // copies) into a call to a function of its own: a second stack frame,
    // which pushed the combined stack over 512 bytes on older kernels
    // (6.1). Without it LLVM writes them out as plain loads and stores.
    println!("cargo:rustc-link-arg-bins=--disable-expand-memcpy-in-order");
}
