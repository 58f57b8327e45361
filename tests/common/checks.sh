# The counters of the shell checks (check_abi.sh, check_install.sh, check_build_flags.sh,
# check_test_env.sh): source this, report each check with `ok WHAT` or `bad WHAT`, and end with
# `checks_done LABEL`, which prints "LABEL: N passed, M failed" and fails when any check did.
passed=0
failed=0
ok()  { passed=$((passed + 1)); echo "  ok: $1"; }
bad() { failed=$((failed + 1)); echo "  FAIL: $1"; }
checks_done() {
  echo "$1: $passed passed, $failed failed"
  [ "$failed" -eq 0 ]
}
