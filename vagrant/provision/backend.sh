#!/usr/bin/env bash
# Provisions a lab backend: a real HTTP server (Python's http.server, whose
# page names the backend) on BACKEND_ADDR:HTTP_PORT and a UDP echo on
# BACKEND_ADDR:UDP_PORT. The backends need nothing else: the balancer NATs
# (replies go back to its address on the shared network).
#
# Environment (defaults in lab.env): BACKEND_ADDR (required), BACKEND_NAME
# (default: the host name), BACKEND_IF (default: the NIC holding
# BACKEND_ADDR), HTTP_PORT, UDP_PORT, LAB_DIR, LAB_SERVICES (common.sh).
set -euo pipefail
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
. "$here/lab.env"
. "$here/common.sh"
: "${BACKEND_ADDR:?set BACKEND_ADDR (e.g. $BACKEND1_ADDR)}"
: "${BACKEND_NAME:=$(hostname)}"

need python3 python3
need ethtool ethtool
need curl curl
nic=${BACKEND_IF:-$(nic_with "$BACKEND_ADDR")}
full_checksums "$nic"

mkdir -p "$LAB_DIR/www"
echo "$BACKEND_NAME" >"$LAB_DIR/www/index.html"
chmod -R a+rX "$LAB_DIR"
start_service http python3 -m http.server --bind "$BACKEND_ADDR" --directory "$LAB_DIR/www" "$HTTP_PORT"
start_service udp-echo python3 "$here/udp_echo.py" "$BACKEND_ADDR" "$UDP_PORT"
wait_for "HTTP on $BACKEND_ADDR:$HTTP_PORT" 30 curl -fsS --max-time 2 "http://$BACKEND_ADDR:$HTTP_PORT/"
say "backend $BACKEND_NAME serves HTTP on $BACKEND_ADDR:$HTTP_PORT and a UDP echo on $BACKEND_ADDR:$UDP_PORT ($nic, $LAB_SERVICES)"
