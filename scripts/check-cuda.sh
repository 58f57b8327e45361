#!/usr/bin/env bash
# check-cuda.sh -- build libstsl against the PyTorch wheel's libtorch on a GPU machine and test
# the CUDA path; writes OUTDIR/report.md (issue 16; docs/cuda.md says how to run it).
#
#   bash scripts/check-cuda.sh [OUTDIR]          (default: $OUT when set, else build/check-cuda)
#   make check-cuda [CHECK_CUDA_OUT=DIR]
#
# On the lent GPU machine (no package registry, no network) one `run` call does it all; the
# Debian packages travel as .deb files downloaded here first (scripts/cuda-debs.sh):
#   here:   bash scripts/cuda-debs.sh            -> build/cuda-debs/ (ignored, ~5 MB)
#   run:    command "bash scripts/check-cuda.sh", carry ["build/cuda-debs", "build/upstream"], timeout_s 570
#   then:   copy files_at/report.md into docs/cuda.md's report section
#
# Stages (each one timed; a failing stage is recorded FAIL with its first error line and the
# script goes on; the report is written whatever happens; the whole run stays under 9 minutes):
#   env       GPU, driver, torch/CUDA/cuDNN versions, the wheel's C++ ABI flag
#   deps      unpack build/cuda-debs/*.deb into build/cuda-deps (dpkg-deb -x, or scripts/cuda_deb_extract.py)
#   build     make TORCH_PREFIX=<wheel's torch> TORCH_CXX11_ABI=<wheel's> DEPS_PREFIX=build/cuda-deps
#   tests     the TorchScript suites with STSL_TEST_DEVICE=$DEVICE, then with STSL_TEST_HALF=1
#   suites    every other suite of the wheel build (default device; 1.13-saved files on torch 2.x)
#   compare   cuda_probe compare: CPU vs device on the same seeds (tolerances in docs/cuda.md)
#   adm-export          the upstream guided-diffusion ADM (DPS's FFHQ-256 configuration, random
#                       weights) exported on the CPU (its code carried: CHECK_CUDA_ADM_CODE)
#   cpu-export-on-DEV   that CPU export loaded and run on the device (forward, VJP, a DPS step)
#   device-ops          the measurement operators as libtorch ops on the device vs their C code
#                       (test_device_ops, then build/cuda/bench_device_ops: times and differences),
#                       and each solver's step outside the network (build/cuda/bench_solver_host)
#   restore   stsl-restore --device $DEVICE on data/samples with each solver
#   bench     scripts/cuda_bench.py: library vs eager, shipped prior, real-size stand-ins, upstream ADM
#
# CHECK_CUDA_DEVICE=cpu is the dry run for a machine without a GPU: the same stages on the CPU,
# with Debian's python3-torch as "the wheel" (its torch/ folder has the wheel's include/ and
# lib/ layout), tiny stand-ins, fewer steps.  Other knobs: CHECK_CUDA_PYTHON (a python with
# torch; default python3, or /usr/bin/python3 in the dry run), CHECK_CUDA_JOBS (make -j),
# CHECK_CUDA_BUDGET (seconds, default 540), CHECK_CUDA_MODELS (cuda_bench.py --models).
set -uo pipefail
set -m   # each stage in a process group of its own, so that a time limit stops all of it
cd "$(dirname "$0")/.."
ROOT=$PWD

DEVICE=${CHECK_CUDA_DEVICE:-cuda}
OUTDIR=${1:-${OUT:-build/check-cuda}}
mkdir -p "$OUTDIR" && OUTDIR=$(cd "$OUTDIR" && pwd)
BUDGET=${CHECK_CUDA_BUDGET:-540}
JOBS=${CHECK_CUDA_JOBS:-$(nproc 2>/dev/null || echo 2)}
B=build/cuda                      # build folder of this check (BUILD, LIBOUT, BINOUT under it)
DEPS=$ROOT/build/cuda-deps
DRY=0
SLOW=1                            # stage time limits are multiplied by this
if [ "$DEVICE" = cpu ]; then
  DRY=1; SLOW=3                   # a shared 2-core machine
  PY=${CHECK_CUDA_PYTHON:-/usr/bin/python3}
  MODELS=${CHECK_CUDA_MODELS:-prior,tiny-adm,tiny-sd}
  STEPS_COMPARE=3; BENCH_STEPS=1; BENCH_REPEATS=2; RESTORE_STEPS=2; RESTORE_JOBS=1; DEVOPS_SIZE=64
  ADM_SIZE=(image_size=64 num_channels=64)   # the upstream ADM layout at a size a CPU runs
  [ "$JOBS" -gt 2 ] && JOBS=2
