#!/usr/bin/env bash
# Main-memory traffic of one inference, measured with valgrind's cache simulation, for the fused
# row-streaming executor and the layer-by-layer oneDNN reference, beside what the models predict.
#
#   bench/traffic.sh MODEL RESOLUTION [--sram SIZE] [--images N] [--jobs 1|2] [--only fused|reference]
#                    [--assoc N] [--build-dir DIR] [--out DIR] [--no-build] [--report-only] [--strict]
#                    [--driver PATH] [--isa AVX2|SSE41] [--plan-sram SIZE] [--band BYTES]
#   e.g. bench/traffic.sh mobilenet_v2 1024 --jobs 2
#        bench/traffic.sh dncnn 512 --sram 32MiB
#        bench/traffic.sh resnet18 224 --images 2
# --report-only reads the dumps of an earlier run in --out again; --strict exits 1 when a goal
# (fused within 1.25x of its prediction, reference >= 5x the fused DRAM traffic) is missed;
# --driver runs another traffic_driver binary (e.g. a saved one, to compare executor versions).
# --plan-sram plans for a capacity other than the simulated LL (default: the same): headroom for
# what the executor holds beyond the plan's closure and filters, or what the simulator sees twice
# (the double-mapped line buffers' second copies, see below).
# --band runs the fused executor with FusedOptions::band_bytes (occam run --band): 1 = one row per
# step everywhere, 0 = the executor's automatic bands.
# --isa caps oneDNN's kernels (ONEDNN_MAX_CPU_ISA, AVX2 by default): valgrind runs FMA instructions
# through helper calls, SSE4.1 code (no FMA) about 4x faster (dncnn 64x64: 62 s against 262 s);
# the kernels' own blocking differs, so the line counts do too (there: 3-17% more with SSE4.1).
#
# What runs. bench/traffic_driver (built here, next to `occam`, in DIR = build/traffic by default,
# configured with -DOCCAM_ARCH=x86-64-v3: valgrind 3.19 decodes AVX2 but not AVX-512, so neither our
# code nor oneDNN's JIT may use it; ONEDNN_MAX_CPU_ISA=AVX2 caps oneDNN on machines that have it).
# The plan is made first, natively, by `occam plan MODEL --resolution R --bytes-per-elem 4 --sram C
# --json plan.json` (row granularity, as plan_for_execution). Then one valgrind process per executor,
# one thread (OMP_NUM_THREADS=1; valgrind serialises threads anyway), runs the driver under
#   valgrind --tool=callgrind --cache-sim=yes --simulate-wb=yes --instr-atstart=no
#            --I1=32768,8,64 --D1=32768,8,64 --LL=C,A,64
# D1/I1 are this Zen 3's L1 (32 KiB, 8-way, 64 B lines); the last-level cache is set to exactly the
# capacity C the plan was made for, A-way with A chosen so that C / (A * 64) sets is a power of two
# (valgrind requires it; 16-way for 2^k MiB). callgrind has two levels: L1, then LL (inclusive, LRU,
# write-allocate; L1 write-through into LL, LL write-back with --simulate-wb=yes).
#
# What is measured. Only the inferences: the driver builds the model, loads the plan, compiles the
# executor (weights reordered) and writes N inputs into N separate buffers before it turns the
# simulation on (CALLGRIND_START_INSTRUMENTATION: the simulated caches start empty). Each image then
# is one Executor::run followed by CALLGRIND_DUMP_STATS_AT("image K"), one dump per image. Image 1
# is cold (every weight, code line and line buffer comes from memory); image 2 (and later) is the
# steady state of a stream, with fresh input and output buffers but whatever the previous image left
# in the cache. The table reports every image; goals are checked on the last (steady) and image 1
# (cold). More than two images show whether the steady state holds from image to image (the fused
# executor's classifier alternates the order of its weights' blocks).
#
# What is counted, in 64-byte lines, from callgrind's LL events:
#   reads       ILmr + DLmr    instruction and data read misses: lines loaded from memory
#   w-allocate  DLmw           write misses: on a write-allocate cache the line is loaded first
#                              (x86 without non-temporal stores does the same), so these are reads
#                              from memory too, of data that is about to be overwritten
#   write-backs ILdmr + DLdmr + DLdmw   misses that evicted a dirty line: one line written to memory
#                              (each is also counted as a miss above; a write-back is an extra line)
#   DRAM        reads + w-allocate + write-backs: what memory really moves
#   model       reads + write-backs: what the plan's model counts (a written byte moves once; an
#               accelerator, or non-temporal stores, writes without reading first)
# Dirty lines still cached when an image ends are written back during the next one: in the steady
# state this balances (each image leaves as much dirty data behind as it found); the cold image
# misses its own last write-backs. callgrind counts an access straddling two lines as one miss even
# when both miss (rare with the aligned vector code here).
#
# What the simulator sees of the fused executor (the line above the table): each line buffer's pages
# are mapped twice back to back so that every window of rows is contiguous; a window that runs past
# the end of a buffer reads the second mapping, the same memory (a physically tagged cache holds it
# once) but, to callgrind, which tags lines by virtual address, lines of their own. After the run
# the driver reads /proc/self/pagemap for the pages touched through each mapping of its memory files
# (a page table entry exists only for a page accessed through that mapping): the first mappings'
# pages are the line buffers and boundaries as a CPU holds them, the second mappings' the extra
# footprint that only the simulator sees. Depthwise windows over buffers of exactly their kernel's
# rows (mobilenet_v2's expanded tensors) read the buffer from its start with rotated kernel rows
# instead (FusedOptions::rotate_wrapping_windows), so that the second mappings stay nearly untouched
# (mobilenet_v2 1024: 0.04 MiB, against 4.32 MiB before the rotation).
#
# What is predicted, per image, at 4-byte elements:
#   fused, plan      the plan's traffic_bytes: each partition's boundary inputs read once and outputs
#                    written once (the network input and output are boundaries), plus any fallback;
#                    filters are resident (the plan's model: one chip per partition, loaded once per
#                    stream) and not included.
#   fused, 1 cache   what one cache of C running the partitions one after another moves: the plan,
#                    plus every filter byte once per image when there are several partitions (each
#                    partition's filters evict the previous one's); with one partition the filters
#                    stay resident in the steady state. The cold image adds all filters in any case.
#                    This is the figure the measurement is compared with ("fused/pred").
#   reference        the base case, Analysis::base_case_activation_bytes() (every op reads its inputs
#                    and writes its output; Concat/Flatten are views) + all filters once per image.
#                    A real cache of C keeps tensors smaller than C, so the measurement may be lower;
#                    and it adds write-allocate fills of the outputs (shown as "+alloc").
# Weights: filters are read once per image by both executors whenever they are not resident; the
# steady-state figures count them where the cache could not keep them, and the cold figures always.
#
# Run time: callgrind with cache simulation runs 50-100x slower than native (one thread): resnet18 at
# 224x224 takes about a minute per executor, mobilenet_v2 at 1024x1024 and dncnn at 512x512 tens of
# minutes (dncnn's reference most: 17 full-resolution 64-channel layers). --jobs 2 runs the two
# executors side by side on 2 cores; --images 1 halves the time (cold figures only).
set -euo pipefail

