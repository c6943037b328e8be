#!/bin/busybox sh
# shellcheck shell=dash disable=SC2086,SC2013 # word lists, on purpose
# /init of the `cargo xtask vm-test` guest (a busybox initramfs built by
# xtask/src/vm/rootfs.rs). Sets up what the tests expect of a host, runs
# every test named in /vm/plan, and reports each on the serial console as
#   VMTEST START name / VMTEST PASS name / VMTEST FAIL name / VMTEST SKIP name
# for the host to parse; then powers off. Never exits: PID 1 exiting panics.

# busybox --install finds itself through /proc/self/exe.
/bin/busybox mount -t proc proc /proc
/bin/busybox --install -s /bin
export PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin
export HOME=/root TMPDIR=/tmp RUST_BACKTRACE=1

mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev
mkdir -p /dev/pts /dev/shm /run /tmp /root /var
chmod 1777 /tmp
mount -t devpts devpts /dev/pts
# /tmp stays on the initramfs (already in RAM): the daemon may sit below it.
mount -t tmpfs tmpfs /run
mount -t tmpfs tmpfs /dev/shm
# ip netns keeps its namespaces under /var/run/netns.
ln -sfn /run /var/run
mount -t debugfs debugfs /sys/kernel/debug 2>/dev/null
# Room for the tests' many sockets; no locked-memory cap on BPF maps.
ulimit -n 65536
ulimit -l unlimited

echo "VMTEST BOOT $(uname -r) uptime=$(cut -d' ' -f1 /proc/uptime)s cpus=$(nproc)"

# Kernel modules the tests need (veth, bridge, ipip, virtio-net), in
# dependency order: the host resolved them from the kernel package.
while read -r m; do
    insmod "/vm/modules/$m.ko" || echo "vm init: insmod $m failed"
done </vm/modules.list

# XDPLB (the daemon's path), and ip/ethtool as the host's tools: busybox
# sh runs its own applets before anything in PATH.
# shellcheck source=/dev/null # written by xtask/src/vm/rootfs.rs
. /vm/env
ip link set lo up
hostname xdplb-vm
test_args=$(cat /vm/test-args 2>/dev/null)

run() { # NAME COMMAND...: one test with its markers
    name=$1
    shift
    echo "VMTEST START $name"
    "$@"
    rc=$?
    if [ "$rc" -eq 0 ]; then
        echo "VMTEST PASS $name"
    else
        echo "VMTEST FAIL $name exit=$rc"
    fi
    # Leftovers of a failed test must not break the next one.
    for ns in $(ip netns list 2>/dev/null | cut -d' ' -f1); do ip netns del "$ns"; done
    return "$rc"
}

load_failed=
for t in $(cat /vm/plan); do
    # Without a loadable program every other test fails the same way, slowly
    # (each load runs the verifier to its limit): report them skipped.
    if [ -n "$load_failed" ] && [ "$t" != testbed ]; then
        echo "VMTEST SKIP $t (the program did not load)"
        continue
    fi
    case "$t" in
    load) run load sh /vm/load.sh || load_failed=1 ;;
    virtio) run virtio sh /vm/virtio.sh ;;
    *) cd /tmp && run "$t" "/vm/tests/$t" $test_args ;;
    esac
done

echo "VMTEST DONE uptime=$(cut -d' ' -f1 /proc/uptime)s"
sync
poweroff -f
sleep 10
