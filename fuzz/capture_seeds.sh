#!/usr/bin/env bash
# SPDX-License-Identifier: GPL-2.0-or-later
# Re-captures the tc_filter and conntrack seed corpora from the lab's kernel (Debian
# 12's 6.1 under qemu): fuzz/capture_seeds.py runs in the guest and prints the
# datagrams; this writes them into fuzz/corpus/. Usage (the lab is shared: lock it):
#   flock /tmp/lab.lock fuzz/capture_seeds.sh BUILD_DIR     # BUILD_DIR/test/tc-probe
set -euo pipefail
cd "$(dirname "$0")/.."
build="$(cd "${1:?usage: fuzz/capture_seeds.sh BUILD_DIR}" && pwd)"
out=$(mktemp)
trap 'rm -f "$out"' EXIT
/usr/bin/python3 test/lab/lab.py shell-cmd --build-dir "$build" -- \
  /usr/bin/python3 fuzz/capture_seeds.py "$build" | tee "$out" | grep -v '^SEED ' || true
/usr/bin/python3 - "$out" <<'PY'
import pathlib, sys
n = {}
for line in open(sys.argv[1]):
    if line.startswith("SEED "):
        _, harness, name, data = line.split()
        d = pathlib.Path("fuzz/corpus") / harness
        d.mkdir(parents=True, exist_ok=True)
        (d / name).write_bytes(bytes.fromhex(data))
        n[harness] = n.get(harness, 0) + 1
print("captured:", ", ".join(f"{h} {c}" for h, c in sorted(n.items())) or "nothing")
sys.exit(0 if n.get("tc_filter") and n.get("conntrack") else 1)
PY
