#!/usr/bin/python3
"""Train the latent DDPM prior on scaled VAE latents (zc x 7 x 7, zc from the VAE file: 8 for the
shipped VAE, 4 for the first one) of Fashion-MNIST (eps prediction, 1000 steps, linear betas 1e-4..0.02),
on the CPU or --device (the latents are encoded there too). Needs the trained VAE
(--vae, written by train_vae.py); latents are the posterior means times latent_scale,
exactly E(x) = latent_scale * encode(x) as the library computes it.

  /usr/bin/python3 scripts/train/train_latent.py --epochs 15 --threads 2
"""
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import torch  # noqa: E402

from common import (CKPT_DIR, atomic_save, base_parser, count_params, diffusion_train_loop,  # noqa: E402
                    init_from, load_file, load_fmnist, log, seed_all, setup_threads)
from nets import VAE, LatentNet  # noqa: E402

CONFIG = dict(cin=4, ch=96, nblocks=4, temb=128)


def main():
    p = base_parser(__doc__, epochs=15, out=os.path.join(CKPT_DIR, "ldm-ema.pt"))
    p.add_argument("--ckpt", default=os.path.join(CKPT_DIR, "ldm.ckpt"))
    p.add_argument("--vae", default=os.path.join(CKPT_DIR, "vae-final.pt"))
    p.add_argument("--flip", type=int, default=1, help="encode flipped copies too (1/0)")
    args = p.parse_args()
    setup_threads(args.threads)
    seed_all(args.seed)
    v = load_file(args.vae)
    vae = VAE(**v["config"])
    vae.load_state_dict(v["model"])
    vae.eval()
    scale = float(v["latent_scale"])
    log("VAE from", args.vae, "latent_scale", scale)
    x, _ = load_fmnist("train", args.limit)
    dev = torch.device(args.device)
    vae.to(dev)
    with torch.no_grad():
        zs = []
        srcs = [x, x.flip(3)] if args.flip else [x]
        for src in srcs:
            for i in range(0, src.shape[0], 500):
                zs.append((vae.encode(src[i:i + 500].to(dev)) * scale).cpu())
        z = torch.cat(zs)
    log("latents", tuple(z.shape), "mean %.3f std %.3f" % (float(z.mean()), float(z.std())))
    # the prior's channels follow the autoencoder's latent (8 for the shipped VAE, 4 for the first one)
    config = dict(CONFIG, cin=int(v["config"].get("zc", CONFIG["cin"])))
    model = LatentNet(**config)
    log("LatentNet params", count_params(model), "config", config)
    init_from(model, args)
    # one "epoch" here is one pass over the (possibly doubled by flips) latent set
    model, ema, step = diffusion_train_loop(model, z, args, args.ckpt, "ldm", 5e-4, flip=False)
    atomic_save({"config": config, "ema": ema.state_dict(), "params": count_params(model),
                 "steps": args.init_steps + step,
                 "latent_scale": scale, "args": vars(args)}, args.out)
    log("wrote", args.out)


if __name__ == "__main__":
    main()
