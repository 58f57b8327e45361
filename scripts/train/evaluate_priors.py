#!/usr/bin/python3
"""Evaluate the exported Fashion-MNIST priors (models/*.pt, the TorchScript files the library
loads) by unconditional sampling.

- 50-step DDIM (eta = 0) on the training timesteps round(linspace(999, 0, 50)), from the pixel
  prior, and from the latent prior decoded through the VAE (D(z) = decode(z / latent_scale),
  latent_scale read from the VAE's stsl_meta.txt). No clipping of x0hat during sampling; final
  images are clamped to [-1, 1].
- Scores every sample set with the classifier (models/fmnist-classifier.pt): mean max-softmax
  confidence, and the Frechet distance between Gaussian fits of the 128-dim `features(x)` of the
  set and of the 10k test split. References: test split (first 5k vs last 5k), N train images,
  N VAE reconstructions of train images, N decodes of their latents plus 0.1 and 0.3 N(0,I)
  (the latent error a latent prior's figures correspond to), N Gaussian-noise images
  (clamp(N(0,1)) to [-1,1]).
- Writes docs/prior_samples_pixel.png and docs/prior_samples_latent.png (8x8 grids of the first
  64 samples, upscaled x2) and the table into models/README.md between the markers
  <!-- prior-eval:begin --> and <!-- prior-eval:end -->.

  /usr/bin/python3 scripts/train/evaluate_priors.py --n 1000 --threads 2
"""
import argparse
import json
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import numpy as np  # noqa: E402
import torch  # noqa: E402

from common import (REPO, MODELS_DIR, linear_schedule, load_fmnist, load_scripted, log,  # noqa: E402
                    record, seed_all)

BEGIN, END = "<!-- prior-eval:begin -->", "<!-- prior-eval:end -->"


def load_model(path):
    m, text = load_scripted(path)
    m.eval()
    return m, record.parse_record(text)


def ddim_timesteps(T, steps):
    return [int(v) for v in np.round(np.linspace(T - 1, 0, steps))]


@torch.no_grad()
def ddim_sample(unet, meta, n, steps=50, batch=250, seed=0, clip=False, budget_s=None):
    """DDIM (eta 0) from N(0, I); with budget_s, stops after the batch that exceeds the budget
    (so fewer than n samples may come back)."""
    t_start = time.time()
    T = int(meta["timesteps"])
    assert meta["schedule"] == "linear" and meta["prediction"] == "eps"
    _, abar = linear_schedule(T, float(meta["beta_start"]), float(meta["beta_end"]))
    abar = abar.double()
    shape = [int(s) for s in meta["sample_shape"].split(",")]
    g = torch.Generator().manual_seed(seed)
    ts = ddim_timesteps(T, steps)
    out = []
    for b0 in range(0, n, batch):
        nb = min(batch, n - b0)
        x = torch.randn([nb] + shape, generator=g, dtype=torch.float64)
        for i, t in enumerate(ts):
            a = abar[t]
            a_prev = abar[ts[i + 1]] if i + 1 < len(ts) else torch.tensor(1.0, dtype=torch.float64)
            eps = unet(x.float(), torch.full((nb,), float(t))).double()
            x0 = (x - (1 - a).sqrt() * eps) / a.sqrt()
            if clip:
                x0 = x0.clamp(-1, 1)
                eps = (x - a.sqrt() * x0) / (1 - a).sqrt()
            x = a_prev.sqrt() * x0 + (1 - a_prev).sqrt() * eps
        out.append(x.float())
        log("  sampled %d/%d" % (b0 + nb, n))
        if budget_s is not None and time.time() - t_start > budget_s and b0 + nb < n:
            log("  sampling time budget of %.0f s spent: stopping at %d samples" % (budget_s, b0 + nb))
            break
    return torch.cat(out)


@torch.no_grad()
def batched(fn, x, bs=500):
    return torch.cat([fn(x[i:i + bs]) for i in range(0, x.shape[0], bs)])


def gauss_fit(f):
    f = f.double().numpy()
    return f.mean(0), np.cov(f, rowvar=False)


def _sqrtm_psd(a):
    w, v = np.linalg.eigh((a + a.T) / 2)
    return (v * np.sqrt(np.clip(w, 0, None))) @ v.T


def frechet(fit1, fit2):
    (m1, s1), (m2, s2) = fit1, fit2
    r1 = _sqrtm_psd(s1)
    cross = _sqrtm_psd(r1 @ s2 @ r1)
    return float(((m1 - m2) ** 2).sum() + np.trace(s1) + np.trace(s2) - 2 * np.trace(cross))


