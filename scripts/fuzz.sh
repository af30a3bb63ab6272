#!/usr/bin/env bash
# SPDX-License-Identifier: GPL-2.0-or-later
# The libFuzzer harnesses of fuzz/ (fuzz/README.md): built with clang in a tree of
# their own, run from the committed seed corpus.
#
#   scripts/fuzz.sh list                      the harnesses
#   scripts/fuzz.sh build                     configure (once) and build the clang tree
#   scripts/fuzz.sh run HARNESS SECONDS [ARG...]
#                                             a long run: new inputs go to a scratch
#                                             directory (build-fuzz/scratch/HARNESS), the
#                                             committed corpus is read only; a crash is
#                                             written to fuzz/crashes/HARNESS/
#   scripts/fuzz.sh merge HARNESS             add the scratch inputs that find new
#                                             coverage to fuzz/corpus/HARNESS (minimized)
#   scripts/fuzz.sh replay HARNESS FILE...    run inputs once (a crash's reproducer)
#   scripts/fuzz.sh smoke [SECONDS]           every harness SECONDS (default 20) each
#                                             from the corpus: what the unit suite runs.
#                                             Exit 1 on a crash, 77 without clang
#                                             (or with DPO_FUZZ_SKIP=1)
#
# DPO_FUZZ_BUILD: the clang tree (default: build-fuzz in the source tree).
# Extra ARGs go to libFuzzer (-jobs=2, -only_ascii=1, ...).
set -euo pipefail
src="$(cd "$(dirname "$0")/.." && pwd)"
build="${DPO_FUZZ_BUILD:-$src/build-fuzz}"
harnesses=(mapping tc_filter punt_frame conntrack)

# Per-harness libFuzzer options: the mapping loader's inputs may be larger (its cap is
# 4 MiB; 16 KiB reaches every path) and come with a dictionary of the file's keys.
options() {
  case "$1" in
    mapping) echo "-max_len=16384 -dict=$src/fuzz/mapping.dict" ;;
    tc_filter | conntrack) echo "-max_len=4096" ;;
    punt_frame) echo "-max_len=256" ;;
  esac
}
# Bounded cost is part of what is fuzzed: an input taking over 10 s or 2 GiB is a finding.
# libFuzzer's own exit status for a crash is 77, which meson reads as "skipped": 1.
common=(-timeout=10 -rss_limit_mb=2048 -error_exitcode=1 -print_final_stats=1)

die() { echo "fuzz: $*" >&2; exit 1; }
skip() { echo "fuzz: SKIP: $*" >&2; exit 77; }
known() { local h; for h in "${harnesses[@]}"; do [ "$h" = "$1" ] && return 0; done; die "no harness '$1' (${harnesses[*]})"; }
binary() { echo "$build/fuzz/fuzz-${1//_/-}"; }

clangxx() {
  local c
  for c in "${CXX:-}" clang++ clang++-14; do
    [ -n "$c" ] && [[ "$c" == *clang* ]] && command -v "$c" >/dev/null && { echo "$c"; return 0; }
  done
  return 1
}

build_tree() {
  local cxx
  cxx=$(clangxx) || skip "no clang++ (Debian: apt-get install clang libclang-rt-14-dev; scripts/setup.sh does)"
  # libFuzzer itself is in libclang-rt-14-dev, which clang only recommends.
  if ! echo 'extern "C" int LLVMFuzzerTestOneInput(const char*, unsigned long) { return 0; }' |
      "$cxx" -x c++ -fsanitize=fuzzer,address,undefined -o /dev/null - 2>/dev/null; then
    skip "$cxx cannot link -fsanitize=fuzzer (Debian: apt-get install libclang-rt-14-dev; scripts/setup.sh does)"
  fi
  if [ ! -f "$build/build.ninja" ]; then
    # -O1 with line tables: what libFuzzer's documentation suggests, and quick to build.
    CXX="$cxx" meson setup "$build" "$src" -Dfuzz=true -Doptimization=1 -Ddebug=false -Dcpp_args=-g1 >/dev/null
  fi
  meson compile -C "$build" >/dev/null || { meson compile -C "$build"; die "the clang tree does not build"; }
}

