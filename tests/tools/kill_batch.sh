#!/usr/bin/env bash
# Interrupted batches lose nothing (issue 17).
#
#   bash tests/tools/kill_batch.sh [ROUNDS] [IMAGES] [SHARDS] [SEED]
#
# Runs SHARDS `stsl-restore --shard I/SHARDS` processes over one input directory and one output
# directory, ROUNDS times (with KILL_UNSHARDED=1, the default, the last of them runs without
# --shard: it shares every item with the others through the per-image claims), and kills
# processes with SIGKILL: some after a random delay, some
# inside an image save or inside a results.csv append (the tool's STSL_RESTORE_KILL=image:K /
# csv:K hook stops the K-th such write half-way with SIGKILL).  Then it resumes without kills
# until every shard exits 0, and checks:
#   - every input has exactly one output, and it is a valid 8x8 PNG (chunk CRCs, inflated size);
#   - no temporary file is left in the output directory;
#   - results.csv: one header, every row complete (9 fields, numbers, status ok), and exactly one
#     "ok" row per input (none torn, none duplicated, none missing).
# Prints the counts (inputs, processes started, killed by the timer, killed inside a save,
# killed inside a CSV append, resumed rounds) and exits non-zero on any violation.
#
# Uses the TorchScript fixtures (tests/scores/fixtures/unet_latent.pt, ae.pt); skipped with a
# message when the tool has no TorchScript backend.
set -u
rounds=${1:-4}; images=${2:-12}; shards=${3:-3}; seed=${4:-$$}
bin=${STSL_RESTORE_BIN:-${STSL_BIN_DIR:-bin}/stsl-restore}
model=tests/scores/fixtures/unet_latent.pt
# (the inputs and checks need only the standard library; the finder is the tests' usual one)
. "$(dirname "$0")/../../scripts/torch_python.sh"
py=$(torch_python "${STSL_PYTHON:-}" "struct, zlib") || { echo "kill-batch: no python3"; exit 1; }
steps=${KILL_STEPS:-12}
batch=${KILL_BATCH:-3}   # images per solver run: a kill can land with a whole batch in flight
# odd shards run two workers (--jobs 2): two batches in flight, rows appended from two threads
unsharded=${KILL_UNSHARDED:-1}

if ! "$bin" --version >/dev/null 2>&1; then echo "kill-batch: $bin not built"; exit 1; fi
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
mkdir -p "$work/in" "$work/out"
# inputs: 8x8 grey PNGs, seeded
"$py" - "$work/in" "$images" <<'PY'
import random, struct, sys, zlib
d, n = sys.argv[1], int(sys.argv[2])
def chunk(t, b):
    return struct.pack('>I', len(b)) + t + b + struct.pack('>I', zlib.crc32(t + b) & 0xffffffff)
for i in range(n):
    r = random.Random(i)
    raw = b''.join(b'\0' + bytes(r.randrange(256) for _ in range(8)) for _ in range(8))
    with open('%s/img%04d.png' % (d, i), 'wb') as f:
        f.write(b'\x89PNG\r\n\x1a\n' + chunk(b'IHDR', struct.pack('>IIBBBBB', 8, 8, 8, 0, 0, 0, 0))
                + chunk(b'IDAT', zlib.compress(raw)) + chunk(b'IEND', b''))
PY
# the tool must be able to load the fixture, else there is nothing to test
if ! "$bin" "$work/in/img0000.png" "$work/probe.png" --task sr2 --solver psld --steps 1 \
      --model "$model" --quiet >/dev/null 2>"$work/probe.err"; then
  echo "kill-batch: skipped: $(head -1 "$work/probe.err")"
  exit 0
fi

