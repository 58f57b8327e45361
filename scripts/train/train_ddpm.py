#!/usr/bin/python3
"""Train the pixel-space DDPM prior on Fashion-MNIST 28x28 (eps prediction, 1000 steps,
linear betas 1e-4..0.02), on the CPU or --device. Writes the EMA weights (decay 0.999) to --out;
scripts/train/export_models.py turns them into models/fmnist-ddpm.pt.

  /usr/bin/python3 scripts/train/train_ddpm.py --epochs 12 --threads 2
"""
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from common import (CKPT_DIR, atomic_save, base_parser, count_params, diffusion_train_loop,  # noqa: E402
                    init_from, load_fmnist, log, seed_all, setup_threads)
from nets import PixelUNet  # noqa: E402

CONFIG = dict(cin=1, c1=32, c2=64, c3=64, temb=128)


def main():
    p = base_parser(__doc__, epochs=12, out=os.path.join(CKPT_DIR, "ddpm-ema.pt"))
    p.add_argument("--ckpt", default=os.path.join(CKPT_DIR, "ddpm.ckpt"))
    p.add_argument("--flip", type=int, default=1, help="random horizontal flip (1/0)")
    args = p.parse_args()
    setup_threads(args.threads)
    seed_all(args.seed)
    x, _ = load_fmnist("train", args.limit)
    log("train images", tuple(x.shape), "range", float(x.min()), float(x.max()))
    model = PixelUNet(**CONFIG)
    log("PixelUNet params", count_params(model))
    init_from(model, args)
    model, ema, step = diffusion_train_loop(model, x, args, args.ckpt, "ddpm", 5e-4, flip=bool(args.flip))
    atomic_save({"config": CONFIG, "ema": ema.state_dict(), "params": count_params(model),
                 "steps": args.init_steps + step,
                 "args": vars(args)}, args.out)
    log("wrote", args.out)


if __name__ == "__main__":
    main()
