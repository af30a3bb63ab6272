#!/usr/bin/env bash
# SPDX-License-Identifier: GPL-2.0-or-later
# Builds the Debian package from a copy of the tree (packaging/debian becomes
# debian/ there), leaving the .deb in ./build/deb/.
set -euo pipefail
cd "$(dirname "$0")/.."
out="$PWD/build/deb"
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
git archive --format=tar --prefix=dpoffload/ HEAD | tar -x -C "$work"
cp -r packaging/debian "$work/dpoffload/debian"
(cd "$work/dpoffload" && dpkg-buildpackage -us -uc -b)
mkdir -p "$out"
mv "$work"/*.deb "$out"/
ls -l "$out"