RANDOM=$seed
started=0; timer_kills=0; hook_image=0; hook_csv=0; bad=0
run_round() {   # $1 = 1: with kills
  local pids=() modes=() i
  for ((i = 0; i < shards; i++)); do
    local env=() mode=$((RANDOM % 4))
    [ "$1" = 1 ] || mode=0
    if [ "$1" = 1 ] && [ $mode -eq 1 ]; then env=(STSL_RESTORE_KILL=image:$((1 + RANDOM % 3)))
    elif [ "$1" = 1 ] && [ $mode -eq 2 ]; then env=(STSL_RESTORE_KILL=csv:$((1 + RANDOM % 3))); fi
    local shard=(--shard "$i/$shards")
    [ "$unsharded" = 1 ] && [ $i -eq $((shards - 1)) ] && [ $shards -gt 1 ] && shard=()
    env "${env[@]}" "$bin" "$work/in" "$work/out" --task sr2 --solver psld --steps "$steps" \
        --model "$model" --threads 1 --batch "$batch" --jobs $((1 + i % 2)) --quiet "${shard[@]}" >/dev/null 2>>"$work/err.log" &
    pids+=($!); modes+=($mode); started=$((started + 1))
    if [ "$1" = 1 ] && [ $mode -eq 3 ]; then   # killed by the timer, somewhere
      local victim=$! delay=$((RANDOM % 1500))
      ( sleep "$(printf '%d.%03d' $((delay / 1000)) $((delay % 1000)))"; kill -KILL "$victim" 2>/dev/null ) &
    fi
  done
  local rcs=0
  for i in "${!pids[@]}"; do
    wait "${pids[$i]}" 2>/dev/null; local rc=$?
    [ $rc -ne 0 ] && rcs=$((rcs + 1))
    echo "${modes[$i]} $rc" >>"$work/rcs"
  done
  wait   # the timers
  return $rcs
}
# Between rounds, leave what a process killed inside write() leaves (a SIGKILL lands there too
# rarely to rely on the timer): half a row at the end of results.csv, and a partial temporary
# image as the library's save (..NAME.PID.tmp.XXXXXXXX.tmp) and the tool (.NAME.PID.tmp) name them,
# and the claim file (.NAME.claim) of a process killed with it held.
torn=0; stale=0
leave_debris() {
  local k=$((RANDOM % images)) name
  name=$(printf 'img%04d.png' "$k")
  if [ -f "$work/out/results.csv" ]; then
    printf '"%s/in/%s",ok,1' "$work" "$name" >>"$work/out/results.csv"; torn=$((torn + 1))
  fi
  head -c 20 "$work/in/$name" >"$work/out/..$name.99999.tmp.0badf00d.tmp"
  head -c 20 "$work/in/$name" >"$work/out/.$name.99999.tmp"; stale=$((stale + 2))
  : >"$work/out/.$(printf 'img%04d.png' $(((k + 1) % images))).claim"   # a dead process's claim
}
touch "$work/rcs"
for ((r = 0; r < rounds; r++)); do run_round 1; leave_debris; done
# how each process ended ("mode rc"; rc 137 = SIGKILL): mode 1 image hook, 2 CSV hook, 3 timer
kills=$(grep -c ' 137$' "$work/rcs" || true)
hook_image=$(grep -c '^1 137$' "$work/rcs" || true)
hook_csv=$(grep -c '^2 137$' "$work/rcs" || true)
timer_kills=$(grep -c '^3 137$' "$work/rcs" || true)
resumes=0
until run_round 0; do
  resumes=$((resumes + 1))
  if [ $resumes -gt 5 ]; then echo "kill-batch: FAIL: shards still failing after 5 resumes"; bad=1; break; fi
done
resumes=$((resumes + 1))
others=$(grep -Evc ' (0|137)$' "$work/rcs" || true)
if [ "$others" != 0 ]; then
  echo "kill-batch: FAIL: $others process(es) exited with neither 0 nor SIGKILL:"; sort "$work/rcs" | uniq -c
  tail -5 "$work/err.log"; bad=1
fi

