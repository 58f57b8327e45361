#!/usr/bin/env bash
# A build configured differently recompiles what it links (BUILD/flags.txt, Makefile): a `make`
# run before `make deps` had left the model code built without libtorch, and `make demo` then
# linked those stale objects and said "built without the TorchScript backend".
#
#   bash tests/tools/check_build_flags.sh MAKE CFLAGS BUILD   (make check-build-flags, after make all)
#
# 1. with the same flags `make -n all` has nothing to compile;
# 2. with one more C flag it recompiles the library's objects and relinks libstsl.so;
# 3. `make -n` wrote nothing: the flags file is unchanged and (1) still holds.
set -u
make=$1; cflags=$2; build=$3
cd "$(dirname "$0")/../.."
. tests/common/checks.sh

echo "=== build flags ($build/flags.txt)"
stamp=$build/flags.txt
before=$(cat "$stamp" 2>/dev/null || echo missing)
same=$($make --no-print-directory -n all 2>&1)
if ! grep -q -- ' -c src/' <<<"$same"; then ok "same flags: nothing to recompile"
else bad "same flags: make -n all would recompile: $(grep -m1 -- ' -c src/' <<<"$same")"; fi
probe=$($make --no-print-directory -n all CFLAGS="$cflags -DSTSL_FLAGS_PROBE" 2>&1)
if grep -q -- '-DSTSL_FLAGS_PROBE.* -c src/core/status.c' <<<"$probe" && grep -q -- '-shared -o' <<<"$probe"
then ok "one more C flag: the objects are recompiled and libstsl.so relinked"
else bad "one more C flag: make -n all does not recompile src/core/status.c or relink libstsl.so"; fi
after=$(cat "$stamp" 2>/dev/null || echo missing)
again=$($make --no-print-directory -n all 2>&1)
if [ "$before" = "$after" ] && ! grep -q -- ' -c src/' <<<"$again"; then ok "make -n wrote nothing"
else bad "make -n changed $stamp or left a rebuild behind"; fi
checks_done "build flags"
