#!/usr/bin/env bash
# Provisions the Debian 12 guest: Rust for root, then the project's own setup
# (nightly rust-src, LLVM 22, bpf-linker, test tools).
set -euo pipefail
export DEBIAN_FRONTEND=noninteractive
apt-get update
apt-get install -y --no-install-recommends ca-certificates curl gcc libc6-dev git iproute2 ethtool
if [[ ! -x /root/.cargo/bin/cargo ]]; then
    curl -fsSL https://sh.rustup.rs | sh -s -- -y --profile minimal --default-toolchain stable
fi
source /root/.cargo/env
rustup toolchain install nightly --profile minimal -c rust-src
cd /vagrant
cargo xtask setup
cargo xtask build-ebpf
echo "ready: vagrant ssh; sudo -i; cd /vagrant && cargo xtask demo"
