# shellcheck shell=bash
# What the lab's provision scripts share (sourced, not run).
#
# Where services run: LAB_SERVICES=systemd (units, the default on a host
# booted with systemd: the Vagrant machines) or process (plain background
# processes with a pid file and a log in LAB_DIR: a host or a namespace
# without systemd, as the test runs them). LAB_DIR holds each role's
# files.
: "${LAB_DIR:=/var/lib/xdplb-lab}"
if [[ -z "${LAB_SERVICES:-}" ]]; then
    if [[ -d /run/systemd/system ]]; then LAB_SERVICES=systemd; else LAB_SERVICES=process; fi
fi
mkdir -p "$LAB_DIR"

say() { echo "xdplb-lab: $*"; }
die() {
    echo "xdplb-lab: $*" >&2
    exit 1
}

# need COMMAND PACKAGE: installs Debian's PACKAGE if COMMAND is missing.
need() {
    command -v "$1" >/dev/null && return
    say "installing $2 (for $1)"
    DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends "$2" >/dev/null ||
        { apt-get update >/dev/null && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends "$2" >/dev/null; } ||
        die "cannot install $2"
}

# nic_with ADDRESS: the interface holding the IPv4 ADDRESS (Vagrant names
# the NICs of a private network in its own order: find them by address).
nic_with() {
    local nic
    nic=$(ip -o -4 addr show to "$1/32" | awk '{ print $2; exit }')
    [[ -n "$nic" ]] || die "no interface has $1 (ip -4 addr: $(ip -o -4 addr | awk '{ print $2, $4 }' | tr '\n' ' '))"
    echo "$nic"
}

# full_checksums NIC: senders must put full checksums on the wire. With TX
# checksum offload a virtio-net or veth sender hands the frame on with a
# partial checksum, which XDP on the balancer cannot see or complete.
full_checksums() {
    ethtool -K "$1" tx off >/dev/null || die "ethtool -K $1 tx off"
}

# start_service NAME COMMAND...: runs COMMAND as service xdplb-lab-NAME
# (a systemd unit, or a background process), restarting it if it runs.
start_service() {
    local name=$1
    shift
    if [[ "$LAB_SERVICES" == systemd ]]; then
        cat >"/etc/systemd/system/xdplb-lab-$name.service" <<UNIT
[Unit]
Description=xdplb lab: $name
After=network-online.target
Wants=network-online.target
[Service]
ExecStart=$*
DynamicUser=yes
Restart=on-failure
[Install]
WantedBy=multi-user.target
UNIT
        systemctl daemon-reload
        systemctl enable "xdplb-lab-$name.service" >/dev/null 2>&1
        systemctl restart "xdplb-lab-$name.service"
    else
        start_process "$name" "$@"
    fi
}

# start_process NAME COMMAND...: COMMAND in the background, in its own
# session (it outlives this script), its pid in LAB_DIR/NAME.pid and its
# output in LAB_DIR/NAME.log.
start_process() {
    local name=$1 pidfile="$LAB_DIR/$1.pid"
    shift
    if [[ -f "$pidfile" ]]; then
        kill "$(cat "$pidfile")" 2>/dev/null || true
    fi
    setsid "$@" >"$LAB_DIR/$name.log" 2>&1 </dev/null &
    echo $! >"$pidfile"
}

# wait_for WHAT SECONDS COMMAND...: retries COMMAND once a second until it
# succeeds, at most SECONDS.
wait_for() {
    local what=$1 seconds=$2
    shift 2
    for ((i = 0; i < seconds; i++)); do
        "$@" >/dev/null 2>&1 && return 0
        sleep 1
    done
    die "$what: not there after ${seconds}s ($*)"
}
