#!/usr/bin/env bash
# SPDX-License-Identifier: GPL-2.0-or-later
# Builds the Debian source and binary packages from a copy of the tree (its files as
# they are, committed or not; packaging/debian becomes debian/ there) and leaves all
# of them in ./build/deb/: the .dsc and .tar.xz (source), the .deb files, the
# .buildinfo and the .changes that lists them (`lintian build/deb/*.changes` checks
# them all). The package build runs the unit suite (DEB_BUILD_OPTIONS=nocheck skips it).
#
#   packaging/build-deb.sh [--out DIR] [dpkg-buildpackage options, e.g. -b]
set -euo pipefail
cd "$(dirname "$0")/.."
out="$PWD/build/deb"
if [ "${1:-}" = --out ]; then
  out=$(realpath -m "$2")
  shift 2
fi
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

src="$work/dpoffload"
packaging/copy-tree.sh "$src"
(cd "$src" && dpkg-buildpackage -us -uc "$@")

mkdir -p "$out"
# What this build made, by the names in its .changes (and the .changes itself).
changes=$(ls "$work"/*.changes)
for f in $(sed -n '/^Files:/,/^[^ ]/s/^ [0-9a-f]\{32\} [0-9]* [^ ]* [^ ]* //p' "$changes") \
         "$(basename "$changes")"; do
  mv "$work/$f" "$out/"
done
ls -l "$out"
