#!/usr/bin/env bash
# The image benchmark of `make bench`: every task x configuration through `stsl-bench --task`,
# then scripts/bench_eval.py (classifier accuracy, Frechet feature distance) and
# scripts/bench_report.py (docs/benchmarks.md, plots, montages).
#
#   BENCH_N=20 BENCH_DIR=build/bench BENCH_TASKS="..." BENCH_CONFIGS="..." BENCH_STEP_DIV=1 \
#   BENCH_THREADS=1 BENCH_JOBS=1 BENCH_BATCH=20 BENCH_REPORT=docs/benchmarks.md bash scripts/bench_run.sh
#
# BENCH_THREADS is the thread count of each stsl-bench process (1: the networks here are small and
# a second thread mostly spins, several times slower on a busy machine); BENCH_JOBS runs that many
# processes side by side (2 on an otherwise idle 2-core machine).
#
# Resumable: a configuration whose run.txt exists for the same N and step divisor is not run
# again (delete BENCH_DIR to start over).  BENCH_STEP_DIV=k divides every step count by k (at
# least 2): a smoke test of the pipeline, NOT the papers' settings; the report says so.
# BENCH_PLAN=1 computes the cost first: every configuration at 1/BENCH_PLAN_DIV (50) of its steps
# on one batch, then prints the projected time of the full run per configuration and in total.
set -euo pipefail
SELF="$(cd "$(dirname "$0")" && pwd)/$(basename "$0")"
cd "$(dirname "$0")/.."
BIN=${BINOUT:-bin}
N=${BENCH_N:-20}
DIR=${BENCH_DIR:-build/bench}
DIV=${BENCH_STEP_DIV:-1}
THREADS=${BENCH_THREADS:-1}
JOBS=${BENCH_JOBS:-1}
BATCH=${BENCH_BATCH:-20}
REPORT=${BENCH_REPORT:-docs/benchmarks.md}
PY=${TORCH_PYTHON:-/usr/bin/python3}
TASKS=${BENCH_TASKS:-gaussian-blur motion-blur sr4 random-inpaint box-inpaint salt-pepper}

# label | solver | steps | extra options | group
#   paper:  the papers' settings;  budget: matched NFE budgets (about 250 UNet evaluations);
#   mean:   posterior-mean comparison (RMP vs the mean of several DPS samples)
CONFIGS=(
  "stsl@50xK5|stsl|50|--K 5|paper"
  "stsl-biased@50|stsl-biased|50||paper"
  "psld@50|psld|50||paper"
  "psld@1000|psld|1000||paper"
  "ldps@1000|ldps|1000||paper"
  "dps@1000|dps|1000||paper"
  "dps-mo@50|dps-mo|50||paper"
  "dps-mo@100|dps-mo|100||paper"
  "rmp@400|rmp|400||paper"
  "dps@250|dps|250||budget"
  "psld@250|psld|250||budget"
  "rmp@250|rmp|250||budget"
  "stsl-biased@250|stsl-biased|250||budget"
  "dps@100-mean4|dps|100|--samples 4|mean"
  "dps@250-mean4|dps|250|--samples 4|mean"
)
# Not run unless named in BENCH_CONFIGS (they would double the cost of the default run):
EXTRA_CONFIGS=(
  "ldps@250|ldps|250||budget"
  "dps@1000-mean4|dps|1000|--samples 4|mean"
)
if [ -n "${BENCH_CONFIGS:-}" ]; then
  keep=()
  for c in "${CONFIGS[@]}" "${EXTRA_CONFIGS[@]}"; do
    for want in $BENCH_CONFIGS; do [ "${c%%|*}" = "$want" ] && keep+=("$c"); done
  done
  CONFIGS=("${keep[@]}")
