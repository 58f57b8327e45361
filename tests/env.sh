# tests/env.sh -- sourced by tests/run.sh and scripts/check-cuda.sh: the one place that says
# where a test program finds the built tools and the Python with torch (issue 27: on the first
# GPU run a test ran a python without torch, another looked for its tool in bin/ while BINOUT
# had put it elsewhere).
#
#   stsl_test_env BINDIR   exports STSL_TEST_DIR (tests, unless set), STSL_BIN_DIR (BINDIR made
#                          absolute: the BINOUT of the build under test) and STSL_PYTHON (the
#                          path of the first python that imports torch, from
#                          scripts/torch_python.sh, with STSL_PYTHON itself tried first; unset
#                          when none does)
stsl_test_env() {
  local here py
  here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
  export STSL_TEST_DIR="${STSL_TEST_DIR:-tests}"
  STSL_BIN_DIR=$(cd "$1" 2>/dev/null && pwd) || STSL_BIN_DIR=$1
  export STSL_BIN_DIR
  . "$here/../scripts/torch_python.sh"
  if py=$(torch_python "${STSL_PYTHON:-}" torch); then
    export STSL_PYTHON="$(command -v "$py")"
  else
    unset STSL_PYTHON
  fi
}
