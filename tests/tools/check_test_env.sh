#!/usr/bin/env bash
# The test programs find the tools wherever BINOUT put them, and the Python that
# scripts/torch_python.sh finds (issue 27: on the first GPU run test_exporters ran a python
# without torch, and test_degrade_cli looked in bin/ while the tools were in build/cuda/bin).
#
#   bash tests/tools/check_test_env.sh BUILD BINOUT WITH_TORCH
#
# 1. tools: test_degrade_cli under tests/run.sh with BINOUT a folder elsewhere (links to the
#    built tools) passes, and with BINOUT an empty folder fails (a missing tool is a failure).
# 2. python (WITH_TORCH=1): with a python3 first on PATH that is not /usr/bin/python3 (a wrapper
#    that records its calls and runs the python with torch), tests/env.sh names that wrapper, and
#    test_exporters runs its helper with it (the wrapper stops it there: a few seconds).
set -u
build=$1; binout=$2; with_torch=${3:-0}
cd "$(dirname "$0")/../.."
. tests/common/checks.sh
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

echo "=== test environment (tests/env.sh)"
degrade=$build/tests/operators/test_degrade_cli
mkdir -p "$work/elsewhere" "$work/empty"
for t in "$binout"/*; do ln -s "$(realpath "$t")" "$work/elsewhere/"; done
if BINOUT=$work/elsewhere bash tests/run.sh "$degrade" >"$work/elsewhere.log" 2>&1 \
   && ! grep -q "not built" "$work/elsewhere.log"; then
  ok "test_degrade_cli runs the tool in BINOUT=<another folder>"
else
  bad "test_degrade_cli with BINOUT=<another folder>: $(grep -m1 -E 'not built|FAIL' "$work/elsewhere.log")"
fi
if BINOUT=$work/empty bash tests/run.sh "$degrade" >"$work/empty.log" 2>&1; then
  bad "test_degrade_cli passed with no tool in BINOUT"
else
  ok "test_degrade_cli fails when BINOUT has no stsl-degrade"
fi

if [ "$with_torch" = 1 ]; then
  . scripts/torch_python.sh
  if real=$(torch_python "" torch); then
    real=$(command -v "$real")
    mkdir -p "$work/path"
    cat >"$work/path/python3" <<WRAP
#!/bin/sh
echo "\$*" >>"$work/calls"
case "\$1" in *standins.py) exit 3 ;; esac
exec "$real" "\$@"
WRAP
    chmod +x "$work/path/python3"
    . tests/env.sh
    got=$(unset STSL_PYTHON; PATH="$work/path:$PATH"; stsl_test_env "$binout"; echo "${STSL_PYTHON:-}")
    [ "$got" = "$work/path/python3" ] && ok "tests/env.sh names the python3 first on PATH that has torch" \
      || bad "tests/env.sh chose '$got', not $work/path/python3"
    STSL_PYTHON=$got STSL_TEST_DIR=tests "$build/tests/exporters/test_exporters" >"$work/exporters.log" 2>&1
    grep -q "standins.py make" "$work/calls" 2>/dev/null && ok "test_exporters runs its helper with STSL_PYTHON" \
      || bad "test_exporters did not run its helper with STSL_PYTHON"
  else
    echo "  note: no python with torch on this machine: the python checks are left out"
  fi
fi
checks_done "test environment"
