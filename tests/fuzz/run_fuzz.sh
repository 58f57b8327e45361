#!/usr/bin/env bash
# Run each libFuzzer target for N seconds on a working copy of its seed corpus
# (tests/fuzz/corpus/<name>/), and print executions, executions per second and crashes per target.
#   bash tests/fuzz/run_fuzz.sh SECONDS fuzz_png fuzz_jpeg ...
# SECONDS may be one number for all targets or a list name=secs,... with a default, e.g.
#   "120 operator=150,meta=60".  A crash leaves its input in build/fuzz/artifacts/; copy it into
# tests/fuzz/corpus/<name>/ so that every later run (make check included) replays it first.
# FUZZ_SUMMARY=file appends one line per target: name runs seconds execs_per_s status.
set -u
spec="$1"; shift
default=${spec%% *}; overrides=""
[ "$spec" != "$default" ] && overrides=${spec#* }
status=0; total_runs=0
for t in "$@"; do
  name=${t#fuzz_}
  secs=$default
  for kv in ${overrides//,/ }; do [ "${kv%%=*}" = "$name" ] && secs=${kv#*=}; done
  work="build/fuzz/corpus/$name"; mkdir -p "$work" build/fuzz/artifacts
  # seed directories per target
  case "$name" in image) seeds="png jpeg" ;; *) seeds="$name" ;; esac
  for s in $seeds; do
    [ -d "tests/fuzz/corpus/$s" ] && cp -r "tests/fuzz/corpus/$s/." "$work/" 2>/dev/null
  done
  # argv vectors and operator settings need no more than this; shorter inputs run faster
  case "$name" in cli) maxlen=512 ;; operator) maxlen=128 ;; *) maxlen=4096 ;; esac
  # one log per process: a `make check` pass beside a long campaign must not share (and
  # truncate) the campaign's log
  log="build/fuzz/$t.$$.log"
  start=$(date +%s.%N)
  build/fuzz/targets/$t -max_total_time="$secs" -max_len=$maxlen -rss_limit_mb=2048 -timeout=20 \
      -artifact_prefix=build/fuzz/artifacts/$t- "$work" >"$log" 2>&1
  rc=$?
  el=$(awk -v a="$start" -v b="$(date +%s.%N)" 'BEGIN{printf "%.0f", b - a}')
  runs=$(grep -ao 'Done [0-9]* runs' "$log" | awk '{print $2}' | tail -1)
  runs=${runs:-0}; total_runs=$((total_runs + runs))
  rate=$(awk -v r="$runs" -v s="$secs" 'BEGIN{printf "%.0f", r / (s > 0 ? s : 1)}')
  if [ $rc -eq 0 ]; then
    echo "fuzz $t: $runs executions in ${secs}s ($rate/s), no crash"
    [ -n "${FUZZ_SUMMARY:-}" ] && echo "$t $runs $secs $rate ok" >>"$FUZZ_SUMMARY"
    rm -f "$log"
  else
    echo "fuzz $t: FAILED (rc=$rc) after $runs executions; see $log"; tail -30 "$log"; status=1
    [ -n "${FUZZ_SUMMARY:-}" ] && echo "$t $runs $el $rate CRASH" >>"$FUZZ_SUMMARY"
  fi
done
echo "fuzz: $total_runs executions over $# targets"
exit $status