usage() {
  awk '/^# What runs/ { exit } NR > 1 { sub(/^# ?/, ""); print }' "$0"
  exit "${1:-2}"
}
die() {
  echo "traffic.sh: $*" >&2
  exit 1
}

root=$(cd "$(dirname "$0")/.." && pwd)
[[ $# -ge 1 && ( $1 == -h || $1 == --help ) ]] && usage 0
[[ $# -ge 2 ]] || usage
model=$1
resolution=$2
shift 2
sram=32MiB
images=2
jobs=1
only=both
assoc=auto
build="$root/build/traffic"
out=""
do_build=1
strict=0
report_only=0
driver=""
isa=AVX2
plan_sram=""
band=0
while [[ $# -gt 0 ]]; do
  case $1 in
    --sram) sram=${2:?--sram needs a size}; shift 2 ;;
    --images) images=${2:?--images needs a number}; shift 2 ;;
    --jobs) jobs=${2:?--jobs needs 1 or 2}; shift 2 ;;
    --only) only=${2:?--only needs fused or reference}; shift 2 ;;
    --assoc) assoc=${2:?--assoc needs a number}; shift 2 ;;
    --build-dir) build=${2:?--build-dir needs a directory}; shift 2 ;;
    --out) out=${2:?--out needs a directory}; shift 2 ;;
    --no-build) do_build=0; shift ;;
    --strict) strict=1; shift ;;
    --report-only) report_only=1; shift ;;
    --driver) driver=${2:?--driver needs a path}; shift 2 ;;
    --isa) isa=${2:?--isa needs AVX2 or SSE41}; shift 2 ;;
    --plan-sram) plan_sram=${2:?--plan-sram needs a size}; shift 2 ;;
    --band) band=${2:?--band needs a number of bytes}; shift 2 ;;
    -h | --help) usage 0 ;;
    *) echo "traffic.sh: unknown option $1" >&2; usage ;;
  esac
