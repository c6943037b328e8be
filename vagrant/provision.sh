#!/usr/bin/env bash
# Provisions the Debian 12 guest: Rust for root, then the project's own setup
# (nightly rust-src, LLVM 22, bpf-linker, test tools).
set -euo pipefail
export DEBIAN_FRONTEND=noninteractive
apt-get update
apt-get install -y --no-install-recommends ca-certificates curl gcc libc6-dev git iproute2 ethtool
# Debian 12's default 6.1 kernel cannot load xdplb's program yet (its
# verifier gives up; see docs/kernels.md): install 6.12, used after
# `vagrant reload`.
apt-get install -y --no-install-recommends linux-image-6.12-amd64
if [[ ! -x /root/.cargo/bin/cargo ]]; then
    curl -fsSL https://sh.rustup.rs | sh -s -- -y --profile minimal --default-toolchain stable
fi
source /root/.cargo/env
rustup toolchain install nightly --profile minimal -c rust-src
cd /vagrant
cargo xtask setup
cargo xtask build-ebpf
echo "ready: run 'vagrant reload' once (boots the 6.12 kernel), then"
echo "vagrant ssh; sudo -i; cd /vagrant && cargo xtask demo"
