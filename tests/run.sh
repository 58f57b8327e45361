#!/usr/bin/env bash
# Run every CUnit test program given on the command line, one process per suite, and print a
# closing total.  Exit status is non-zero when any program fails or none ran.
# BINOUT (make passes its own; default bin) is where the tools under test are: tests/env.sh
# exports it, with the Python that has torch, to every program.
set -u
passed=0; failed=0; failed_names=()
. "$(dirname "$0")/env.sh"
stsl_test_env "${BINOUT:-bin}"
runner=()
if [ -n "${STSL_VALGRIND:-}" ]; then
  supp=()
  [ -f tests/valgrind.supp ] && supp=(--suppressions=tests/valgrind.supp)
  runner=(valgrind -q --error-exitcode=99 --leak-check=full --errors-for-leak-kinds=definite,indirect
          --show-leak-kinds=definite,indirect "${supp[@]}")
fi
for t in "$@"; do
  echo "=== $t"
  if "${runner[@]}" "$t"; then
    passed=$((passed + 1))
  else
    failed=$((failed + 1)); failed_names+=("$t")
  fi
done
echo
if [ ${#failed_names[@]} -gt 0 ]; then
  echo "failing suites: ${failed_names[*]}"
fi
echo "suites: $passed passed, $failed failed"
[ $failed -eq 0 ] && [ $passed -gt 0 ]
