// The eBPF build links with the `bpf-linker` binary, an undeclared
// dependency: rebuild when it changes (for instance after `xtask setup`).
fn main() {
    let linker = which::which("bpf-linker").expect("bpf-linker not found: run `cargo xtask setup`");
    println!("cargo:rerun-if-changed={}", linker.display());
}
