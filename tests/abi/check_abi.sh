#!/usr/bin/env bash
# ABI guard for libstsl.so:
#  1. only stsl_* symbols are exported, all in a STSL_x.y version node;
#  2. no symbol of the committed list (tests/abi/symbols.txt) disappeared;
#  3. abidiff against the committed baseline (tests/abi/libstsl.abi) finds no incompatible
#     change unless the SONAME's major version was bumped;
#  4. include/stsl.h compiles on its own as C99 (pedantic) and as C++.
set -u
lib="$1"
here=$(cd "$(dirname "$0")" && pwd)
. "$here/../common/checks.sh"

echo "=== ABI checks on $lib"
soname=$(readelf -d "$lib" | sed -n 's/.*SONAME.*\[\(.*\)\]/\1/p')
[ -n "$soname" ] && ok "SONAME $soname" || bad "no SONAME"

# name@@VERSION, so that moving a symbol to another version node also counts as a change
syms=$(nm -D --defined-only "$lib" | awk '$2 ~ /[TDBRWV]/ {print $3}' | sort -u)
stray=$(echo "$syms" | sed 's/@.*//' | grep -v '^stsl_' | grep -v '^STSL_' || true)
[ -z "$stray" ] && ok "only stsl_* symbols exported ($(echo "$syms" | wc -l))" || bad "non-stsl symbols exported: $(echo $stray | head -c 300)"
unversioned=$(nm -D --defined-only "$lib" | awk '$2 == "T" && $3 !~ /@@?STSL_/ {print $3}')
[ -z "$unversioned" ] && ok "every function carries a STSL_ version" || bad "unversioned: $unversioned"

if [ -f "$here/symbols.txt" ]; then
  missing=$(comm -23 "$here/symbols.txt" <(echo "$syms") | grep -v '^STSL_' || true)
  added=$(comm -13 "$here/symbols.txt" <(echo "$syms") | grep -v '^STSL_' || true)
  [ -z "$missing" ] && ok "no exported symbol removed" || bad "symbols removed without a SONAME bump: $missing"
  [ -n "$added" ] && echo "  note: new symbols (add them to a new version node and run 'make abi-baseline'): $(echo $added)"
else
  bad "tests/abi/symbols.txt missing (run make abi-baseline)"
fi

if command -v abidiff >/dev/null 2>&1 && [ -f "$here/libstsl.abi" ]; then
  base_soname=$(sed -n 's/.*soname=.\([^"'"'"']*\).*/\1/p' "$here/libstsl.abi" | head -1)
  # --hd1/--hd2: only types defined in the public header count.  The handles are opaque, so the
  # layout of a private struct reachable from them (stsl__score_ops, say) is not ABI.
  inc="$here/../../include"
  out=$(abidiff --no-added-syms --hd1 "$inc" --hd2 "$inc" "$here/libstsl.abi" "$lib" 2>&1); rc=$?
  # abidiff's status bits: 1 error, 2 usage error, 4 ABI change, 8 incompatible change.  With
  # --no-added-syms new functions do not count, so any remaining change touches an existing
  # interface (a struct layout, a parameter) and needs a SONAME bump.
  if [ $((rc & 12)) -ne 0 ] && [ "$base_soname" = "$soname" ]; then
    bad "abidiff: ABI change to existing interfaces without a SONAME bump (rc=$rc)"; echo "$out" | head -40
  elif [ $((rc & 1)) -ne 0 ] || [ $((rc & 2)) -ne 0 ]; then
    bad "abidiff could not run (rc=$rc)"; echo "$out" | head -10
  else
    ok "abidiff against the baseline: compatible (rc=$rc)"
  fi
else
  bad "abidiff or tests/abi/libstsl.abi missing"
fi

tmp=$(mktemp -d)
printf '#include "stsl.h"\nint main(void){return stsl_version_number()==STSL_VERSION_NUMBER?0:1;}\n' > "$tmp/c.c"
cp "$tmp/c.c" "$tmp/cxx.cpp"
${CC:-cc} -std=c99 -pedantic -Wall -Wextra -Werror -Iinclude -c "$tmp/c.c" -o "$tmp/c.o" && ok "header compiles alone as C99 -pedantic" || bad "header does not compile as C99"
${CXX:-c++} -std=c++11 -Wall -Wextra -Werror -Iinclude -c "$tmp/cxx.cpp" -o "$tmp/cxx.o" && ok "header compiles alone as C++11" || bad "header does not compile as C++"
rm -rf "$tmp"
checks_done abi
