#!/usr/bin/env bash
# No program of the project exports a C++ symbol (issue 27).
#
#   bash tests/abi/check_exports.sh PROGRAM...
#
# A program that carries C++ code (the test programs link libstsl.a, whose shim object holds weak
# std:: template instantiations, c10/torch vtables and typeinfo) exports every such symbol that a
# shared library on its link line also uses; ld.so then binds libtorch's and libc10's own
# references to the program's copies, built with our compiler and headers, and libtorch runs them
# even in its global destructors.  Against a libtorch built by another toolchain (the PyTorch
# wheel) that aborted every test program at exit.  The test link rule hides them with
# --exclude-libs; this check fails when a C++ symbol (mangled name _Z...) is in a program's
# dynamic symbol table again.
set -u
[ $# -gt 0 ] || { echo "usage: check_exports.sh PROGRAM..." >&2; exit 2; }
passed=0; failed=0
for p in "$@"; do
  if [ ! -f "$p" ]; then
    echo "  FAIL: $p not built"; failed=$((failed + 1)); continue
  fi
  cxx=$(nm -D --defined-only "$p" 2>/dev/null | awk '$3 ~ /^_Z/ {print $3}')
  if [ -n "$cxx" ]; then
    failed=$((failed + 1))
    echo "  FAIL: $p exports $(echo "$cxx" | wc -l) C++ symbol(s), e.g.:"
    echo "$cxx" | head -n 5 | c++filt | cut -c1-200 | sed 's/^/      /'
  else
    passed=$((passed + 1))
  fi
done
echo "exports: $passed passed, $failed failed (programs that export no C++ symbol)"
[ $failed -eq 0 ]
