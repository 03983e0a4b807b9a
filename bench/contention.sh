#!/usr/bin/env bash
# How much each executor slows down when another core streams through memory: both executors run on
# one thread pinned to CPU 0 (`occam run --compare --threads 1`, interleaved), first alone, then with
# a STREAM-triad antagonist pinned to CPU 1. Prints min and median per executor and the slowdowns.
#
#   bench/contention.sh BUILD_DIR [RUNS] [CAPACITY...] [MODEL@RESOLUTION...]
#   e.g. bench/contention.sh build/release 10
#        bench/contention.sh build/release 10 l3 4MiB 2MiB mobilenet_v2@1024
#
# MODEL@RESOLUTION: the nets (default mobilenet_v2@1024 and dncnn@512). CAPACITY: what the fused executor's plan is made for (`occam run --sram`, default l3: this
# machine's last-level cache). The fused executor keeps its working set (line buffers, a partition's
# filters) in cache, so it should lose less to a bandwidth hog than the layer-by-layer reference,
# which streams every tensor through DRAM. How much less depends on the plan: the antagonist
# refills the shared L3 every few milliseconds, and a plan for the whole L3 reuses a deep layer's
# filters less often than that, where a plan for a few MiB reuses its partition's within it (at
# the price of more main-memory traffic: boundaries between partitions). On a machine shared with
# other tenants, run it several times and compare.
set -euo pipefail
build=${1:?usage: contention.sh BUILD_DIR [RUNS] [CAPACITY...] [MODEL@RESOLUTION...]}
runs=${2:-10}
shift $(($# < 2 ? $# : 2))
capacities=()
nets=()
for arg in "$@"; do
  if [[ $arg == *@* ]]; then nets+=("${arg/@/ }"); else capacities+=("$arg"); fi
done
((${#capacities[@]})) || capacities=(l3)
((${#nets[@]})) || nets=("mobilenet_v2 1024" "dncnn 512")
occam="$build/tools/occam/occam"
triad="$build/bench/triad"
export OMP_WAIT_POLICY=passive

measure() {  # model resolution capacity -> "fused_min fused_median reference_min reference_median"
  taskset -c 0 "$occam" run "$1" --resolution "$2" --sram "$3" --compare --threads 1 --runs "$runs" --png /dev/null |
    awk '/^latency fused/ {f = $4 " " $7} /^latency reference/ {r = $4 " " $7} END {print f, r}'
}

printf "%-14s %-6s %-8s %-10s %11s %11s %11s %11s\n" model input plan condition "fused min" "fused med" "ref min" "ref med"
for net in "${nets[@]}"; do
  read -r model resolution <<< "$net"
  for capacity in "${capacities[@]}"; do
    read -r fmin fmed rmin rmed <<< "$(measure "$model" "$resolution" "$capacity")"
    printf "%-14s %-6s %-8s %-10s %11s %11s %11s %11s\n" "$model" "$resolution" "$capacity" alone "$fmin" "$fmed" "$rmin" "$rmed"
    taskset -c 1 "$triad" 3600 > /dev/null &
    antagonist=$!
    sleep 1
    read -r cfmin cfmed crmin crmed <<< "$(measure "$model" "$resolution" "$capacity")"
    kill "$antagonist" 2> /dev/null || true
    wait "$antagonist" 2> /dev/null || true
    printf "%-14s %-6s %-8s %-10s %11s %11s %11s %11s\n" "$model" "$resolution" "$capacity" "with triad" "$cfmin" "$cfmed" "$crmin" "$crmed"
    awk -v f="$fmed" -v cf="$cfmed" -v r="$rmed" -v cr="$crmed" -v m="$model" -v c="$capacity" \
      'BEGIN {printf "%-14s plan %-8s slowdown (median): fused %.2fx, reference %.2fx\n", m, c, cf / f, cr / r}'
  done
done
