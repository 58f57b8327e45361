#!/usr/bin/python3
"""Classifier accuracy and Frechet feature distance of benchmark restorations.

usage: /usr/bin/python3 scripts/bench_eval.py [--classifier models/fmnist-classifier.pt] RUN_DIR...

Each RUN_DIR is an `stsl-bench --task ... --out RUN_DIR` directory (clean.f32, restored.f32,
measured.f32: N x C x H x W float32 on [-1, 1]; items.csv: index,label,...; run.txt).  For each it
writes RUN_DIR/eval.txt with
  acc_restored   top-1 accuracy of the classifier on the restorations (labels of the test set)
  acc_clean      the same on the clean images (the ceiling)
  acc_measured   the same on the measurements (back-projected; the floor)
  fd_restored    Frechet distance between the classifier's penultimate features (features(x)) of
                 the restorations and of the clean images
  fd_measured    the same for the measurements
  n              number of images
  ae_psnr, ae_ssim  PSNR/SSIM of the autoencoder's reconstruction decode(encode(x)) of the clean
                 images (models/fmnist-vae.pt, when present): the ceiling of the latent solvers
  psnr_check, ssim_check  PSNR/SSIM of the restorations recomputed here (cross-check of stsl-bench)
The Frechet distance of N samples in 128 dimensions is biased upwards for small N (the covariance
estimate has rank <= N - 1): compare values only at equal N.

Needs Debian's python3-torch (the system interpreter /usr/bin/python3).
"""
import argparse
import os
import sys

try:
    import torch
except ImportError:  # pragma: no cover
    sys.exit("bench_eval.py: needs torch: run it with Debian's /usr/bin/python3 (python3-torch)")

from bench_common import read_kv  # noqa: E402
from stsl_metrics import psnr, ssim  # noqa: E402  (scripts/: the one PSNR/SSIM, as stsl-bench's)


def default_classifier():
    env = os.environ.get("STSL_MODEL_DIR")
    here = os.path.dirname(os.path.abspath(__file__))
    for d in ([env] if env else []) + [os.path.join(here, "..", "models")]:
        p = os.path.join(d, "fmnist-classifier.pt")
        if os.path.exists(p):
            return p
    return os.path.join(here, "..", "models", "fmnist-classifier.pt")


def frechet(a, b):
    """Frechet distance between Gaussians fitted to the rows of a and b (float64)."""
    a = a.double()
    b = b.double()
    mu1, mu2 = a.mean(0), b.mean(0)
    s1 = torch.cov(a.T) if a.shape[0] > 1 else torch.zeros(a.shape[1], a.shape[1], dtype=torch.float64)
    s2 = torch.cov(b.T) if b.shape[0] > 1 else torch.zeros(b.shape[1], b.shape[1], dtype=torch.float64)
    # tr sqrt(S1 S2) = tr sqrt(S1^1/2 S2 S1^1/2), the inner matrix symmetric PSD
    w, v = torch.linalg.eigh(s1)
    r1 = (v * w.clamp(min=0).sqrt()) @ v.T
    m = r1 @ s2 @ r1
    ev = torch.linalg.eigvalsh((m + m.T) / 2).clamp(min=0)
    return float(((mu1 - mu2) ** 2).sum() + torch.trace(s1) + torch.trace(s2) - 2 * ev.sqrt().sum())


def load(run, name, shape):
    n = int(shape[0])
    raw = open(os.path.join(run, name), "rb").read()
    t = torch.frombuffer(bytearray(raw), dtype=torch.float32)
    return t.reshape(n, *shape[1:]).clamp(-1, 1)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--classifier", default=default_classifier())
    ap.add_argument("--vae", default=os.path.join(os.path.dirname(default_classifier()), "fmnist-vae.pt"))
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("runs", nargs="+")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    if not os.path.exists(args.classifier):
        sys.exit("bench_eval.py: classifier %s not found (train it: issue 7, or pass --classifier)"
                 % args.classifier)
    clf = torch.jit.load(args.classifier, map_location="cpu").eval()
    vae = torch.jit.load(args.vae, map_location="cpu").eval() if os.path.exists(args.vae) else None
    for run in args.runs:
        meta = read_kv(os.path.join(run, "run.txt"))
        c, h, w = (int(v) for v in meta["shape"].split(","))
        n = int(meta["n"])
        labels = []
        with open(os.path.join(run, "items.csv")) as f:
            next(f)
            for line in f:
                labels.append(int(line.split(",")[1]))
        labels = torch.tensor(labels)
        with torch.no_grad():
            res = {}
            feats = {}
            for key in ("clean", "restored", "measured"):
                x = load(run, key + ".f32", (n, c, h, w))
                logits = clf(x)
                res["acc_" + key] = float((logits.argmax(1) == labels).float().mean())
                feats[key] = clf.features(x)
            res["fd_restored"] = frechet(feats["restored"], feats["clean"])
            res["fd_measured"] = frechet(feats["measured"], feats["clean"])
            clean = load(run, "clean.f32", (n, c, h, w))
            restored = load(run, "restored.f32", (n, c, h, w))
            res["psnr_check"] = psnr(restored, clean)
            res["ssim_check"] = ssim(restored, clean)
            if vae is not None:
                rec = vae.decode(vae.encode(clean))
                res["ae_psnr"] = psnr(rec, clean)
                res["ae_ssim"] = ssim(rec, clean)
        res["n"] = n
        with open(os.path.join(run, "eval.txt"), "w") as f:
            for k, v in res.items():
                f.write("%s = %s\n" % (k, v))
        print("%s: acc %.3f (clean %.3f, measured %.3f), FD %.3f (measured %.3f), n %d"
              % (run, res["acc_restored"], res["acc_clean"], res["acc_measured"],
                 res["fd_restored"], res["fd_measured"], n))


if __name__ == "__main__":
    main()
