#!/usr/bin/env bash
# SPDX-License-Identifier: GPL-2.0-or-later
# Builds the two binary packages the lab's package_upgrade scenario installs one over
# the other, with the real packaging (debian/rules, debhelper's maintainer scripts):
# the tree's version V, and V+test1 (a changelog entry and meson's project version
# bumped, so the daemon's --version says it too). DEB_BUILD_OPTIONS=nocheck: the unit
# suite runs in the build of its own. The second build reuses the first's build tree
# (dpkg-buildpackage -nc): only the daemon's version recompiles.
#
#   packaging/lab-debs.sh OUTDIR MANIFEST [DEPFILE]
# writes OUTDIR/*.deb and MANIFEST (JSON: the two versions and .deb paths), and
# DEPFILE (every source file, for ninja) when given.
set -euo pipefail
out=$(realpath -m "$1")
manifest=$(realpath -m "$2")
depfile=${3:+$(realpath -m "$3")}
cd "$(dirname "$0")/.."
root=$PWD

rm -rf "$out"
mkdir -p "$out/work"
src="$out/work/dpoffload"
packaging/copy-tree.sh "$src"
if [ -n "$depfile" ]; then
  # ninja's depfile: the manifest depends on every file copied.
  # Not the lab's own scripts: they are not in the package (built without its tests).
  (cd "$src" && find . -type f ! -path './debian/*' ! -path './test/lab/scenarios/*' \
     ! -path './test/lab/guest/*' ! -path './test/lab/*.py' -printf '%P\n' | sort \
     | sed -e "s|^|$root/|" -e 's/ /\\ /g' | tr '\n' ' ' | sed -e "s|^|$manifest: |") > "$depfile.tmp"
  echo >> "$depfile.tmp"
  mv "$depfile.tmp" "$depfile"
fi

export DEB_BUILD_OPTIONS="nocheck parallel=$(nproc)"
old=$(cd "$src" && dpkg-parsechangelog -SVersion)
new="$old+test1"
(cd "$src" && dpkg-buildpackage -us -uc -b)

# The newer version: what `dch -v V+test1` would write, and meson's version to match.
(
  cd "$src"
  { printf 'dpoffload (%s) bookworm; urgency=medium\n\n' "$new"
    printf '  * Test build for the lab upgrade scenario.\n\n'
    printf ' -- dpoffload developers <dev@dpoffload.invalid>  %s\n\n' "$(date -R)"
    cat debian/changelog; } > debian/changelog.new
  mv debian/changelog.new debian/changelog
  sed -i -e "0,/version: '$old'/s//version: '$new'/" meson.build
  grep -q "version: '$new'" meson.build
  rm -f debian/debhelper-build-stamp
  dpkg-buildpackage -us -uc -b -nc
)

rm -f "$out"/work/*-dbgsym_*.deb
mv "$out"/work/*.deb "$out"/
rm -rf "$out/work"
arch=$(dpkg --print-architecture)
cat > "$manifest.tmp" <<JSON
{
  "old": {"version": "$old", "deb": "$out/dpoffloadd_${old}_${arch}.deb"},
  "new": {"version": "$new", "deb": "$out/dpoffloadd_${new}_${arch}.deb"}
}
JSON
for v in "$old" "$new"; do test -f "$out/dpoffloadd_${v}_${arch}.deb"; done
mv "$manifest.tmp" "$manifest"
ls -l "$out"
