#!/usr/bin/python3
"""Train the small KL autoencoder 1x28x28 <-> zc x 7 x 7 (zc = 8 by default, as shipped) on
Fashion-MNIST (images in [-1,1]), CPU only. Loss per image: sum over pixels of (L1 + L2) reconstruction error plus
kl_weight * KL(q(z|x) || N(0,I)) summed over the zc x 49 latent entries. After training it reports
the test-split reconstruction PSNR (scripts/stsl_metrics.py: on [0,1] with data range 1, the
decoder output clipped) and
latent_scale = 1 / std of the posterior means of the training images.

  /usr/bin/python3 scripts/train/train_vae.py --epochs 4 --threads 2
"""
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import torch  # noqa: E402

from common import (CKPT_DIR, atomic_save, base_parser, count_params, epoch_train_loop,  # noqa: E402
                    load_fmnist, log, seed_all, setup_threads)
from nets import VAE  # noqa: E402
sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
from stsl_metrics import psnr  # noqa: E402  (scripts/: the one PSNR)

CONFIG = dict(cin=1, zc=8, c1=32, c2=64)


@torch.no_grad()
def encode_all(vae, x, bs=500):
    vae.eval()
    return torch.cat([vae.encode(x[i:i + bs]) for i in range(0, x.shape[0], bs)])


@torch.no_grad()
def test_psnr(vae, xt, bs=500):
    """Mean over images of the PSNR of decode(encode(x)) (scripts/stsl_metrics.py)."""
    vae.eval()
    rec = torch.cat([vae.decode(vae.encode(xt[i:i + bs])) for i in range(0, xt.shape[0], bs)])
    return psnr(rec, xt)


def main():
    p = base_parser(__doc__, epochs=4, out=os.path.join(CKPT_DIR, "vae-final.pt"))
    p.add_argument("--ckpt", default=os.path.join(CKPT_DIR, "vae.ckpt"))
    p.add_argument("--kl-weight", type=float, default=1e-4)
    p.add_argument("--latent-channels", type=int, default=CONFIG["zc"],
                   help="latent channels zc (latent zc x 7 x 7; the shipped VAE has 8, the first one had 4)")
    args = p.parse_args()
    setup_threads(args.threads)
    seed_all(args.seed)
    x, _ = load_fmnist("train", args.limit)
    xt, _ = load_fmnist("test")
    config = dict(CONFIG, zc=args.latent_channels)
    vae = VAE(**config)
    log("VAE params", count_params(vae))
    lr = args.lr or 1e-3
    opt = torch.optim.AdamW(vae.parameters(), lr=lr, weight_decay=0.0)

    def batch_step(idx, epoch, i, nb):
        xb = x[idx]
        m = torch.rand(idx.shape[0]) < 0.5
        xb = torch.where(m[:, None, None, None], xb.flip(3), xb)
        mean, logvar = vae.moments(xb)
        z = mean + torch.exp(0.5 * logvar) * torch.randn_like(mean)
        r = vae.decode(z)
        d = r - xb
        rec = (d.abs() + d.pow(2)).flatten(1).sum(1).mean()
        kl = 0.5 * (mean.pow(2) + logvar.exp() - 1.0 - logvar).flatten(1).sum(1).mean()
        loss = rec + args.kl_weight * kl
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(vae.parameters(), 5.0)
        opt.step()
        if i % 100 == 0:
            log("vae epoch %d batch %d/%d rec %.2f kl %.1f" % (epoch + 1, i, nb, rec.item(), kl.item()))
        return rec.item(), kl.item()

    def end_epoch(mean):
        return "rec %.2f kl %.1f test PSNR(2k) %.2f dB" % (mean[0], mean[1], test_psnr(vae, xt[:2000]))

    t_run = time.time()
    epoch_train_loop(vae, opt, x.shape[0], args, args.ckpt, "vae", lr, batch_step, end_epoch,
                     lr_floor=0.05)
    psnr = test_psnr(vae, xt)
    z = encode_all(vae, x)
    std = float(z.std())
    scale = 1.0 / std
    log("test PSNR (10k, [-1,1], data range 2) %.2f dB; train latent mean %.4f std %.4f -> latent_scale %.6f"
        % (psnr, float(z.mean()), std, scale))
    log("per-channel latent std", [round(float(v), 4) for v in z.transpose(0, 1).flatten(1).std(1)])
    atomic_save({"config": config, "model": vae.state_dict(), "latent_scale": scale,
                 "test_psnr": psnr, "params": count_params(vae), "args": vars(args)}, args.out)
    log("wrote", args.out, "(%.1f min this run)" % ((time.time() - t_run) / 60))


if __name__ == "__main__":
    main()
