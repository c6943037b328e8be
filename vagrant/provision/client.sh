#!/usr/bin/env bash
# Provisions the lab's client: curl and nc, full checksums on the wire,
# the VIPs routed through the balancer; then asks the VIP over HTTP and
# UDP until it answers (the whole lab working end to end).
#
# Environment (defaults in lab.env): CLIENT_ADDR, CLIENT_IF (default: the
# NIC holding CLIENT_ADDR), LB_FRONT_ADDR, VIP, VIP_NET, WAIT (seconds to
# wait for the VIP: the other machines may still be provisioning).
set -euo pipefail
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
. "$here/lab.env"
. "$here/common.sh"
: "${WAIT:=300}"

need curl curl
need nc netcat-openbsd
need ethtool ethtool
nic=${CLIENT_IF:-$(nic_with "$CLIENT_ADDR")}
full_checksums "$nic"
ip route replace "$VIP_NET" via "$LB_FRONT_ADDR" dev "$nic"

wait_for "HTTP through the VIP $VIP" "$WAIT" curl -fsS --max-time 2 "http://$VIP/"
for _ in 1 2 3 4; do
    say "curl http://$VIP/: $(curl -fsS --max-time 2 "http://$VIP/")"
done
echo_udp() { [[ "$(echo lab-ping | nc -u -w 2 "$VIP" 53)" == lab-ping ]]; }
wait_for "the UDP echo through $VIP:53" 30 echo_udp
say "the UDP echo on $VIP:53 answers"
say "ready: vagrant ssh client -c 'curl $VIP'"
