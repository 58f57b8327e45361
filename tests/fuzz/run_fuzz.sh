#!/usr/bin/env bash
# Run each libFuzzer target for N seconds on a working copy of its seed corpus
# (tests/fuzz/corpus/<name>/), and print executions and crashes per target.
set -u
secs="$1"; shift
status=0; total_runs=0
for t in "$@"; do
  name=${t#fuzz_}
  work="build/fuzz/corpus/$name"; mkdir -p "$work" build/fuzz/artifacts
  # seed directories per target: fuzz_image starts from both the PNG and the JPEG seeds
  case "$name" in image) seeds="png jpeg" ;; *) seeds="$name" ;; esac
  for s in $seeds; do
    [ -d "tests/fuzz/corpus/$s" ] && cp -r "tests/fuzz/corpus/$s/." "$work/" 2>/dev/null
  done
  log="build/fuzz/$t.log"
  build/fuzz/targets/$t -max_total_time="$secs" -rss_limit_mb=2048 -timeout=20 \
      -artifact_prefix=build/fuzz/artifacts/$t- "$work" >"$log" 2>&1
  rc=$?
  runs=$(grep -o 'Done [0-9]* runs' "$log" | awk '{print $2}' | tail -1)
  runs=${runs:-0}; total_runs=$((total_runs + runs))
  if [ $rc -eq 0 ]; then
    echo "fuzz $t: $runs executions in ${secs}s, no crash"
  else
    echo "fuzz $t: FAILED (rc=$rc) after $runs executions; see $log"; tail -30 "$log"; status=1
  fi
done
echo "fuzz: $total_runs executions over $# targets"
exit $status
