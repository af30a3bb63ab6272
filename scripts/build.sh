#!/usr/bin/env bash
# SPDX-License-Identifier: GPL-2.0-or-later
# Configures (once) and builds a tree: ./build, or DIR with meson OPTIONs, e.g.
#   scripts/build.sh build-san -Db_sanitize=address,undefined -Dbenchmarks=false
# scripts/test.sh (CI) adds -Dwerror=true; a plain build leaves warnings warnings.
set -euo pipefail
cd "$(dirname "$0")/.."
dir="${1:-build}"
shift || true
if [ -f "$dir/build.ninja" ]; then
  meson setup --reconfigure "$dir" "$@" >/dev/null
else
  meson setup "$dir" "$@"
fi
meson compile -C "$dir"