cmd="${1:-}"
shift || true
case "$cmd" in
  list)
    printf '%s\n' "${harnesses[@]}"
    ;;
  build)
    build_tree
    echo "fuzz: built $build/fuzz/"
    ;;
  run)
    [ $# -ge 2 ] || die "usage: scripts/fuzz.sh run HARNESS SECONDS [libFuzzer ARG...]"
    h="$1" secs="$2"
    shift 2
    known "$h"
    build_tree
    scratch="$build/scratch/$h"
    mkdir -p "$scratch" "$src/fuzz/crashes/$h"
    # The first directory gets the new inputs; the committed corpus is only read.
    # shellcheck disable=SC2046
    exec "$(binary "$h")" "${common[@]}" $(options "$h") -max_total_time="$secs" \
      -artifact_prefix="$src/fuzz/crashes/$h/" "$@" "$scratch" "$src/fuzz/corpus/$h"
    ;;
  merge)
    [ $# -eq 1 ] || die "usage: scripts/fuzz.sh merge HARNESS"
    known "$1"
    build_tree
    # shellcheck disable=SC2046
    "$(binary "$1")" $(options "$1") -merge=1 "$src/fuzz/corpus/$1" "$build/scratch/$1"
    ;;
  replay)
    [ $# -ge 2 ] || die "usage: scripts/fuzz.sh replay HARNESS FILE..."
    h="$1"
    shift
    known "$h"
    build_tree
    # shellcheck disable=SC2046
    exec "$(binary "$h")" "${common[@]}" $(options "$h") "$@"
    ;;
  smoke)
    secs="${1:-20}"
    # An escape hatch while a known finding waits for its fix (say so in the commit).
    [ "${DPO_FUZZ_SKIP:-0}" = 0 ] || skip "DPO_FUZZ_SKIP is set"
    build_tree
    failed=()
    for h in "${harnesses[@]}"; do
      scratch="$build/smoke/$h"
      rm -rf "$scratch" && mkdir -p "$scratch/crash"
      log="$build/smoke/$h.log"
      status=0
      # shellcheck disable=SC2046
      # A fixed seed: the suite's run is the same walk every time (a gate must not turn
      # red by luck); long runs (`run`) draw a new seed each time and explore.
      "$(binary "$h")" "${common[@]}" $(options "$h") -max_total_time="$secs" -seed="${DPO_FUZZ_SEED:-1}" \
        -artifact_prefix="$scratch/crash/" "$scratch" "$src/fuzz/corpus/$h" >"$log" 2>&1 || status=$?
      # libFuzzer's final stats: how many inputs ran, and the coverage reached.
      runs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log" | tail -1)
      cov=$(grep -Eo 'cov: [0-9]+ ft: [0-9]+' "$log" | tail -1 || true)
      if [ "$status" -ne 0 ]; then
        echo "FAIL $h: exit $status after ${runs:-?} runs; reproducer in $scratch/crash/:"
        grep -E '^(==[0-9]+==ERROR|SUMMARY|mnl_checked|fuzz-|    #[0-9]+ )' "$log" | head -30 || tail -30 "$log"
        failed+=("$h")
      elif [ "${runs:-0}" -le 0 ]; then
        echo "FAIL $h: ran no input"
        tail -20 "$log"
        failed+=("$h")
      else
        echo "PASS $h: $runs runs in ${secs}s, $cov"
      fi
    done
    [ ${#failed[@]} -eq 0 ] || die "crashed: ${failed[*]} (scripts/fuzz.sh replay HARNESS FILE reproduces one)"
    ;;
  *)
    sed -n '3,22p' "$0" | sed 's/^# \{0,1\}//'
    [ -z "$cmd" ] && exit 2
    die "unknown command '$cmd'"
    ;;
esac