def to_uint8(x):
    return ((x.clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8).numpy()


def write_grid(x, path, rows=8, cols=8, up=2, pad=2):
    from PIL import Image
    imgs = to_uint8(x[:rows * cols, 0])
    h, w = imgs.shape[1:]
    H, W = rows * (h + pad) + pad, cols * (w + pad) + pad
    canvas = np.full((H, W), 128, np.uint8)
    for k in range(min(len(imgs), rows * cols)):
        r, c = divmod(k, cols)
        canvas[pad + r * (h + pad): pad + r * (h + pad) + h, pad + c * (w + pad): pad + c * (w + pad) + w] = imgs[k]
    Image.fromarray(canvas, "L").resize((W * up, H * up), Image.NEAREST).save(path)
    log("wrote", path)


def main():
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--n", type=int, default=1000)
    p.add_argument("--steps", type=int, default=50)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--models", default=MODELS_DIR)
    p.add_argument("--docs", default=os.path.join(REPO, "docs"))
    p.add_argument("--readme", default=os.path.join(MODELS_DIR, "README.md"))
    p.add_argument("--only", default="pixel,latent")
    p.add_argument("--batch", type=int, default=100, help="sampling batch size")
    p.add_argument("--budget-min", type=float, default=None,
                   help="per prior: stop sampling after the batch that exceeds this many minutes")
    p.add_argument("--clip", action="store_true", help="clip x0hat to [-1,1] during DDIM")
    p.add_argument("--json", default=None, help="also write the numbers as JSON here")
    p.add_argument("--cache", default=os.path.join(os.path.dirname(os.path.abspath(__file__)), "ckpt",
                                                   "eval_cache.json"),
                   help="prior rows are stored here; a prior left out by --only is reported from it")
    p.add_argument("--only-cached", default="pixel,latent",
                   help="priors that may be reported from --cache when left out by --only")
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    seed_all(args.seed)
    t_all = time.time()
    cls, _ = load_model(os.path.join(args.models, "fmnist-classifier.pt"))
    xt, yt = load_fmnist("test")
    xtr, _ = load_fmnist("train")
    n = args.n

    def score(x):
        logits = batched(cls.forward, x)
        conf = float(torch.softmax(logits, 1).max(1).values.mean())
        feats = batched(cls.features, x)
        return conf, logits.argmax(1), feats

    acc_logits = batched(cls.forward, xt)
    test_acc = float((acc_logits.argmax(1) == yt).float().mean())
    conf_t, _, f_test = score(xt)
    fit_test = gauss_fit(f_test)
    rows = []
    rows.append(("Test split (10k, classifier accuracy %.2f%%)" % (100 * test_acc), 10000, conf_t, None,
                 "reference"))
    f_a, f_b = gauss_fit(f_test[:5000]), gauss_fit(f_test[5000:])
    rows.append(("Test first 5k vs test last 5k", 5000, conf_t, frechet(f_a, f_b), "reference"))
    g = torch.Generator().manual_seed(123)
    idx = torch.randperm(xtr.shape[0], generator=g)[:n]
    c, _, f = score(xtr[idx])
    rows.append(("%d random train images" % n, n, c, frechet(gauss_fit(f), fit_test), "reference"))
    noise = torch.randn(n, 1, 28, 28, generator=g).clamp(-1, 1)
    c, _, f = score(noise)
    rows.append(("Gaussian noise clamp(N(0,1))", n, c, frechet(gauss_fit(f), fit_test), "reference"))

    results = {"test_acc": test_acc}
    vae = None
    if os.path.isfile(os.path.join(args.models, "fmnist-vae.pt")):
        vae, vmeta = load_model(os.path.join(args.models, "fmnist-vae.pt"))
        scale = float(vmeta["latent_scale"])
        z = batched(vae.encode, xtr[idx])  # encoded once, for both kinds of reference rows
        rec = batched(vae.decode, z).clamp(-1, 1)
        c, _, f = score(rec)
        rows.append(("VAE reconstructions of the %d train images" % n, n, c,
                     frechet(gauss_fit(f), fit_test), "reference (latent ceiling)"))
        # How precise must a latent prior be? Decode real latents E(x) (unit std) after adding
        # sigma * N(0, I): the row whose figures match the latent prior's says how far off it is.
        for sigma in (0.1, 0.3):
            zn = z * scale + sigma * torch.randn(z.shape, generator=g)  # E(x) + sigma N(0, I)
            c, _, f = score(batched(lambda b: vae.decode(b / scale), zn).clamp(-1, 1))
            rows.append(("VAE decodes of those latents E(x) + %.1f N(0,I)" % sigma, n, c,
                         frechet(gauss_fit(f), fit_test), "reference (latent error)"))

    hist = {}
    if "pixel" in args.only:
        t0 = time.time()
        unet, meta = load_model(os.path.join(args.models, "fmnist-ddpm.pt"))
        log("pixel prior: DDIM %d steps, n=%d" % (args.steps, n))
        x = ddim_sample(unet, meta, n, args.steps, batch=args.batch, seed=args.seed, clip=args.clip,
                        budget_s=None if args.budget_min is None else 60 * args.budget_min).clamp(-1, 1)
        dt = time.time() - t0
        c, pred, f = score(x)
        fd = frechet(gauss_fit(f), fit_test)
        hist["pixel"] = torch.bincount(pred, minlength=10).tolist()
        rows.append(("Pixel DDPM (fmnist-ddpm.pt), DDIM %d" % args.steps, x.shape[0], c, fd, "sampling %.0f s" % dt))
        write_grid(x, os.path.join(args.docs, "prior_samples_pixel.png"))
        results["pixel"] = {"conf": c, "fd": fd, "seconds": dt, "class_hist": hist["pixel"],
                            "mean": float(x.mean()), "std": float(x.std())}
    if "latent" in args.only:
        t0 = time.time()
        unet, meta = load_model(os.path.join(args.models, "fmnist-ldm.pt"))
        assert meta["pairs_with"] == "fmnist-vae.pt"
        log("latent prior: DDIM %d steps, n=%d, latent_scale %g" % (args.steps, n, scale))
        z = ddim_sample(unet, meta, n, args.steps, batch=args.batch, seed=args.seed,
                        budget_s=None if args.budget_min is None else 60 * args.budget_min)
        x = batched(lambda b: vae.decode(b / scale), z).clamp(-1, 1)
        dt = time.time() - t0
        c, pred, f = score(x)
        fd = frechet(gauss_fit(f), fit_test)
        hist["latent"] = torch.bincount(pred, minlength=10).tolist()
        rows.append(("Latent DDPM (fmnist-ldm.pt + fmnist-vae.pt), DDIM %d" % args.steps, x.shape[0], c, fd,
                     "sampling + decoding %.0f s" % dt))
        write_grid(x, os.path.join(args.docs, "prior_samples_latent.png"))
        results["latent"] = {"conf": c, "fd": fd, "seconds": dt, "class_hist": hist["latent"],
                             "z_std": float(z.std())}

    cache = {}
    if args.cache and os.path.isfile(args.cache):
        with open(args.cache) as fh:
            cache = json.load(fh)
    for key in ("pixel", "latent"):
        if key in results:
            cache[key] = {"row": [r for r in rows if r[0].startswith("Pixel" if key == "pixel" else "Latent")][0],
                          "hist": hist[key], "n": n, "results": results[key],
                          "when": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())}
        elif key in cache and key in args.only_cached:
            rows.append(tuple(cache[key]["row"]))
            hist[key] = cache[key]["hist"]
            results[key] = cache[key]["results"]
            log("%s prior: reported from %s (%s)" % (key, args.cache, cache[key]["when"]))
    if args.cache:
        os.makedirs(os.path.dirname(args.cache), exist_ok=True)
        with open(args.cache, "w") as fh:
            json.dump(cache, fh, indent=1)

    lines = [BEGIN, "",
             "Measured by `/usr/bin/python3 scripts/train/evaluate_priors.py --n %d --threads %d` "
             "(%s, %d threads, total %.0f s). Confidence = mean max-softmax of the classifier; "
             "Frechet = Frechet distance between Gaussian fits of the classifier's 128-dim features of "
             "the set and of the 10k test split (lower is better; it grows as N shrinks, so compare "
             "rows with the same N). DDIM: %d steps, eta 0, no clipping%s."
             % (n, args.threads, time.strftime("%Y-%m-%d", time.gmtime()), args.threads,
                time.time() - t_all, args.steps, " (x0 clipped)" if args.clip else ""), "",
             "| set | N | confidence | Frechet vs test | note |", "|---|---|---|---|---|"]
    for name, nn_, c, fd, note in rows:
        lines.append("| %s | %d | %.3f | %s | %s |" % (name, nn_, c, "-" if fd is None else "%.2f" % fd, note))
    for k, v in hist.items():
        lines.append("")
        lines.append("Predicted classes of the %s samples (T-shirt, Trouser, Pullover, Dress, Coat, Sandal, "
                     "Shirt, Sneaker, Bag, Ankle boot): %s" % (k, ", ".join(str(c) for c in v)))
    lines += ["", END]
    table = "\n".join(lines)
    print(table)
    if args.readme:
        old = open(args.readme).read() if os.path.isfile(args.readme) else "# Models\n\n"
        if BEGIN in old and END in old:
            new = old[:old.index(BEGIN)] + table + old[old.index(END) + len(END):]
        else:
            new = old.rstrip("\n") + "\n\n" + table + "\n"
        with open(args.readme + ".tmp", "w") as fh:
            fh.write(new)
        os.replace(args.readme + ".tmp", args.readme)
        log("updated", args.readme)
    results["rows"] = rows
    if args.json:
        with open(args.json, "w") as fh:
            json.dump(results, fh, indent=1)


if __name__ == "__main__":
    main()
