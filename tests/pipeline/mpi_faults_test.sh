#!/usr/bin/env bash
# Faults in the MPI pipeline, launched as users launch it: every case must stop the whole run with
# a non-zero exit and a message naming the culprit, within 30 s, and never print a throughput line
# (a complete-looking result).
#   usage: mpi_faults_test.sh MPIEXEC OCCAM
set -u
mpiexec=$1
occam=$2
mpirun=("$mpiexec" --allow-run-as-root --oversubscribe)
# 3 partitions: rank 0 feeds and collects, ranks 1-3 are the stages.
model=(resnet18 --resolution 64 --sram 64MiB --cut-before layer2.0.conv2,layer4.0.conv1)
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
failures=0

check() {  # name, exit code, log, regex, seconds
  local name=$1 code=$2 log=$3 regex=$4 seconds=$5
  if [[ $code -eq 0 ]]; then echo "FAIL $name: exit code 0"; failures=$((failures + 1)); return; fi
  if ! grep -Eq "$regex" "$log"; then echo "FAIL $name: no line matching /$regex/ in:"; cat "$log"; failures=$((failures + 1)); return; fi
  if grep -q '^throughput:' "$log"; then echo "FAIL $name: printed a throughput line"; failures=$((failures + 1)); return; fi
  if (( seconds > 30 )); then echo "FAIL $name: took $seconds s"; failures=$((failures + 1)); return; fi
  echo "ok   $name: exit $code after $seconds s: $(grep -Em1 "$regex" "$log")"
}

# Starts a long stream in the background (mpirun_pid) and waits until every stage rank has compiled
# and announced itself; sets victim to the pid of rank $1.
start_stream() {
  local rank=$1 log=$2
  shift 2
  "${mpirun[@]}" -np 4 "$occam" pipeline "${model[@]}" --images 200000 "$@" >"$log" 2>&1 &
  mpirun_pid=$!
  for _ in $(seq 600); do
    if (( $(grep -c '^rank [0-9]* (pid' "$log") == 3 )); then break; fi
    sleep 0.1
  done
  sleep 2  # into the stream
  victim=$(sed -n "s/^rank $rank (pid \([0-9]*\).*/\1/p" "$log")
}

wait_bounded() {  # waits for mpirun_pid at most 60 s; sets code to its exit code
  for _ in $(seq 600); do
    if ! kill -0 "$mpirun_pid" 2>/dev/null; then wait "$mpirun_pid"; code=$?; return; fi
    sleep 0.1
  done
  kill -9 "$mpirun_pid"; wait "$mpirun_pid"; code=124
}

# 1. A rank killed mid-stream (SIGKILL: no chance to clean up).
log=$work/kill.log
start_stream 2 "$log"
start=$SECONDS
if [[ -z $victim ]]; then echo "FAIL kill: rank 2 never announced itself"; cat "$log"; exit 1; fi
kill -9 "$victim"
wait_bounded
check "rank 2 killed mid-stream" "$code" "$log" "rank 2 .*(signal 9|Killed)|process rank 2" $((SECONDS - start))

# 2. A rank that stops answering (SIGSTOP): its neighbours give up after --timeout.
log=$work/stall.log
start_stream 2 "$log" --timeout 5
start=$SECONDS
if [[ -z $victim ]]; then echo "FAIL stall: rank 2 never announced itself"; cat "$log"; exit 1; fi
kill -STOP "$victim"
wait_bounded
kill -9 "$victim" 2>/dev/null
check "rank 2 stalled mid-stream" "$code" "$log" "occam: error: rank [0-9] .*(from|by) rank 2 \(stage 1" $((SECONDS - start))

# 3. Too few ranks for the plan: one agreed message, printed once.
log=$work/ranks.log
start=$SECONDS
"${mpirun[@]}" -np 2 "$occam" pipeline "${model[@]}" --images 4 >"$log" 2>&1
code=$?
check "too few ranks" "$code" "$log" "occam: error: rank 0: .*needs 4 MPI ranks .* but mpirun started 2" $((SECONDS - start))
if (( $(grep -c 'occam: error' "$log") != 1 )); then echo "FAIL too few ranks: the error is not printed exactly once"; cat "$log"; failures=$((failures + 1)); fi

# 4. A plan file that only some ranks could read is the same as none: all stop, the reader named.
log=$work/plan.log
start=$SECONDS
"${mpirun[@]}" -np 4 "$occam" pipeline resnet18 --resolution 64 --images 4 --plan "$work/missing.json" >"$log" 2>&1
code=$?
check "missing plan file" "$code" "$log" "occam: error: rank 0: .*missing.json" $((SECONDS - start))

exit $((failures > 0))
