#!/usr/bin/env bash
# SPDX-License-Identifier: GPL-2.0-or-later
# Copies the source tree as it is (tracked and new files, with uncommitted changes;
# no build directories, nothing git ignores) into DEST, with packaging/debian as
# DEST/debian: what dpkg-buildpackage builds from.
#
#   packaging/copy-tree.sh DEST
set -euo pipefail
cd "$(dirname "$0")/.."
dest=$1
mkdir -p "$dest"
if git rev-parse --is-inside-work-tree >/dev/null 2>&1; then
  # Deleted files are still in the index until committed: leave them out.
  git ls-files -z --cached --others --exclude-standard \
    | while IFS= read -r -d '' f; do [ -e "$f" ] || [ -L "$f" ] && printf '%s\0' "$f"; done \
    | tar --null -T - -cf - | tar -xf - -C "$dest"
else
  tar --exclude=./build --exclude='./build-*' --exclude='./obj-*' --exclude=./debian --exclude=./.git \
    -cf - . | tar -xf - -C "$dest"
fi
rm -rf "$dest/debian"
cp -r packaging/debian "$dest/debian"
