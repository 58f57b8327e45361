#!/usr/bin/python3
"""Train the small CNN classifier on Fashion-MNIST (input [-1,1], 1x28x28), used to score
prior samples (confidence) and as the feature extractor of the Frechet distance
(features(x): 128-dim penultimate ReLU features). CPU only.

  /usr/bin/python3 scripts/train/train_classifier.py --epochs 8 --threads 2
"""
import math
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402

from common import (CKPT_DIR, atomic_save, base_parser, count_params, load_checkpoint,  # noqa: E402
                    load_fmnist, log, past_deadline, seed_all, setup_threads)
from nets import Classifier  # noqa: E402

CONFIG = dict(nclass=10, feat=128)


def augment(x):
    """random horizontal flip and random shift by up to 2 pixels (padding with -1)."""
    n = x.shape[0]
    m = torch.rand(n) < 0.5
    x = torch.where(m[:, None, None, None], x.flip(3), x)
    xp = F.pad(x, (2, 2, 2, 2), value=-1.0)
    dx, dy = torch.randint(0, 5, (2,)).tolist()
    return xp[:, :, dy:dy + 28, dx:dx + 28]


@torch.no_grad()
def accuracy(model, x, y):
    model.eval()
    correct = 0
    for i in range(0, x.shape[0], 1000):
        correct += int((model(x[i:i + 1000]).argmax(1) == y[i:i + 1000]).sum())
    return correct / x.shape[0]


def main():
    p = base_parser(__doc__, epochs=8, out=os.path.join(CKPT_DIR, "classifier-final.pt"))
    p.add_argument("--ckpt", default=os.path.join(CKPT_DIR, "classifier.ckpt"))
    args = p.parse_args()
    setup_threads(args.threads)
    seed_all(args.seed)
    x, y = load_fmnist("train", args.limit)
    xt, yt = load_fmnist("test")
    model = Classifier(**CONFIG)
    log("Classifier params", count_params(model))
    lr = args.lr or 2e-3
    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=5e-4)
    start, step = 0, 0
    ck = load_checkpoint(args.ckpt)
    if ck is not None:
        model.load_state_dict(ck["model"])
        opt.load_state_dict(ck["opt"])
        start, step = ck["epoch"], ck["step"]
    n, B = x.shape[0], args.batch
    nb = n // B
    total = args.epochs * nb
    t_run = time.time()
    for epoch in range(start, args.epochs):
        t0 = time.time()
        model.train()
        perm = torch.randperm(n)
        tot = 0.0
        for i in range(nb):
            idx = perm[i * B:(i + 1) * B]
            cur = lr * 0.5 * (1 + math.cos(math.pi * step / total))
            for g in opt.param_groups:
                g["lr"] = cur
            loss = F.cross_entropy(model(augment(x[idx])), y[idx], label_smoothing=0.05)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            step += 1
            tot += loss.item()
        acc = accuracy(model, xt, yt)
        dt = time.time() - t0
        log("classifier epoch %d/%d loss %.4f test acc %.4f  %.1fs/epoch" % (epoch + 1, args.epochs, tot / nb, acc, dt))
        atomic_save({"model": model.state_dict(), "opt": opt.state_dict(), "epoch": epoch + 1,
                     "step": step, "args": vars(args)}, args.ckpt)
        if past_deadline(args, dt):
            log("deadline reached")
            break
    acc = accuracy(model, xt, yt)
    log("final test accuracy %.4f (%.1f min this run)" % (acc, (time.time() - t_run) / 60))
    atomic_save({"config": CONFIG, "model": model.state_dict(), "test_acc": acc,
                 "params": count_params(model), "args": vars(args)}, args.out)
    log("wrote", args.out)


if __name__ == "__main__":
    main()
