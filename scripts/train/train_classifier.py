#!/usr/bin/python3
"""Train the small CNN classifier on Fashion-MNIST (input [-1,1], 1x28x28), used to score
prior samples (confidence) and as the feature extractor of the Frechet distance
(features(x): 128-dim penultimate ReLU features). CPU only.

  /usr/bin/python3 scripts/train/train_classifier.py --epochs 8 --threads 2
"""
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402

from common import (CKPT_DIR, atomic_save, base_parser, count_params, epoch_train_loop,  # noqa: E402
                    load_fmnist, log, seed_all, setup_threads)
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

    def batch_step(idx, epoch, i, nb):
        loss = F.cross_entropy(model(augment(x[idx])), y[idx], label_smoothing=0.05)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        return (loss.item(),)

    def end_epoch(mean):
        return "loss %.4f test acc %.4f" % (mean[0], accuracy(model, xt, yt))

    t_run = time.time()
    epoch_train_loop(model, opt, x.shape[0], args, args.ckpt, "classifier", lr, batch_step, end_epoch)
    acc = accuracy(model, xt, yt)
    log("final test accuracy %.4f (%.1f min this run)" % (acc, (time.time() - t_run) / 60))
    atomic_save({"config": CONFIG, "model": model.state_dict(), "test_acc": acc,
                 "params": count_params(model), "args": vars(args)}, args.out)
    log("wrote", args.out)


if __name__ == "__main__":
    main()