done
[[ $images =~ ^[1-9][0-9]*$ ]] || die "--images $images: expected a positive number"
[[ $jobs == 1 || $jobs == 2 ]] || die "--jobs $jobs: expected 1 or 2"
[[ $only == both || $only == fused || $only == reference ]] || die "--only $only: expected fused or reference"
[[ $isa == AVX2 || $isa == SSE41 ]] || die "--isa $isa: expected AVX2 or SSE41"
[[ $band =~ ^[0-9]+$ ]] || die "--band $band: expected a number of bytes (0: the executor's automatic bands)"
command -v valgrind > /dev/null || die "valgrind not found (Debian: apt-get install valgrind)"

# --- capacity in bytes, and an associativity that gives a power-of-two number of sets
to_bytes() {
  local text=$1 number unit
  [[ $text =~ ^([0-9]+)([A-Za-z]*)$ ]] || die "--sram $text: expected a whole number with an optional unit (B, KiB, MiB, KB, MB)"
  number=${BASH_REMATCH[1]}
  unit=$(tr '[:upper:]' '[:lower:]' <<< "${BASH_REMATCH[2]}")
  case $unit in
    "" | b) echo "$number" ;;
    kib) echo $((number * 1024)) ;;
    mib) echo $((number * 1024 * 1024)) ;;
    kb) echo $((number * 1000)) ;;
    mb) echo $((number * 1000 * 1000)) ;;
    *) die "--sram $text: unknown unit $unit" ;;
  esac
}
capacity=$(to_bytes "$sram")
plan_capacity=$(to_bytes "${plan_sram:-$sram}")
((capacity % 64 == 0)) || die "--sram $sram: the capacity must be whole 64-byte lines"
lines=$((capacity / 64))
power_of_two() { (($1 > 0 && ($1 & ($1 - 1)) == 0)); }
if [[ $assoc == auto ]]; then
  assoc=""
  for a in 16 8 12 24 32 20 10 6 4 2 1; do
    if ((lines % a == 0)) && power_of_two $((lines / a)); then assoc=$a; break; fi
  done
  [[ -n $assoc ]] || die "--sram $sram: no associativity up to 32 gives a power-of-two number of sets; use e.g. 2^k MiB or 3*2^k MiB"
else
  if ! [[ $assoc =~ ^[1-9][0-9]*$ ]] || ((lines % assoc != 0)) || ! power_of_two $((lines / assoc)); then
    die "--assoc $assoc: $capacity / ($assoc * 64) must be a power of two"
  fi
fi

[[ -n $out ]] || out="$build/traffic-results/$model-$resolution-$sram${plan_sram:+-plan$plan_sram}"
mkdir -p "$out"

# --- build (portable AVX2) and plan
((report_only)) && do_build=0
if ((do_build)); then
  if [[ ! -f $build/CMakeCache.txt ]]; then
    cmake -S "$root" -B "$build" -G Ninja -DCMAKE_BUILD_TYPE=Release -DPython3_EXECUTABLE=/usr/bin/python3 \
      -DOCCAM_ARCH=x86-64-v3 -DBUILD_TESTING=OFF > "$out/configure.log" 2>&1 ||
      die "configuring $build failed, see $out/configure.log"
  fi
  cmake --build "$build" --target occam traffic_driver -j 2 > "$out/build.log" 2>&1 ||
    die "building failed, see $out/build.log"
fi
occam="$build/tools/occam/occam"
[[ -n $driver ]] || driver="$build/bench/traffic_driver"
[[ -x $occam && -x $driver ]] || die "$occam or $driver missing (build them, or drop --no-build)"
if grep -q 'OCCAM_ARCH:STRING=native' "$build/CMakeCache.txt" 2> /dev/null && grep -q avx512f /proc/cpuinfo; then
  die "$build was built with -march=native on an AVX-512 machine: valgrind cannot run it; use -DOCCAM_ARCH=x86-64-v3"
fi

((report_only)) || "$occam" plan "$model" --resolution "$resolution" --bytes-per-elem 4 --sram "$plan_capacity" --json "$out/plan.json" \
  > "$out/plan.txt" 2>&1 || die "occam plan failed, see $out/plan.txt"

