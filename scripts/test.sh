#!/usr/bin/env bash
# SPDX-License-Identifier: GPL-2.0-or-later
# README command two: set up, build, run the unit suite on the host and the lab suite
# on Debian 12's kernel under qemu, run the unit suite again in a tree built with
# AddressSanitizer and UBSan, then print one closing line for the whole run.
# Warnings are errors here (CI runs this), not in a user's or a packager's build.
# DPO_TEST_SANITIZE=0 leaves the sanitizer tree out.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
scripts/build.sh build -Dwerror=true

status=0
# The unit suite includes the short fuzz run (fuzz/, scripts/fuzz.sh smoke).
meson test -C build --suite unit --suite lab --verbose "$@" || status=$?
logs=(build/meson-logs/testlog.json)

if [ "${DPO_TEST_SANITIZE:-1}" != 0 ]; then
  # Everything but the benchmarks under ASan+UBSan (a finding aborts: meson.build), at
  # -O1 with line tables: stacks with file:line, half the compile time of -O2 -g.
  scripts/build.sh build-san -Dwerror=true -Db_sanitize=address,undefined -Dbenchmarks=false \
    -Doptimization=1 -Ddebug=false -Dcpp_args=-g1
  # Tests run 2-4x slower under ASan: 3x the timeouts, and 50 of the engine test's 300
  # random sequences (they reach the same code, which the sanitizers are there to watch).
  DPO_ENGINE_SEQUENCES=50 meson test -C build-san --suite unit --timeout-multiplier 3 --verbose || status=$?
  logs+=(build-san/meson-logs/testlog.json)
fi

# meson's own summary is not a line CI reads; count its results into one that is.
/usr/bin/python3 - "${logs[@]}" <<'PY'
import json, sys
counts = {}
for log in sys.argv[1:]:
    for line in open(log):
        r = json.loads(line)["result"]
        counts[r] = counts.get(r, 0) + 1
passed = counts.get("OK", 0) + counts.get("EXPECTEDFAIL", 0)
failed = sum(v for k, v in counts.items() if k not in ("OK", "EXPECTEDFAIL", "SKIP"))
print(f"{passed} passed, {failed} failed, {counts.get('SKIP', 0)} skipped")
PY
exit "$status"