else
  # the first python that imports torch (the GPU machine's own; not necessarily python3 on PATH)
  . scripts/torch_python.sh
  PY=$(torch_python "${CHECK_CUDA_PYTHON:-}" torch) || PY=python3
  MODELS=${CHECK_CUDA_MODELS:-prior,adm256,sd512}
  STEPS_COMPARE=10; BENCH_STEPS=3; BENCH_REPEATS=10; RESTORE_STEPS=; RESTORE_JOBS=4; DEVOPS_SIZE=256
  ADM_SIZE=(image_size=256 num_channels=128)
fi
# The real upstream ADM (issue 27 item 5): guided-diffusion's UNet in DPS's FFHQ-256 configuration
# (its configs/model_config.yaml, as create_model arguments), random weights (timing only).  Its
# code is not part of the project: it is carried to the GPU machine (docs/cuda.md, "The upstream
# ADM").  Exported on the CPU as docs/real-models.md says, then loaded on $DEVICE.
ADM_CODE=${CHECK_CUDA_ADM_CODE:-$ROOT/build/upstream/guided-diffusion}
ADM_FILE=$ROOT/$B/standins/adm-upstream-cpu-export.pt
ADM_SETS=("${ADM_SIZE[@]}" num_res_blocks=1 channel_mult= learn_sigma=true class_cond=false
          attention_resolutions=16 num_heads=4 num_head_channels=64 num_heads_upsample=-1
          use_scale_shift_norm=true dropout=0.0 resblock_updown=true use_new_attention_order=false)
# every test program of the stages finds its tools in $B/bin and runs Python as $PY, the
# interpreter whose torch the build uses (tests/env.sh: STSL_BIN_DIR, STSL_PYTHON)
. tests/env.sh
export STSL_PYTHON=$PY
stsl_test_env "$ROOT/$B/bin"
REPORT=$OUTDIR/report.md
LOG=$OUTDIR/check-cuda.log
T0=$(date +%s)
# nothing of an earlier run in the same folder is reported
rm -rf "$OUTDIR"/*.log "$OUTDIR"/compare-*.txt "$OUTDIR"/bench "$OUTDIR"/restore "$OUTDIR"/suites "$REPORT"
: >"$LOG"

say() { echo "[$(date -u +%H:%M:%S) +$(( $(date +%s) - T0 ))s] $*" | tee -a "$LOG"; }
left() { echo $(( BUDGET - ($(date +%s) - T0) )); }

STAGES=()   # "name|PASS/FAIL/SKIP|seconds|note"
declare -A SECTION

# stage NAME MIN_SECONDS MAX_SECONDS FUNCTION: runs FUNCTION with its output in OUTDIR/NAME.log,
# under a time limit of min(MAX, what is left of the budget); skipped when less than MIN is left.
stage() {
  local name=$1 need=$2 max=$3 fn=$4 l rc start note
  l=$(left)
  if [ "$l" -lt "$need" ]; then
    say "SKIP $name (budget: ${l}s left, needs ${need}s)"
    STAGES+=("$name|SKIP|0|time budget: ${l}s left")
    return 0
  fi
  max=$(( max * SLOW ))
  [ "$max" -gt "$l" ] && max=$l
  say "stage $name (limit ${max}s)"
  start=$(date +%s)
  STAGE_TIMEOUT=$max "$fn" >"$OUTDIR/$name.log" 2>&1 &
  local pid=$!
  ( sleep "$max"; kill -TERM -- "-$pid" 2>/dev/null || kill -TERM "$pid" 2>/dev/null ) >/dev/null 2>&1 &
  local watchdog=$!
  wait "$pid"; rc=$?
  kill -- "-$watchdog" 2>/dev/null; wait "$watchdog" 2>/dev/null
  local secs=$(( $(date +%s) - start ))
  if [ $rc -eq 0 ]; then
    STAGES+=("$name|PASS|$secs|")
    say "PASS $name (${secs}s)"
  else
    note=$(first_error "$OUTDIR/$name.log")
    [ $rc -ge 124 ] && [ $secs -ge "$max" ] && note="time limit ${max}s reached; $note"
    STAGES+=("$name|FAIL|$secs|rc $rc: $note")
    say "FAIL $name (${secs}s, rc $rc): $note"
  fi
  write_report   # a partial report survives a kill of the whole run
  return 0
}

# The first line of a log that says what went wrong: an "error:" line, else a failure or
# exception line, else the last line; command lines echoed by make are not candidates.
first_error() {
  local body line
  body=$(grep -vE '^(make|cc|gcc|g\+\+|c\+\+|ar|ln|mkdir|rm) ' "$1" 2>/dev/null)
  line=$(grep -m1 -E '[Ee]rror:|Error\b' <<<"$body")
  # (CUnit prints a bare "FAILED" after the message of the failing test: take that message)
  [ -z "$line" ] && line=$(grep -m1 -B1 -iE 'FAIL|assert|cannot|not found|not available|undefined reference|killed|Traceback' <<<"$body" |
      awk 'NR == 1 { prev = $0 } END { if (NR > 0) print ($0 ~ /^FAILED$/ && NR > 1) ? prev : $0 }')
  [ -z "$line" ] && line=$(grep -v '^ *$' <<<"$body" | tail -n 1)
  echo "$line" | sed 's/^ *//' | cut -c1-300
}