# --- one valgrind process per executor
run_one() {  # executor
  local executor=$1 start
  local -a extra=()
  [[ $executor == fused ]] && extra=(--plan "$out/plan.json" --band "$band")
  rm -f "$out/callgrind.$executor".*
  start=$(date +%s)
  OMP_NUM_THREADS=1 OMP_WAIT_POLICY=passive ONEDNN_MAX_CPU_ISA=$isa \
    valgrind --tool=callgrind --cache-sim=yes --simulate-wb=yes --instr-atstart=no --dump-line=no \
    --I1=32768,8,64 --D1=32768,8,64 --LL="$capacity,$assoc,64" \
    --callgrind-out-file="$out/callgrind.$executor.%p" \
    "$driver" --model "$model" --resolution "$resolution" --executor "$executor" --images "$images" --threads 1 \
    "${extra[@]}" > "$out/$executor.log" 2>&1 || {
    echo "traffic.sh: valgrind on the $executor executor failed, see $out/$executor.log" >&2
    return 1
  }
  echo "seconds=$(($(date +%s) - start))" >> "$out/$executor.log"
}

executors=()
[[ $only == both || $only == fused ]] && executors+=(fused)
[[ $only == both || $only == reference ]] && executors+=(reference)
echo "traffic.sh: $model $resolution, LL = $capacity B ($sram) $assoc-way, $images image(s) per executor; logs in $out" >&2
if ((report_only)); then
  echo "traffic.sh: --report-only: reading the dumps already in $out" >&2
