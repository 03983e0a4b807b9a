#!/usr/bin/env bash
# Images per second of one plan run six ways on this machine, side by side in one run:
#   one process, whole graph, 1 thread     (one chip: the simulator's single-chip baseline)
#   one process, whole graph, 2 threads    (the whole machine, no pipeline)
#   thread pipeline, one thread per stage, without and with STAP (chip budget STAGES + 1)
#   MPI pipeline, one rank per stage (plus rank 0 feeding), without and with STAP (one more rank)
# Rounds are interleaved, so that load drifting on this shared machine hits every mode alike; each
# mode reports its best and median images/s over the rounds and its ratios to the two one-process
# runs, beside the simulator's prediction for this CPU (hardware "cpu-core") and its ratio to one chip.
#
# usage: bench/pipeline_throughput.sh OCCAM [ROUNDS] [-- MODEL OPTIONS...]
#   default model options: resnet18 --resolution 128 --sram 32MiB --images 64 (2 partitions)
set -euo pipefail
occam=${1:?usage: pipeline_throughput.sh OCCAM [ROUNDS] [-- MODEL OPTIONS...]}
rounds=${2:-5}
shift $(( $# >= 2 ? 2 : 1 ))
[[ ${1:-} == -- ]] && shift
model=("$@")
(( ${#model[@]} )) || model=(resnet18 --resolution 128 --sram 32MiB --images 64)
mpirun=(mpirun --allow-run-as-root --oversubscribe)

# A warm-up run, which also tells how many partitions the plan has.
stages=$("$occam" pipeline "${model[@]}" --single | sed -n 's/^plan: \([0-9]*\) partitions.*/\1/p')
: "${stages:?could not run occam pipeline ${model[*]}}"
chips=$((stages + 1))

names=("one process, 1 thread" "one process, 2 threads" "threads, $stages stages" "threads + STAP ($chips chips)"
       "MPI, $stages stage ranks" "MPI + STAP ($chips stage ranks)")
run_mode() {
  case $1 in
    0) "$occam" pipeline "${model[@]}" --single --threads 1 ;;
    1) "$occam" pipeline "${model[@]}" --single --threads 2 ;;
    2) "$occam" pipeline "${model[@]}" ;;
    3) "$occam" pipeline "${model[@]}" --stap --chips "$chips" ;;
    4) "${mpirun[@]}" -np $((stages + 1)) "$occam" pipeline "${model[@]}" ;;
    5) "${mpirun[@]}" -np $((chips + 1)) "$occam" pipeline "${model[@]}" --stap ;;
  esac
}

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
echo "model: ${model[*]}; $stages partitions; $rounds interleaved rounds; load before: $(cut -d' ' -f1-3 /proc/loadavg)"
for round in $(seq "$rounds"); do
  for mode in 0 1 2 3 4 5; do
    run_mode $mode >"$work/out" 2>&1 || { echo "mode '${names[$mode]}' failed:"; cat "$work/out"; exit 1; }
    sed -n 's/^throughput: \([0-9.]*\) images.*/\1/p' "$work/out" >>"$work/measured.$mode"
    sed -n 's/^predicted throughput: \([0-9.]*\) images.*/\1/p' "$work/out" | head -1 >"$work/predicted.$mode"
    if (( round == 1 )) && grep -q '^stage balance' "$work/out"; then
      echo "${names[$mode]}: $(grep '^stage balance' "$work/out")"
    fi
  done
done
echo "load after: $(cut -d' ' -f1-3 /proc/loadavg)"

# best and median images/s per mode
for mode in 0 1 2 3 4 5; do
  sort -g "$work/measured.$mode" | awk '{v[NR]=$1} END {m = NR % 2 ? v[(NR+1)/2] : (v[NR/2]+v[NR/2+1])/2; print v[NR], m}' >"$work/stats.$mode"
done
read -r one_best one_median <"$work/stats.0"
read -r two_best two_median <"$work/stats.1"
one_predicted=$(cat "$work/predicted.0")
printf '\n%-30s %9s %9s | %-19s | %-19s | %9s %8s\n' "images/s" best median "vs 1 thread (b/m)" "vs 2 threads (b/m)" predicted "vs chip"
for mode in 0 1 2 3 4 5; do
  read -r best median <"$work/stats.$mode"
  predicted=$(cat "$work/predicted.$mode")
  awk -v n="${names[$mode]}" -v b="$best" -v m="$median" -v b1="$one_best" -v m1="$one_median" -v b2="$two_best" \
      -v m2="$two_median" -v p="$predicted" -v p1="$one_predicted" -v two="$mode" 'BEGIN {
    pred = (two == 1) ? "-" : sprintf("%.1f", p); pr = (two == 1) ? "-" : sprintf("%.2fx", p / p1);
    printf "%-30s %9.2f %9.2f | %8.2fx %8.2fx | %8.2fx %8.2fx | %9s %8s\n", n, b, m, b / b1, m / m1, b / b2, m / m2, pred, pr }'
done
echo "(best = fastest round; predicted: the simulator on one core per chip; the 2-thread process has no single-chip prediction)"
