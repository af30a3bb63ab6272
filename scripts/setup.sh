#!/usr/bin/env bash
# SPDX-License-Identifier: GPL-2.0-or-later
# The one setup path: installs what building, the tests and the demo need on a fresh
# Debian 12 machine, and caches the lab kernel. Idempotent and quiet when all is there.
set -euo pipefail
cd "$(dirname "$0")/.."

packages=(
  # build
  meson ninja-build g++ pkg-config binutils
  libmnl-dev libnl-3-dev libnl-route-3-dev libnetfilter-conntrack-dev nlohmann-json3-dev catch2
  # the man pages (man/*.scd)
  scdoc
  # the daemon's --metrics endpoint (agent/metrics.cpp): a maintained HTTP server and the
  # Prometheus text format, not a hand-written server facing whatever connects
  prometheus-cpp-dev libcivetweb-dev
  # sd_notify and sd_journal_sendv: libsystemd is the reference implementation of the
  # notify and journal protocols, better than our own copy of them (agent/ only)
  libsystemd-dev
  # tests: schema check, packets
  python3 python3-jsonschema python3-scapy
  # the unit suite's fuzz run (fuzz/): clang, and libFuzzer, which clang only recommends
  clang libclang-rt-14-dev
  # the lab: Debian's stock kernel under qemu, and the tools run inside it
  qemu-system-x86 busybox-static kmod cpio iproute2 conntrack ethtool tcpdump
  # nat_ipfix's collectors: nfcapd/nfdump receive and store, tshark (and its dumpcap) decode
  nfdump tshark
)

as_root() { if [ "$(id -u)" -eq 0 ]; then "$@"; else sudo "$@"; fi; }

missing=()
for p in "${packages[@]}"; do
  status=$(dpkg-query -W -f='${Status}' "$p" 2>/dev/null || true)
  [ "$status" = "install ok installed" ] || missing+=("$p")
done
if [ "${#missing[@]}" -gt 0 ]; then
  echo "setup: installing ${missing[*]}"
  as_root apt-get update -q
  as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends "${missing[@]}"
fi

# The lab kernel (linux-image-amd64 of Debian 12) and its initramfs, cached outside
# the tree so a fresh clone does not download it again.
as_root /usr/bin/python3 test/lab/lab.py prepare