elif ((jobs == 2)) && ((${#executors[@]} == 2)); then
  run_one fused &
  fused_pid=$!
  run_one reference &
  reference_pid=$!
  status=0
  wait "$fused_pid" || status=1
  wait "$reference_pid" || status=1
  ((status == 0)) || exit 1
else
  for e in "${executors[@]}"; do run_one "$e" || exit 1; done
fi

# --- read the dumps: one per image, found by its trigger "image K"
# Prints "ir reads walloc writebacks" (lines) for the dump of image K of an executor.
counts() {  # executor image
  local file
  file=$(grep -l "^desc: Trigger: Client Request: image $2\$" "$out/callgrind.$1".* 2> /dev/null | head -n 1) || true
  [[ -n $file ]] || die "no callgrind dump for image $2 of the $1 executor in $out"
  awk '
    /^events:/ { for (i = 2; i <= NF; ++i) name[i - 1] = $i; n = NF - 1 }
    # totals: the sum of the costs in this dump (summary: may hold the global counter)
    /^totals:/ { for (i = 2; i <= NF; ++i) v[name[i - 1]] = $i }
    END {
      if (!("DLdmw" in v) && !("DLmw" in v)) { print "missing events" > "/dev/stderr"; exit 1 }
      printf "%.0f %.0f %.0f %.0f\n", v["Ir"], v["ILmr"] + v["DLmr"], v["DLmw"], v["ILdmr"] + v["DLdmr"] + v["DLdmw"]
    }' "$file"
}
value() {  # key log -> value of key=... in the driver's output
  local v
  v=$(grep -m1 "^$1=" "$2" | cut -d= -f2-) || true
  [[ -n $v ]] || die "$2 has no $1 line"
  echo "$v"
}

ref_log="$out/reference.log"
fused_log="$out/fused.log"
any_log=$([[ -f $fused_log && ${executors[0]} == fused ]] && echo "$fused_log" || echo "$ref_log")
base_act=$(value base_case_activation_bytes "$any_log")
base_out=$(value base_case_output_bytes "$any_log")
filters=$(value total_filter_bytes "$any_log")

declare -A model_bytes dram_bytes predicted_bytes
mib() { awk -v b="$1" 'BEGIN { printf "%.2f", b / 1048576 }'; }
ratio() { awk -v a="$1" -v b="$2" 'BEGIN { if (b > 0) printf "%.2f", a / b; else printf "inf" }'; }

{
  echo "# $model $resolution: main-memory traffic per image, MiB (2^20 B), callgrind LL = $capacity B ($sram), $assoc-way, 64 B lines; D1 32 KiB 8-way; plan made for $plan_capacity B (${plan_sram:-$sram})"
  if [[ -f $fused_log && " ${executors[*]} " == *" fused "* ]]; then
    parts=$(value plan_partitions "$fused_log")
    plan_traffic=$(value plan_traffic_bytes "$fused_log")
    plan_filters=$(value plan_filter_bytes "$fused_log")
    plan_out=$(value plan_boundary_out_bytes "$fused_log")
    echo "# plan: $parts partition(s), largest on chip $(mib "$(value plan_largest_on_chip_bytes "$fused_log")") MiB" \
      "(line buffers $(mib "$(value plan_line_buffer_bytes "$fused_log")") MiB as allocated per tensor);" \
      "filters $(mib "$plan_filters") MiB (executor's reordered weights $(mib "$(value executor_weight_bytes "$fused_log")") MiB)"
    grep -q '^touched_second_copy_bytes=' "$fused_log" && grep -q '^input_bytes=' "$fused_log" && {
      touched=$(value touched_line_buffer_bytes "$fused_log")
      second=$(value touched_second_copy_bytes "$fused_log")
      weights=$(value executor_weight_bytes "$fused_log")
      input=$(value input_bytes "$fused_log")
      echo "# the executor as the simulator sees it (pages touched, all partitions): line buffers and boundaries" \
        "$(mib "$touched") MiB + their second mappings $(mib "$second") MiB (windows past a buffer's end; one memory" \
        "with the first, but lines of their own to a virtually tagged cache) + weights $(mib "$weights") MiB" \
        "= $(mib $((touched + second + weights))) MiB; with the $(mib "$input") MiB input each image streams through" \
        "$(mib $((touched + second + weights + input))) MiB, of $(mib "$capacity") MiB LL (a weight used once per image" \
        "stays cached to the next image only if this fits)"
    }
  fi
  echo "# reference model: base case $(mib "$base_act") MiB activations + $(mib "$filters") MiB filters; its outputs $(mib "$base_out") MiB (write-allocate fills on a CPU)"
  printf "%-9s %-6s %10s %10s %10s %10s %10s %10s %10s %8s %9s %8s\n" executor image reads w-alloc writebk DRAM model \
    predicted +alloc "model/pr" "DRAM/pr+" "Ginstr"
  for e in "${executors[@]}"; do
    for image in $(seq 1 "$images"); do
      read -r ir reads walloc wb <<< "$(counts "$e" "$image")"
      if [[ $e == fused ]]; then
        if ((image == 1)); then predicted=$((plan_traffic + plan_filters))
        elif ((parts > 1)); then predicted=$((plan_traffic + plan_filters))
        else predicted=$plan_traffic; fi
        alloc=$plan_out
      else
        predicted=$((base_act + filters))
        alloc=$base_out
      fi
      dram=$(((reads + walloc + wb) * 64))
      modelb=$(((reads + wb) * 64))
      label=$([[ $image == 1 ]] && echo "1 cold" || echo "$image")
      printf "%-9s %-6s %10s %10s %10s %10s %10s %10s %10s %8s %9s %8s\n" "$e" "${label// /_}" "$(mib $((reads * 64)))" \
        "$(mib $((walloc * 64)))" "$(mib $((wb * 64)))" "$(mib "$dram")" "$(mib "$modelb")" "$(mib "$predicted")" \
        "$(mib $((predicted + alloc)))" "$(ratio "$modelb" "$predicted")" "$(ratio "$dram" $((predicted + alloc)))" \
        "$(awk -v i="$ir" 'BEGIN { printf "%.1f", i / 1e9 }')"
      model_bytes[$e]=$modelb  # the last image's, the steady state when --images > 1
      dram_bytes[$e]=$dram
      predicted_bytes[$e]=$predicted
    done
  done
  for e in "${executors[@]}"; do
    echo "# $e: $(grep -m1 '^describe=' "$out/$e.log" | cut -d= -f2-)"
    echo "# $e: valgrind wall time $(value seconds "$out/$e.log") s; $(grep '^image=' "$out/$e.log" | tr '\n' ' ')"
  done
  if ((${#executors[@]} == 2)); then
    echo "# image $images: fused model/predicted $(ratio "${model_bytes[fused]}" "${predicted_bytes[fused]}")" \
      "(goal <= 1.25); reference/fused DRAM $(ratio "${dram_bytes[reference]}" "${dram_bytes[fused]}")," \
      "model $(ratio "${model_bytes[reference]}" "${model_bytes[fused]}") (goal >= 5)"
  fi
} > "$out/summary.txt"
cat "$out/summary.txt"

if ((strict)) && ((${#executors[@]} == 2)); then
  awk -v f="${model_bytes[fused]}" -v p="${predicted_bytes[fused]}" -v r="${dram_bytes[reference]}" -v d="${dram_bytes[fused]}" \
    'BEGIN { exit !(f <= 1.25 * p && r >= 5 * d) }' || die "a goal is missed (see the last line above)"
fi
