#!/bin/sh
# vm-test layer "virtio": native XDP on virtio-net, the NIC of most VMs.
# QEMU wires two virtio-net NICs of this guest together (a hub with two
# ports: xtask/src/vm/qemu.rs). The client namespace sends through one; the
# LB (this namespace) receives on the other with the program attached in
# native mode, NATs to a backend behind a veth, and sends the replies back
# out through virtio-net (XDP_REDIRECT into its ndo_xdp_xmit).
#
#   [vcli] NIC .02 198.18.0.2 ==qemu hub== NIC .01 198.18.0.1 [LB] lbb 198.18.1.1 --- eth0 198.18.1.11 [vbe: httpd]
set -u
# shellcheck source=/dev/null # written by xtask/src/vm/rootfs.rs
. /vm/env
pid=
fail() {
    echo "virtio: $*"
    echo "virtio: state for diagnosis:"
    ip -s link show dev "$lb"
    ip neigh
    ip -n vcli -s link
    ip -n vcli neigh
    ip -n vbe -s link
    ip -n vbe neigh
    wget -q -O - http://127.0.0.1:9100/metrics 2>/dev/null | grep -E '^xdplb_(xdp_packets|dataplane_events|backend_packets)'
    [ -n "$pid" ] && kill "$pid"
    exit 1
}
nic() { # MAC: the interface that has it
    for d in /sys/class/net/*; do
        if [ "$(cat "$d/address")" = "$1" ]; then basename "$d"; fi
    done
}

lb=$(nic 52:54:00:78:64:01)
cli=$(nic 52:54:00:78:64:02)
if [ -z "$lb" ] || [ -z "$cli" ]; then
    fail "the two virtio-net NICs are missing: $(ls /sys/class/net)"
fi
driver=$(basename "$(readlink "/sys/class/net/$lb/device/driver")")
echo "virtio: LB NIC $lb (driver $driver), client NIC $cli"

ip netns add vcli
ip netns add vbe
ip link set "$cli" netns vcli
ip -n vcli link set lo up
ip -n vcli addr add 198.18.0.2/24 dev "$cli"
ip -n vcli link set "$cli" up
ip -n vcli route add 198.18.100.0/24 via 198.18.0.1
ip addr add 198.18.0.1/24 dev "$lb"
ip link set "$lb" up
ip link add lbb type veth peer name eth0 netns vbe
ip addr add 198.18.1.1/24 dev lbb
ip link set lbb up
ip -n vbe link set lo up
ip -n vbe addr add 198.18.1.11/24 dev eth0
ip -n vbe link set eth0 up
ip -n vbe route add default via 198.18.1.1
# Frames redirected into a veth reach its peer only with GRO (or XDP)
# there; senders must put full checksums on the wire (no TX offload).
ip netns exec vbe ethtool -K eth0 gro on tx off >/dev/null || fail "ethtool on the backend"
# Before 5.13 GRO is not enough: an XDP program, the decapsulator (it passes
# all that is not tunnelled to it), pinned on the host's bpffs (nsenter).
for d in /run/netns /var/run/netns; do [ -e "$d/vbe" ] && vbe="$d/vbe"; done
nsenter --net="$vbe" "$XDPLB" decap attach eth0 >/dev/null || fail "xdplb decap attach on the backend"
ip netns exec vcli ethtool -K "$cli" tx off >/dev/null 2>&1

mkdir -p /srv/be1
echo backend-1 >/srv/be1/index.html
head -c 1048576 /dev/urandom >/srv/be1/blob
ip netns exec vbe httpd -f -p 198.18.1.11:8080 -h /srv/be1 &

cat >/tmp/virtio.yaml <<CONFIG
interfaces: [$lb, lbb]
xdp_mode: native
snat: { ipv4: 198.18.1.1, ports: 20000-29999 }
limits: { max_services: 8, max_backends: 16, maglev_table_size: 1021, flow_table_size: 4096 }
services:
  - name: web
    vip: 198.18.100.10
    port: 80
    protocol: tcp
    backends:
      - { address: 198.18.1.11, port: 8080 }
CONFIG
"$XDPLB" run --config /tmp/virtio.yaml &
pid=$!
start=$(date +%s)
until wget -q -O /tmp/metrics http://127.0.0.1:9100/metrics 2>/dev/null; do
    kill -0 "$pid" 2>/dev/null || { wait "$pid"; pid=; fail "xdplb exited before it was ready"; }
    [ $(($(date +%s) - start)) -lt 120 ] || fail "xdplb not ready after 120 s"
    sleep 1
done
link=$(ip link show dev "$lb")
echo "$link"
case "$link" in
*xdpgeneric*) fail "$lb attached in generic mode, expected native" ;;
*prog/xdp*) echo "virtio: native XDP on $lb ($driver)" ;;
*) fail "no XDP program on $lb" ;;
esac

# (busybox 1.35's wget -T crashes: bound it with timeout instead.)
get() { ip netns exec vcli timeout 10 wget -q -O "$2" "http://198.18.100.10$1"; }
# The first connection may wait for ARP.
n=0
until get / /tmp/body; do
    n=$((n + 1))
    [ $n -lt 10 ] || fail "no answer through the VIP"
done
ok=0
for _ in $(seq 20); do
    if get / /tmp/body && [ "$(cat /tmp/body)" = backend-1 ]; then ok=$((ok + 1)); fi
done
echo "virtio: $ok/20 requests through the VIP answered by backend-1"
[ $ok -eq 20 ] || fail "only $ok of 20 requests succeeded"
get /blob /tmp/blob || fail "1 MiB download failed"
cmp /srv/be1/blob /tmp/blob || fail "1 MiB download corrupted"
echo "virtio: 1 MiB download intact"

wget -q -O /tmp/metrics http://127.0.0.1:9100/metrics || fail "metrics"
grep '^xdplb_xdp_packets_total' /tmp/metrics
redirects=$(awk '/^xdplb_xdp_packets_total.*action="redirect"/ { s += $NF } END { print s + 0 }' /tmp/metrics)
[ "$redirects" -gt 0 ] || fail "no packet was redirected by XDP"
echo "virtio: $redirects packets redirected by XDP"

# What the driver said about XDP (e.g. fewer TX queues than CPUs: XDP_TX
# and redirects then share them under a lock).
dmesg | grep -i xdp | sed 's/^/virtio: kernel: /'

kill -TERM "$pid"
wait "$pid" || fail "xdplb exited $? on SIGTERM"
pid=
echo "virtio: passed"
