# torch_python.sh -- sourced by the scripts that run on a lent GPU machine (check-cuda.sh,
# train/device-train.sh): there the Python with torch is the machine's own, not necessarily
# python3 on PATH.
#
#   torch_python PREFERRED MODULES   prints the first of PREFERRED (may be empty), python3, python,
#                                    /opt/conda/bin/python, /usr/local/bin/python3, /usr/bin/python3
#                                    that imports MODULES (e.g. "torch, numpy"); nothing if none does
torch_python() {
  local p
  for p in ${1:-} python3 python /opt/conda/bin/python /usr/local/bin/python3 /usr/bin/python3; do
    if command -v "$p" >/dev/null 2>&1 && "$p" -c "import $2" >/dev/null 2>&1; then echo "$p"; return 0; fi
  done
  return 1
}
