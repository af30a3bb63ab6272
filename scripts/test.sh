#!/usr/bin/env bash
# SPDX-License-Identifier: GPL-2.0-or-later
# README command two: set up, build, run the unit suite on the host and the lab suite
# on Debian 12's kernel under qemu, then print one closing line for the whole run.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
scripts/build.sh

status=0
meson test -C build --suite unit --suite lab --verbose "$@" || status=$?

# meson's own summary is not a line CI reads; count its results into one that is.
/usr/bin/python3 - build/meson-logs/testlog.json <<'PY'
import json, sys
counts = {}
for line in open(sys.argv[1]):
    r = json.loads(line)["result"]
    counts[r] = counts.get(r, 0) + 1
passed = counts.get("OK", 0) + counts.get("EXPECTEDFAIL", 0)
failed = sum(v for k, v in counts.items() if k not in ("OK", "EXPECTEDFAIL", "SKIP"))
print(f"{passed} passed, {failed} failed, {counts.get('SKIP', 0)} skipped")
PY
exit "$status"
