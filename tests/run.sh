#!/usr/bin/env bash
# Run every CUnit test program given on the command line, one process per suite, and print a
# closing total.  Exit status is non-zero when any program fails or none ran.
set -u
passed=0; failed=0; failed_names=()
export STSL_TEST_DIR="${STSL_TEST_DIR:-tests}"
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
