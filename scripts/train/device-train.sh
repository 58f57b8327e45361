#!/usr/bin/env bash
# device-train.sh -- continue the shipped priors on a lent GPU machine (issue 18: "when a GPU
# machine is available, training there is the better use of its spare minutes").
#
#   here:  bash scripts/train/device-train.sh --prepare      -> build/fmnist/ (the IDX files, ~30 MB)
#   run:   command "bash scripts/train/device-train.sh MINUTES", carry ["build/fmnist"]
#          (after scripts/check-cuda.sh, with what is left of the session's device time)
#   then, here, with the run's files under FILES (files_at):
#          /usr/bin/python3 scripts/train/export_models.py --only ddpm,vae,ldm \
#              --vae models/stages/vae-z8-final.pt --ddpm FILES/train/ddpm-ema.pt --ldm FILES/train/ldm-ema.pt
#          /usr/bin/python3 scripts/train/evaluate_priors.py --n 1000 --threads 2
#          and ship only what beats the shipped figures (models/README.md), then rerun make bench-images.
#
# Both trainings run side by side on the one GPU (the networks are small: each alone leaves most of
# it idle), each from the shipped TorchScript weights (--init) with a fresh optimizer, LR cosine to
# the deadline MINUTES from now; outputs hold CPU tensors in torch's legacy format, which the
# development machine's torch 1.13 loads. Logs and outputs go to $OUT/train (or build/device-train).
set -uo pipefail
cd "$(dirname "$0")/../.."

if [ "${1:-}" = --prepare ]; then
  mkdir -p build/fmnist
  src=/usr/share/datasets/fashion-mnist
  [ -d "$src" ] || { echo "device-train: $src missing (apt-get install dataset-fashion-mnist)" >&2; exit 1; }
  cp "$src"/*idx*-ubyte.gz build/fmnist/
  echo "device-train: $(ls build/fmnist | wc -l) files, $(du -sh build/fmnist | cut -f1), in build/fmnist"
  exit 0
fi

MIN=${1:?usage: device-train.sh MINUTES | --prepare}
OUTDIR=${OUT:-build/device-train}/train
mkdir -p "$OUTDIR"
export STSL_FMNIST_DIR=$PWD/build/fmnist
[ -d "$STSL_FMNIST_DIR" ] || { echo "device-train: build/fmnist missing (carry it; --prepare here)" >&2; exit 1; }

. scripts/torch_python.sh
PY=$(torch_python "${DEVICE_TRAIN_PYTHON:-}" "torch, numpy") \
  || { echo "device-train: no python with torch and numpy" >&2; exit 1; }
DEV=$("$PY" -c 'import torch; print("cuda" if torch.cuda.is_available() else "cpu")')
THREADS=$(( $(nproc 2>/dev/null || echo 2) / 2 ))
# the deadline as UTC HH:MM, at least MIN whole minutes away (the trainings stop with a checkpoint there)
DEADLINE=$(date -u -d "+$((MIN + 1)) min" +%H:%M)
# the trainings read HH:MM as today: a deadline past midnight would already have passed
if [[ "$DEADLINE" < "$(date -u +%H:%M)" ]]; then DEADLINE=23:59; fi
echo "device-train: $PY, torch $("$PY" -c 'import torch; print(torch.__version__)'), device $DEV," \
     "deadline $DEADLINE UTC, output $OUTDIR"

# --init: the shipped weights, whose records state the steps behind them, so the outputs' counts are totals
"$PY" scripts/train/train_ddpm.py --device "$DEV" --threads "$THREADS" --epochs 1000 \
  --init models/fmnist-ddpm.pt --lr 1e-4 --deadline "$DEADLINE" --lr-schedule deadline \
  --ckpt "$OUTDIR/ddpm.ckpt" --out "$OUTDIR/ddpm-ema.pt" > "$OUTDIR/ddpm.log" 2>&1 &
p1=$!
"$PY" scripts/train/train_latent.py --device "$DEV" --threads "$THREADS" --epochs 1000 \
  --vae models/stages/vae-z8-final.pt --init models/fmnist-ldm.pt --lr 2e-4 \
  --deadline "$DEADLINE" --lr-schedule deadline \
  --ckpt "$OUTDIR/ldm.ckpt" --out "$OUTDIR/ldm-ema.pt" > "$OUTDIR/ldm.log" 2>&1 &
p2=$!
while kill -0 $p1 2>/dev/null || kill -0 $p2 2>/dev/null; do
  sleep 30
  echo "device-train: $(date -u +%T) ddpm: $(tail -n 1 "$OUTDIR/ddpm.log" | cut -c1-110)"
  echo "device-train: $(date -u +%T) ldm:  $(tail -n 1 "$OUTDIR/ldm.log" | cut -c1-110)"
done
wait $p1; r1=$?
wait $p2; r2=$?
# the checkpoints (optimizer state, 12 MB each) stay behind: the outputs are what export_models reads
rm -f "$OUTDIR"/*.ckpt
echo "device-train: ddpm rc $r1, ldm rc $r2; $(ls "$OUTDIR")"
[ $r1 = 0 ] && [ $r2 = 0 ]
