#!/bin/sh
# vm-test layer "load": the real daemon, with the default limits, loads the
# XDP program into this kernel (the verifier runs here) and attaches it
# natively to a veth; then detaches on SIGTERM. A verifier rejection shows
# up in the daemon's output just above the FAIL marker.
set -u
# shellcheck source=/dev/null # written by xtask/src/vm/rootfs.rs
. /vm/env
fail() { echo "load: $*"; exit 1; }

ip link add vt0 type veth peer name vt1 || fail "cannot create a veth pair"
ip addr add 198.18.1.1/24 dev vt0
ip link set vt1 up
ip link set vt0 up
cat >/tmp/load.yaml <<CONFIG
interfaces: [vt0]
xdp_mode: native
snat: { ipv4: 198.18.1.1, ports: 20000-29999 }
services:
  - name: web
    vip: 198.18.100.10
    port: 80
    protocol: tcp
    backends:
      - { address: 198.18.1.11, port: 8080 }
CONFIG

"$XDPLB" run --config /tmp/load.yaml &
pid=$!
start=$(date +%s)
until wget -q -O /tmp/metrics http://127.0.0.1:9100/metrics 2>/dev/null; do
    kill -0 "$pid" 2>/dev/null || { wait "$pid"; fail "xdplb exited ($?) before it was ready"; }
    [ $(($(date +%s) - start)) -lt 180 ] || { kill -9 "$pid"; fail "xdplb not ready after 180 s"; }
    sleep 1
done
echo "load: daemon ready after $(($(date +%s) - start)) s"
link=$(ip link show dev vt0)
echo "$link"
case "$link" in
*xdpgeneric*) kill "$pid"; fail "attached in generic mode, expected native" ;;
*prog/xdp*) ;;
*) kill "$pid"; fail "no XDP program on vt0" ;;
esac
grep '^xdplb_xdp_packets_total' /tmp/metrics | head -5

kill -TERM "$pid"
wait "$pid"
rc=$?
[ "$rc" -eq 0 ] || fail "xdplb exited $rc on SIGTERM"
case "$(ip link show dev vt0)" in
*prog/xdp*) fail "program still attached after SIGTERM" ;;
esac
ip link del vt0
echo "load: loaded, attached natively, detached"