summ() { grep -hE "$2" "$OUTDIR/$1.log" 2>/dev/null | sed 's/^/    /' | head -n "${3:-60}"; }
# the report's sections, from the stage logs written so far
collect_sections() {
SECTION[env]="## Machine
\`\`\`
$(cat "$OUTDIR/env.log" 2>/dev/null)
\`\`\`"
SECTION[tests]="## TorchScript suites on $DEVICE (float32, then $(half_precisions | sed 's/ / and /'))

Measured errors and tolerances as the suites print them:

$(summ tests '^=== |CUDA vs CPU|on (cuda|cpu)|sample [01]: fd|float16: finite|^FAIL suite|asserts|tests ' 80)"
SECTION[suites]="## Every other suite (wheel build, default device)

$(summ suites '^=== |FAIL|asserts' 60)"
SECTION[compare]="## CPU vs $DEVICE on the same seeds (cuda_probe compare; tolerances in docs/cuda.md)

$(for f in "$OUTDIR"/compare-*.txt; do [ -f "$f" ] && { echo "- $(basename "$f" .txt | sed 's/^compare-//'): $(tr '\n' ' ' <"$f")"; }; done)"
SECTION[device-ops]="## Operators as libtorch ops on $DEVICE vs their C code (test_device_ops, bench_device_ops)

$(summ device-ops '^=== |torch ops on|^    [a-z0-9-]+ +[0-9.e+-]+ +[0-9.e+-]+ +\(|^\||^Solver steps|FAIL|asserts' 80)"
SECTION[restore]="## Bundled samples restored on $DEVICE (stsl-restore; images under restore/)

$(summ restore '^restore |FAIL' 30)"
SECTION[bench]="## Library vs PyTorch eager on $DEVICE (scripts/cuda_bench.py)

$(cat "$OUTDIR/bench/bench.md" 2>/dev/null || echo '(no bench output)')"
}

write_report() {
  collect_sections
  {
    echo "# libstsl CUDA check ($([ $DRY = 1 ] && echo "DRY RUN on the CPU" || echo "device $DEVICE"))"
    echo
    echo "Written by \`scripts/check-cuda.sh\` on $(date -u '+%Y-%m-%d %H:%M UTC'), ${HOSTNAME:-?}, in $(( $(date +%s) - T0 )) s."
    echo "Commit $(git rev-parse --short HEAD 2>/dev/null || echo '?')$(git diff --quiet 2>/dev/null || echo ' (with local changes)')."
    echo
    echo "## Stages"
    echo
    echo "| stage | result | seconds | note |"
    echo "|---|---|---:|---|"
    for s in "${STAGES[@]}"; do
      IFS='|' read -r n r t note <<<"$s"
      echo "| $n | $r | $t | ${note//|//} |"
    done
    for k in env tests suites compare device-ops restore bench; do
      [ -f "$OUTDIR/$k.log" ] || continue   # stages that ran
      echo
      echo "${SECTION[$k]}"
    done
    echo
    echo "Logs of each stage: \`<stage>.log\` beside this report."
  } >"$REPORT"
}
trap 'write_report; say "report: $REPORT"' EXIT
trap 'exit 143' TERM INT

# ---------------------------------------------------------------------------------------------
st_env() {
  command -v nvidia-smi >/dev/null && nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader
  "$PY" - <<'EOF'
import os, torch
print("torch", torch.__version__, "cuda", torch.version.cuda, "cudnn", torch.backends.cudnn.version(),
      "cuda_available", torch.cuda.is_available())
if torch.cuda.is_available():
    print("gpu", torch.cuda.get_device_name(0))
print("torch_dir", os.path.dirname(torch.__file__))
print("cxx11_abi", int(torch._C._GLIBCXX_USE_CXX11_ABI))
print("cmake_prefix_path", torch.utils.cmake_prefix_path)
EOF
}

st_deps() {
  shopt -s nullglob
  local debs=(build/cuda-debs/*.deb)
  if [ ${#debs[@]} -eq 0 ]; then
    if [ $DRY = 1 ] && [ -f /usr/include/png.h ]; then
      echo "no build/cuda-debs: the dry run uses the system's packages"; return 0
    fi
    echo "error: build/cuda-debs/*.deb not found: run scripts/cuda-debs.sh here and carry build/cuda-debs"
    return 1
  fi
  rm -rf "$DEPS"; mkdir -p "$DEPS"
  for d in "${debs[@]}"; do
    if command -v dpkg-deb >/dev/null; then
      dpkg-deb -x "$d" "$DEPS" || return 1
    else   # a .deb is an ar archive holding data.tar.{xz,gz}: Python reads both
      "$PY" scripts/cuda_deb_extract.py "$d" "$DEPS" || return 1
    fi
    echo "unpacked $(basename "$d")"
  done
  # absolute links (zlib1g-dev: libz.so -> /lib/...) point into the prefix instead
  find "$DEPS" -type l | while read -r l; do
    t=$(readlink "$l")
    case $t in /*) [ -e "$DEPS$t" ] && ln -sfn "$DEPS$t" "$l" ;; esac
  done
  [ -f "$DEPS/usr/include/png.h" ] && [ -f "$DEPS/usr/include/CUnit/CUnit.h" ] || { echo "error: headers missing"; return 1; }
}

torch_dir() { grep '^torch_dir ' "$OUTDIR/env.log" | cut -d' ' -f2; }
torch_abi() { grep '^cxx11_abi ' "$OUTDIR/env.log" | cut -d' ' -f2; }

MAKEVARS=()
st_build() {
  local tdir abi extra=()
  tdir=$(torch_dir); abi=$(torch_abi)
  [ -n "$tdir" ] || { echo "error: no torch found by $PY (env stage)"; return 1; }
  [ -f "$tdir/include/torch/script.h" ] || { echo "error: $tdir/include/torch/script.h not found"; return 1; }
  rm -f $B/cuda_probe
  # CUDA runtime libraries of the wheel (nvidia-* packages) for the linker's rpath-link
  for d in "$tdir"/../nvidia/*/lib; do [ -d "$d" ] && extra+=("-Wl,-rpath-link,$(cd "$d" && pwd)"); done
  # libtorch_cuda's own dependencies (CUDA runtime, cuDNN, NCCL, the driver) are found when it is
  # loaded; the linker need not resolve their symbols (our own objects are still checked)
  [ $DRY = 0 ] && extra+=("-Wl,--allow-shlib-undefined")
  [ -d "$DEPS/usr/include" ] && MAKEVARS+=("DEPS_PREFIX=$DEPS")
  MAKEVARS+=(TORCH_PREFIX="$tdir" TORCH_CXX11_ABI="$abi" "TORCH_EXTRA_LIBS=${extra[*]}"
             BUILD=$B LIBOUT=$B/lib BINOUT=$B/bin)
  local cfg="$tdir/share/cmake/Torch/TorchConfig.cmake"
  if [ -f "$cfg" ]; then
    echo "TorchConfig.cmake: $(grep -o '_GLIBCXX_USE_CXX11_ABI=[01]' "$cfg" | head -1); python: $abi"
  fi
  local tests=()
  for t in tests/*/test_*.c; do tests+=("$B/tests/${t#tests/}"); done
  tests=("${tests[@]%.c}")
  echo "make -j$JOBS ${MAKEVARS[*]}"
  make --no-print-directory -j"$JOBS" "${MAKEVARS[@]}" all "${tests[@]}" $B/bench_device_ops \
    $B/bench_solver_host || return 1
  grep -q STSL_WITH_TORCH=1 <(make --no-print-directory -n "${MAKEVARS[@]}" "$B/obj/core/context.o" -B 2>/dev/null) \
    || { echo "error: the build did not find libtorch (WITH_TORCH=0)"; return 1; }
  cc -std=c11 -O2 -Wall -Wextra -Werror -D_GNU_SOURCE -Iinclude -Iexamples scripts/cuda_probe.c examples/common/metrics.c -L$B/lib -lstsl \
     -Wl,-rpath,"$ROOT/$B/lib" "${extra[@]}" -lm -o $B/cuda_probe || return 1
  ldd $B/lib/libstsl.so | grep -E 'torch|c10|png|jpeg|fftw|cunit' || true
  # (reported, not fatal: the suites' own exit then shows what an exported C++ symbol costs)
  bash tests/abi/check_exports.sh "${tests[@]}" $B/bin/* | tail -n 6 || true
  if [ $DRY = 0 ]; then
    ldd $B/lib/libstsl.so | grep -q torch_cuda || { echo "error: libstsl.so does not load libtorch_cuda"; return 1; }
    $B/cuda_probe time tests/scores/fixtures/unet_eps.pt "$DEVICE" 0 1 0 >/dev/null \
      || { echo "error: the build cannot run a model on $DEVICE"; return 1; }
  fi
}

TS_SUITES=(scores/test_torchscript models/test_models tools/test_restore_cli)
run_suites() {   # run_suites SUITE...: one process each (tools and python from tests/env.sh)
  local rc=0
  for s in "$@"; do
    echo "=== $s (STSL_TEST_DEVICE=${STSL_TEST_DEVICE:-} STSL_TEST_PRECISION=${STSL_TEST_PRECISION:-float32})"
    STSL_TEST_VERBOSE=1 "$B/tests/$s" || { echo "FAIL suite $s"; rc=1; }
  done
  return $rc
}
# the reduced precisions the tests stage runs: float16 and bfloat16, except float16 in a dry run
# whose libtorch is 1.x (its CPU autocast has bfloat16 only; the library then refuses float16)
half_precisions() {
  if [ $DRY = 1 ] && grep -q '^torch 1\.' "$OUTDIR/env.log"; then echo bfloat16; else echo float16 bfloat16; fi
}
# The passes run side by side, one process each, and their logs follow one another in the
# stage's log.  One after another they did not fit the stage's limit: the CLI suite alone starts
# some eighty processes that load libtorch (80 s on the 2-core development machine), and each
# one that loads a model initialises CUDA afresh.  (stsl-restore has no half-precision option:
# the CLI suite runs once; test_models' float32 claims run in the float32 pass only.)
st_tests() {
  local rc=0 p s n=0 logs=() pids=()
  mkdir -p "$OUTDIR/tests"
  # the stage's time limit stops the whole group: show what each pass had written by then
  trap 'cat "${logs[@]}" 2>/dev/null; exit 143' TERM
  # start_pass NAME COMMAND...: one pass in the background, into tests/N-NAME.log (the
  # environment it is called with, STSL_TEST_*, is the pass's; run_suites' header names it)
  start_pass() {
    logs+=("$OUTDIR/tests/$n-$1.log"); n=$((n + 1)); shift
    "$@" >"${logs[-1]}" 2>&1 &
    pids+=($!)
  }
  for s in "${TS_SUITES[@]}"; do
    STSL_TEST_DEVICE=$DEVICE start_pass "$(basename "$s")-float32" run_suites "$s"
  done
  for p in $(half_precisions); do
    STSL_TEST_DEVICE=$DEVICE STSL_TEST_PRECISION=$p start_pass "$p" run_suites scores/test_torchscript models/test_models
  done
  for p in "${pids[@]}"; do wait "$p" || rc=1; done
  cat "${logs[@]}"
  return $rc
}
st_suites() {   # in parallel, JOBS at a time; each suite's output kept together
  local all=() s rc=0
  for t in tests/*/test_*.c; do
    s=${t#tests/}; s=${s%.c}
    [[ " ${TS_SUITES[*]} ${DEVOPS_SUITE} " == *" $s "* ]] || all+=("$s")
  done
  mkdir -p "$OUTDIR/suites"
  printf '%s\n' "${all[@]}" | xargs -P "$JOBS" -I{} bash -c \
    "$B"'/tests/{} >"'"$OUTDIR"'/suites/$(echo {} | tr / -).log" 2>&1 || echo "FAIL suite {}"' \
    | tee "$OUTDIR/suites/failed.txt"
  for s in "${all[@]}"; do
    echo "=== $s"; grep -E 'asserts|tests ' "$OUTDIR/suites/$(echo "$s" | tr / -).log"
  done
  [ ! -s "$OUTDIR/suites/failed.txt" ]
}

# the measurement operators as libtorch ops on $DEVICE (issue 27 item 2): the suite compares every
# kind with the C code on the CPU and, with a GPU, on CUDA 0; the benchmark times both paths;
# bench_solver_host times each solver's step without its network (item 2's 5 % target)
DEVOPS_SUITE=operators/test_device_ops
st_device_ops() {
  local rc=0
  STSL_TEST_DEVICE=$DEVICE run_suites "$DEVOPS_SUITE" || rc=1
  echo "=== bench_device_ops --device $DEVICE --size $DEVOPS_SIZE"
  $B/bench_device_ops --device "$DEVICE" --size "$DEVOPS_SIZE" --batch 1 --repeats "$BENCH_REPEATS" || rc=1
  echo "=== bench_solver_host --device $DEVICE --size $DEVOPS_SIZE (a step outside the network)"
  $B/bench_solver_host --device "$DEVICE" --size "$DEVOPS_SIZE" --repeats 3 || rc=1
  # each network call waited as long as the first H200 run's ADM-256 VJP: the host work that
  # overlaps it (the step's noise, drawn ahead) drops out of "outside"
  echo "=== bench_solver_host --device $DEVICE --size $DEVOPS_SIZE --network-ms 26 (dps, ddim)"
  $B/bench_solver_host --device "$DEVICE" --size "$DEVOPS_SIZE" --repeats 3 --solvers dps,ddim \
    --network-ms 26 || rc=1
  return $rc
}

st_compare() {
  local rc=0 m
  for m in models/fmnist-ddpm.pt models/fmnist-ldm.pt tests/scores/fixtures/unet_v.pt; do
    echo "=== $m"
    $B/cuda_probe compare "$m" "$DEVICE" "$STEPS_COMPARE" | tee "$OUTDIR/compare-$(basename "$m" .pt).txt" || rc=1
  done
  return $rc
}

# the bundled samples with each solver, the tool's default prior for each (latent for stsl,
# stsl-biased, ldps, psld; pixel otherwise) and STSL once more on the pixel prior
# (fewer steps than make demo for DPS and RMP so that the stage fits its share of 8 minutes)
RESTORE_RUNS=(
  "sr4|stsl|--steps 50 --K 5"
  "gaussian-blur|dps|--steps 100"
  "gaussian-blur|ddim|--steps 50"
  "motion-blur|dps-mo|--steps 50"
  "gaussian-blur|rmp|--steps 100"
  "sr4|stsl-biased|--steps 50"
  "box-inpaint|ldps|--steps 100"
  "box-inpaint|psld|--steps 100"
  "random-inpaint|stsl|--steps 20 --K 5 --model models/fmnist-ddpm.pt"
)
restore_one() {   # "N|task|solver|options": one stsl-restore run, its output in restore/N.log
  local n task solver opts dir a
  IFS='|' read -r n task solver opts <<<"$1"
  [ -n "$RESTORE_STEPS" ] && opts=$(echo "$opts" | sed "s/--steps [0-9]*/--steps $RESTORE_STEPS/")
  dir=$OUTDIR/restore/$n-$task-$solver
  a=$(date +%s.%N)
  {
    echo "=== $task $solver $opts"
    # shellcheck disable=SC2086
    if STSL_MODEL_DIR=$ROOT/models $B/bin/stsl-restore data/samples "$dir" --task "$task" --solver "$solver" \
         $opts --device "$DEVICE" --seed 0 --quiet --montage "$dir/montage" --montage-scale 2; then
      echo "restore $task $solver ($opts): $(awk "BEGIN{printf \"%.1f\", $(date +%s.%N) - $a}") s for $(ls data/samples | wc -l) images"
      [ -f "$dir/results.csv" ] && head -n 2 "$dir/results.csv"
    else
      echo "FAIL restore $task $solver"
      return 1
    fi
  } >"$OUTDIR/restore/$n.log" 2>&1
}
st_restore() {   # RESTORE_JOBS runs at a time (the bundled 28x28 models leave the GPU mostly idle)
  local n=${#RESTORE_RUNS[@]} i r rc=0
  mkdir -p "$OUTDIR/restore"
  export -f restore_one
  export OUTDIR ROOT B DEVICE RESTORE_STEPS
  for ((i = 0; i < n; i++)); do echo "$((i + 1))|${RESTORE_RUNS[i]}"; done |
    xargs -P "$RESTORE_JOBS" -I{} bash -c 'restore_one "$1"' _ {} || rc=1
  for ((i = 1; i <= n; i++)); do cat "$OUTDIR/restore/$i.log" 2>/dev/null; done
  return $rc
}

st_adm_export() {   # on the CPU, whatever the machine has (CUDA_VISIBLE_DEVICES empty)
  if [ ! -d "$ADM_CODE/guided_diffusion" ]; then
    echo "error: no upstream guided-diffusion at $ADM_CODE (docs/cuda.md, \"The upstream ADM\": carry build/upstream)"
    return 1
  fi
  local sets=() kv
  for kv in "${ADM_SETS[@]}"; do sets+=(--set "$kv"); done
  mkdir -p "$(dirname "$ADM_FILE")" && rm -f "$ADM_FILE"
  echo "upstream code: $ADM_CODE ($(git -C "$ADM_CODE" log -1 --format='%h %cs' 2>/dev/null || echo 'not a git checkout'))"
  CUDA_VISIBLE_DEVICES= "$PY" scripts/export_torchscript.py adm --code "$ADM_CODE" "${sets[@]}" --random-init \
      --out "$ADM_FILE" --name adm-ffhq256-upstream || return 1
  echo "exported on the CPU: $(du -m "$ADM_FILE" | cut -f1) MB"
}

st_adm_on_device() {   # the CPU export loaded and run on $DEVICE: forward, VJP, one DPS step
  [ -f "$ADM_FILE" ] || { echo "error: no CPU export to load (stage adm-export failed)"; return 1; }
  $B/cuda_probe time "$ADM_FILE" "$DEVICE" 0 3 1
}

st_bench() {
  local adm=()
  [ -f "$ADM_FILE" ] && adm=(--adm-file "$ADM_FILE" --adm-code "$ADM_CODE" --adm-set "${ADM_SETS[@]}")
  "$PY" scripts/cuda_bench.py --probe $B/cuda_probe --device "$DEVICE" --out "$OUTDIR/bench" --workdir $B/standins \
      --models "$MODELS" --steps "$BENCH_STEPS" --repeats "$BENCH_REPEATS" --timeout $(( STAGE_TIMEOUT - 10 )) \
      --deadline $(( STAGE_TIMEOUT - 5 )) "${adm[@]}"
}

# ---------------------------------------------------------------------------------------------
say "check-cuda: device $DEVICE, output $OUTDIR, budget ${BUDGET}s, make -j$JOBS, python $PY"
stage env 5 60 st_env
stage deps 10 60 st_deps
stage build 60 240 st_build
if [[ " ${STAGES[*]} " == *" build|PASS|"* ]]; then
  stage tests 20 120 st_tests
  stage compare 15 45 st_compare
  stage adm-export 15 120 st_adm_export
  stage cpu-export-on-$DEVICE 10 60 st_adm_on_device
  stage device-ops 10 90 st_device_ops
  stage bench 60 200 st_bench
  stage restore 30 120 st_restore
  stage suites 20 90 st_suites
else
  for s in tests compare adm-export "cpu-export-on-$DEVICE" device-ops bench restore suites; do STAGES+=("$s|SKIP|0|no build"); done
fi

say "done in $(( $(date +%s) - T0 ))s"