fi
[ ${#CONFIGS[@]} -gt 0 ] || { echo "bench: no configuration selected" >&2; exit 2; }

steps_of() { local s=$(( $1 / DIV )); [ "$s" -lt 2 ] && s=2; echo "$s"; }

ntasks=$(wc -w <<<"$TASKS")
echo "bench: $ntasks task(s) x ${#CONFIGS[@]} configuration(s), N=$N images each, step divisor $DIV, results in $DIR"
if [ "${BENCH_PLAN:-0}" = 1 ]; then
  # Cost first: run every configuration at 1/PLAN_DIV of its steps on one batch of images and
  # project the full run (solver time is linear in the steps; model loading is not counted).
  PLAN_DIV=${BENCH_PLAN_DIV:-50}
  PN=$(( N < BATCH ? N : BATCH ))
  PDIR="$DIR-plan"
  echo "bench plan: timing every configuration at 1/$PLAN_DIV of its steps on $PN image(s) in $PDIR ..."
  BENCH_PLAN=0 BENCH_N=$PN BENCH_STEP_DIV=$PLAN_DIV BENCH_DIR=$PDIR BENCH_NO_REPORT=1 bash "$SELF" >/dev/null
  total=0
  printf "%-18s %-8s %12s %14s\n" config group "s/image" "all tasks (s)"
  for c in "${CONFIGS[@]}"; do
    IFS='|' read -r label solver steps extra group <<<"$c"
    sum=0
    for task in $TASKS; do
      f="$PDIR/$task/$label/run.txt"
      [ -f "$f" ] || continue
      s_img=$(sed -n 's/^seconds = //p' "$f")
      ran=$(sed -n 's/^steps = //p' "$f")
      sum=$(awk -v a="$sum" -v b="$s_img" -v full="$steps" -v ran="$ran" -v n="$N" 'BEGIN{print a + b*full/ran*n}')
    done
    per=$(awk -v a="$sum" -v n="$N" -v t="$ntasks" 'BEGIN{printf "%.1f", a/n/t}')
    printf "%-18s %-8s %12s %14.0f\n" "$label" "$group" "$per" "$sum"
    total=$(awk -v a="$total" -v b="$sum" 'BEGIN{print a+b}')
  done
  awk -v t="$total" -v n="$N" 'BEGIN{printf "projected total for N=%d: %.0f s = %.1f h (on this machine at its current load)\n", n, t, t/3600}'
  exit 0
fi
for m in fmnist-ddpm.pt fmnist-ldm.pt fmnist-vae.pt fmnist-classifier.pt; do
  [ -f "${STSL_MODEL_DIR:-models}/$m" ] || {
    echo "bench: ${STSL_MODEL_DIR:-models}/$m is missing: the default models are trained by scripts/train (issue 7)" >&2
    exit 1
  }
done
[ -x "$BIN/stsl-bench" ] || { echo "bench: $BIN/stsl-bench is not built" >&2; exit 1; }

mkdir -p "$DIR"
start=$(date +%s)
# run_tasks JOB TASK...: every configuration of the given tasks, one after the other
run_tasks() {
  local job=$1; shift
  local mine=$(( $# * ${#CONFIGS[@]} )) k=0 task c label solver steps extra group out t0 t1 el eta
  for task in "$@"; do
    for c in "${CONFIGS[@]}"; do
      IFS='|' read -r label solver steps extra group <<<"$c"
      out="$DIR/$task/$label"
      k=$((k + 1))
      if [ -f "$out/run.txt" ] && grep -qx "n = $N" "$out/run.txt" && [ -f "$out/stepdiv" ] &&
         [ "$(cat "$out/stepdiv")" = "$DIV" ]; then
        echo "bench[$job]: [$k/$mine] $task $label: done already"
        continue
      fi
      rm -rf "$out"
      mkdir -p "$out"
      local opts=()
      # the DPS reference code's guidance scale for inpainting (0.3 elsewhere is the default)
      if [ "$solver" = dps ] && [[ "$task" == *inpaint ]]; then opts+=(--zeta 0.5); fi
      t0=$(date +%s)
      # shellcheck disable=SC2086
      if ! "$BIN/stsl-bench" --task "$task" --solver "$solver" --steps "$(steps_of "$steps")" $extra \
          "${opts[@]}" --n "$N" --batch "$BATCH" --threads "$THREADS" --label "$label" \
          --csv "$out/rows.csv" --out "$out" --quiet; then
        echo "bench[$job]: $task $label failed" >&2
        echo "failed" > "$out/FAILED"
        continue
      fi
      echo "$DIV" > "$out/stepdiv"
      echo "$group" > "$out/group"
      t1=$(date +%s)
      el=$((t1 - start))
      eta=$(( el * (mine - k) / k ))
      echo "bench[$job]: [$k/$mine] $task $label: $(sed -n 's/^psnr = //p' "$out/run.txt") dB" \
           "in $((t1 - t0)) s (elapsed $el s, ~$eta s left)"
    done
  done
}

# BENCH_JOBS processes side by side, the tasks dealt out round-robin (timings then include the
# contention between them; the table's s/image says what a user of this machine would see).
read -r -a task_list <<<"$TASKS"
pids=()
for ((j = 0; j < JOBS; j++)); do
  mine=()
  for ((i = j; i < ${#task_list[@]}; i += JOBS)); do mine+=("${task_list[i]}"); done
  [ ${#mine[@]} -gt 0 ] || continue
  run_tasks "$j" "${mine[@]}" &
  pids+=($!)
done
for p in "${pids[@]}"; do wait "$p"; done

[ "${BENCH_NO_REPORT:-0}" = 1 ] && exit 0
# classifier accuracy and Frechet distance for the runs that have none yet
todo=()
for d in "$DIR"/*/*/; do
  d=${d%/}
  [ -f "$d/run.txt" ] && [ ! -f "$d/eval.txt" ] && todo+=("$d")
done
if [ ${#todo[@]} -gt 0 ]; then
  "$PY" scripts/bench_eval.py --threads "$THREADS" "${todo[@]}" >/dev/null
fi
"$PY" scripts/bench_report.py --dir "$DIR" --out "$REPORT" --bin "$BIN" \
    --seconds "$(( $(date +%s) - start ))"
echo "bench: report written to $REPORT"
