#!/usr/bin/env bash
# How much each executor slows down when another core streams through memory: both executors run on
# one thread pinned to CPU 0 (`occam run --compare --threads 1`, interleaved), first alone, then with
# a STREAM-triad antagonist pinned to CPU 1. Prints min and median per executor and the slowdowns.
#
#   bench/contention.sh BUILD_DIR [RUNS]        e.g. bench/contention.sh build/release 10
#
# The fused executor keeps its working set (line buffers, a partition's filters) in cache, so it should
# lose less to a bandwidth hog than the layer-by-layer reference, which streams every tensor through
# DRAM. On a machine shared with other tenants, run it twice and compare.
set -euo pipefail
build=${1:?usage: contention.sh BUILD_DIR [RUNS]}
runs=${2:-10}
occam="$build/tools/occam/occam"
triad="$build/bench/triad"
export OMP_WAIT_POLICY=passive

measure() {  # model resolution -> "fused_min fused_median reference_min reference_median"
  taskset -c 0 "$occam" run "$1" --resolution "$2" --compare --threads 1 --runs "$runs" --png /dev/null |
    awk '/^latency fused/ {f = $4 " " $7} /^latency reference/ {r = $4 " " $7} END {print f, r}'
}

printf "%-14s %-10s %-10s %11s %11s %11s %11s\n" model input condition "fused min" "fused med" "ref min" "ref med"
for net in "mobilenet_v2 1024" "dncnn 512"; do
  read -r model resolution <<< "$net"
  read -r fmin fmed rmin rmed <<< "$(measure "$model" "$resolution")"
  printf "%-14s %-10s %-10s %11s %11s %11s %11s\n" "$model" "$resolution" alone "$fmin" "$fmed" "$rmin" "$rmed"
  taskset -c 1 "$triad" 3600 > /dev/null &
  antagonist=$!
  sleep 1
  read -r cfmin cfmed crmin crmed <<< "$(measure "$model" "$resolution")"
  kill "$antagonist" 2> /dev/null || true
  wait "$antagonist" 2> /dev/null || true
  printf "%-14s %-10s %-10s %11s %11s %11s %11s\n" "$model" "$resolution" "with triad" "$cfmin" "$cfmed" "$crmin" "$crmed"
  awk -v f="$fmed" -v cf="$cfmed" -v r="$rmed" -v cr="$crmed" -v m="$model" \
    'BEGIN {printf "%-14s slowdown (median): fused %.2fx, reference %.2fx\n", m, cf / f, cr / r}'
done