"$py" - "$work/in" "$work/out" <<'PY' || bad=1
import csv, os, struct, sys, zlib
ind, outd = sys.argv[1], sys.argv[2]
inputs = sorted(f for f in os.listdir(ind) if f.endswith('.png'))
errors = []
def png_ok(path):
    b = open(path, 'rb').read()
    if b[:8] != b'\x89PNG\r\n\x1a\n': return 'no PNG signature'
    p, idat, ihdr = 8, b'', None
    while p < len(b):
        if p + 8 > len(b): return 'truncated chunk header'
        n, t = struct.unpack('>I', b[p:p + 4])[0], b[p + 4:p + 8]
        body = b[p + 8:p + 8 + n]
        if len(body) != n or p + 12 + n > len(b): return 'truncated chunk'
        if struct.unpack('>I', b[p + 8 + n:p + 12 + n])[0] != zlib.crc32(t + body) & 0xffffffff: return 'bad CRC'
        if t == b'IHDR': ihdr = struct.unpack('>IIBBBBB', body)
        if t == b'IDAT': idat += body
        p += 12 + n
        if t == b'IEND': break
    else:
        return 'no IEND'
    if not ihdr or ihdr[0] != 8 or ihdr[1] != 8: return 'not 8x8'
    try: raw = zlib.decompress(idat)
    except zlib.error: return 'bad zlib stream'
    ch = {0: 1, 2: 3, 4: 2, 6: 4}.get(ihdr[3], 1) * (ihdr[2] // 8)
    if len(raw) != 8 * (1 + 8 * ch): return 'inflated size %d' % len(raw)
    return None
names = os.listdir(outd)
temps = [n for n in names if n.startswith('.') or n.endswith('.tmp')]
if temps: errors.append('temporary files left: %s' % temps[:5])
for f in inputs:
    p = os.path.join(outd, f)
    if not os.path.exists(p): errors.append('no output for %s' % f); continue
    why = png_ok(p)
    if why: errors.append('%s: %s' % (f, why))
extra = [n for n in names if n.endswith('.png') and n not in inputs]
if extra: errors.append('unexpected outputs: %s' % extra[:5])
text = open(os.path.join(outd, 'results.csv'), newline='').read()
if not text.endswith('\n'): errors.append('results.csv ends inside a row')
lines = text.split('\n')[:-1]
header = 'file,status,unet_forward,unet_vjp,decoder_forward,decoder_vjp,seconds,batch,seed'
if not lines or lines[0] != header: errors.append('results.csv header: %r' % (lines[:1],))
ok = {}
for k, row in enumerate(csv.reader(lines[1:]), 2):
    if len(row) != 9 or row[1] not in ('ok', 'failed') or not all(x.replace('.', '', 1).isdigit() for x in row[2:]):
        errors.append('results.csv line %d torn or malformed: %r' % (k, row)); continue
    if row[1] == 'ok': ok[os.path.basename(row[0])] = ok.get(os.path.basename(row[0]), 0) + 1
    else: errors.append('results.csv line %d: %s failed' % (k, row[0]))
for f in inputs:
    if ok.get(f, 0) != 1: errors.append('%s has %d ok rows' % (f, ok.get(f, 0)))
for e in errors[:20]: print('kill-batch: FAIL:', e)
print('kill-batch: checked %d outputs (PNG structure), %d csv rows, %d temporaries' % (len(inputs), len(lines) - 1, len(temps)))
sys.exit(1 if errors else 0)
PY
echo "kill-batch: $images inputs, $shards processes a round (odd ones with 2 workers$([ "$unsharded" = 1 ] && echo ", the last unsharded")), batches of $batch, $rounds killing rounds + $resumes resume round(s): $started processes, $kills killed with SIGKILL ($timer_kills at a random moment, $hook_image inside an image save, $hook_csv inside a results.csv append; seed $seed); left between rounds: $torn torn row(s), $stale partial temporaries"
if [ $bad -ne 0 ]; then echo "kill-batch: FAILED"; sed 's/^/  stderr: /' "$work/err.log" | grep -v interrupted | tail -5; exit 1; fi
echo "kill-batch: 1 passed, 0 failed"
