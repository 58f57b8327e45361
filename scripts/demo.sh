#!/usr/bin/env bash
# make demo: restore the bundled sample images (data/samples/*.png) for a few tasks with the
# bundled models and write montages (clean | measurement | restoration) under demo-out/.
#
#   BINOUT=bin DEMO_OUT=demo-out DEMO_THREADS=1 DEMO_FULL=0 bash scripts/demo.sh
#
# STSL runs at the paper's 50 steps x K=5 (latent prior), DPS at 200 steps (pixel prior; paper:
# 1000), DPS-MO at 100 levels and RMP at 400 steps (their papers' settings, pixel prior) so that
# the whole demo takes about 3 minutes on 2 CPU cores (8 images x 6 runs); DEMO_FULL=1 runs DPS
# at 1000 steps.
set -euo pipefail
cd "$(dirname "$0")/.."
BIN=${BINOUT:-bin}
OUT=${DEMO_OUT:-demo-out}
THREADS=${DEMO_THREADS:-1}
FULL=${DEMO_FULL:-0}

MODELS=${STSL_MODEL_DIR:-models}
missing=()
for m in fmnist-ddpm.pt fmnist-ldm.pt fmnist-vae.pt; do
  [ -f "$MODELS/$m" ] || missing+=("$MODELS/$m")
done
if [ ${#missing[@]} -gt 0 ]; then
  echo "make demo: the default models are missing: ${missing[*]}" >&2
  echo "make demo: they are trained and exported by scripts/train (see models/README.md, issue 7);" \
       "or point STSL_MODEL_DIR at a directory holding them" >&2
  exit 1
fi
[ -x "$BIN/stsl-restore" ] || { echo "make demo: $BIN/stsl-restore is not built (make tools)" >&2; exit 1; }
shopt -s nullglob
samples=(data/samples/*.png)
[ ${#samples[@]} -gt 0 ] || { echo "make demo: no images in data/samples/" >&2; exit 1; }

# task | solver | options (reduced) | options (papers' settings)
runs=(
  "gaussian-blur|stsl|--steps 50 --K 5|--steps 50 --K 5"
  "sr4|stsl|--steps 50 --K 5|--steps 50 --K 5"
  "random-inpaint|stsl|--steps 50 --K 5|--steps 50 --K 5"
  "box-inpaint|dps|--steps 200|--steps 1000"
  "motion-blur|dps-mo|--steps 50|--steps 50"
  "gaussian-blur|rmp|--steps 400|--steps 400"
)

if [ "$FULL" = 1 ]; then
  echo "make demo: papers' settings (STSL 50 steps x K=5, DPS 1000 steps); DPS makes it slow"
else
  echo "make demo: STSL at the paper's 50 steps x K=5; DPS at 200 steps (paper: 1000) so that the" \
       "demo takes about 3 minutes on 2 cores; DEMO_FULL=1 for DPS at 1000."
fi
echo "make demo: ${#samples[@]} images from data/samples, ${#runs[@]} tasks, output in $OUT/"
start=$(date +%s)
for r in "${runs[@]}"; do
  IFS='|' read -r task solver reduced full <<<"$r"
  opts=$reduced
  [ "$FULL" = 1 ] && opts=$full
  dir="$OUT/$task-$solver"
  rm -rf "$dir"
  echo
  echo "== $task with $solver ($opts)"
  # shellcheck disable=SC2086
  "$BIN/stsl-restore" data/samples "$dir" --task "$task" --solver "$solver" $opts \
      --threads "$THREADS" --seed 0 --montage "$dir/montage" --montage-scale 4
done
end=$(date +%s)
echo
echo "make demo: done in $((end - start)) s.  Montages (clean | measurement | restoration):"
for r in "${runs[@]}"; do
  IFS='|' read -r task solver _ _ <<<"$r"
  echo "  $OUT/$task-$solver/montage/*.png   (restorations: $OUT/$task-$solver/*.png," \
       "per-image NFEs and time: $OUT/$task-$solver/results.csv)"
done
