#!/usr/bin/env bash
# Provisions the lab's balancer: installs xdplb from the .deb built on the
# host (`cargo xtask package`), writes its config (VIP:80 over the
# backends' HTTP, VIP:53 over their UDP echo, nat mode, the XDP program on
# the front and back NICs, native mode by default), checks it with `xdplb
# check` and starts the daemon: the package's systemd unit, or a plain
# process where there is no systemd.
#
# Environment (defaults in lab.env and here):
#   DEB            the .deb to install; default: the newest xdplb_*.deb in
#   DEB_DIR        (the host's target/debian, synced)
#   XDPLB_ROOT     empty: install the .deb with apt-get (the machine's own
#                  package, its unit); a directory: unpack the .deb there
#                  (dpkg-deb -x) and run its binary as a process, leaving the
#                  host's package database alone
#   XDP_MODE       native | auto | generic
#   LB_FRONT_IF, LB_BACK_IF  default: the NICs holding LB_FRONT_ADDR, LB_BACK_ADDR
#   XDPLB_CONFIG, ADMIN_LISTEN, PIN_DIR, RUN_DIR  the config file and its keys
#   BACKENDS       the backends' addresses, space-separated
set -euo pipefail
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
. "$here/lab.env"
. "$here/common.sh"
: "${DEB_DIR:=/lab/deb}"
: "${DEB:=}"
: "${XDPLB_ROOT:=}"
: "${XDP_MODE:=native}"
: "${XDPLB_CONFIG:=/etc/xdplb/xdplb.yaml}"
: "${ADMIN_LISTEN:=127.0.0.1:9100}"
: "${PIN_DIR:=/sys/fs/bpf/xdplb}"
: "${RUN_DIR:=/run/xdplb}"
: "${BACKENDS:=$BACKEND1_ADDR $BACKEND2_ADDR}"

need ip iproute2
need curl curl
front=${LB_FRONT_IF:-$(nic_with "$LB_FRONT_ADDR")}
back=${LB_BACK_IF:-$(nic_with "$LB_BACK_ADDR")}
# shellcheck disable=SC2012 # the newest by time; the names are cargo-deb's
deb=${DEB:-$(ls -t "$DEB_DIR"/xdplb_*.deb 2>/dev/null | head -n 1)}
[[ -f "$deb" ]] || die "no xdplb_*.deb in $DEB_DIR: build it on the host with \`cargo xtask package\` (target/debian/), then \`vagrant provision lb\`"

# The program looks routes up with bpf_fib_lookup, which answers
# "forwarding disabled" unless the kernel forwards.
for key in ipv4/ip_forward ipv4/conf/all/forwarding "ipv4/conf/$front/forwarding" "ipv4/conf/$back/forwarding"; do
    echo 1 >"/proc/sys/net/$key"
done

backends() { # PORT: the backends' entries
    for b in $BACKENDS; do echo "      - { address: $b, port: $1 }"; done
}
mkdir -p "$(dirname "$XDPLB_CONFIG")"
cat >"$XDPLB_CONFIG" <<YAML
# Written by vagrant/provision/lb.sh: the lab's balancer.
interfaces: [$front, $back]
xdp_mode: $XDP_MODE
admin: { listen: $ADMIN_LISTEN }
snat: { ipv4: $LB_BACK_ADDR, ports: 20000-29999 }
limits: { max_services: 8, max_backends: 16, maglev_table_size: 65537, flow_table_size: 65536 }
pin_dir: $PIN_DIR
run_dir: $RUN_DIR
services:
  - name: web
    vip: $VIP
    port: 80
    protocol: tcp
    health_check: { type: http, path: /, interval: 1s, timeout: 500ms, rise: 1, fall: 3 }
    backends:
$(backends "$HTTP_PORT")
  - name: echo
    vip: $VIP
    port: 53
    protocol: udp
    health_check: { type: udp, interval: 1s, timeout: 500ms, rise: 1, fall: 3 }
    backends:
$(backends "$UDP_PORT")
YAML
chmod 0644 "$XDPLB_CONFIG"

if [[ -z "$XDPLB_ROOT" ]]; then
    say "installing $deb"
    # The config above is kept: the package's own is a conffile.
    DEBIAN_FRONTEND=noninteractive apt-get install -y -o Dpkg::Options::=--force-confold "$deb" >/dev/null ||
        die "apt-get install $deb"
    xdplb=/usr/bin/xdplb
else
    say "unpacking $deb into $XDPLB_ROOT"
    dpkg-deb -x "$deb" "$XDPLB_ROOT"
    xdplb=$XDPLB_ROOT/usr/bin/xdplb
fi
"$xdplb" --version
"$xdplb" check --config "$XDPLB_CONFIG"

if [[ -z "$XDPLB_ROOT" && "$LAB_SERVICES" == systemd ]]; then
    [[ "$XDPLB_CONFIG" == /etc/xdplb/xdplb.yaml ]] || die "the package's unit reads /etc/xdplb/xdplb.yaml, not $XDPLB_CONFIG"
    systemctl enable xdplb.service >/dev/null 2>&1
    systemctl restart xdplb.service
else
    start_process xdplb "$xdplb" run --config "$XDPLB_CONFIG"
fi
wait_for "xdplb ready (attached, admin API on $ADMIN_LISTEN)" 60 curl -fsS --max-time 2 "http://$ADMIN_LISTEN/readyz"
say "xdplb balances $VIP:80 (tcp) and $VIP:53 (udp) over $BACKENDS on $front and $back ($XDP_MODE XDP); admin API on $ADMIN_LISTEN"
