#!/usr/bin/env bash
# SPDX-License-Identifier: GPL-2.0-or-later
# README command one: set up, build, boot the lab kernel and show dpoffloadd on a
# demo hypervisor built from examples/.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
scripts/build.sh >/dev/null
exec /usr/bin/python3 test/lab/lab.py demo --build-dir "$PWD/build"
