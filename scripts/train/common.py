"""Shared helpers for the libstsl training scripts (CPU, Debian's torch 1.13).

- Fashion-MNIST IDX loader reading Debian's `dataset-fashion-mnist` package
  (files found with `dpkg -L`, gzipped or not), images as float32 in [-1, 1]
  (0 -> -1, 255 -> 1), native 28x28, shape N x 1 x 28 x 28.
- Seeding, atomic checkpoint save / resume, progress logging to stderr.
- The DDPM linear schedule shared by the two diffusion trainings.

Run every script with /usr/bin/python3 (Debian's interpreter, which has torch).
"""
import argparse
import gzip
import math
import os
import random
import re
import struct
import subprocess
import sys
import time

import numpy as np
import torch

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.abspath(os.path.join(HERE, "..", ".."))
CKPT_DIR = os.path.join(HERE, "ckpt")
MODELS_DIR = os.path.join(REPO, "models")

FMNIST_CLASSES = ["T-shirt/top", "Trouser", "Pullover", "Dress", "Coat",
                  "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot"]

_T0 = time.time()


def log(*args):
    """Progress line on stderr, prefixed with UTC time and elapsed seconds."""
    stamp = time.strftime("%H:%M:%S", time.gmtime())
    msg = " ".join(str(a) for a in args)
    sys.stderr.write("[%s +%6.0fs] %s\n" % (stamp, time.time() - _T0, msg))
    sys.stderr.flush()


# ---------------------------------------------------------------- data

def _fmnist_files():
    """Map 'train-images' etc. to the IDX files in $STSL_FMNIST_DIR (a copy, e.g. on a GPU machine),
    else to the paths listed by `dpkg -L dataset-fashion-mnist`."""
    paths = []
    env_dir = os.environ.get("STSL_FMNIST_DIR")
    if env_dir:
        paths = [os.path.join(env_dir, f) for f in os.listdir(env_dir) if "idx" in f]
    else:
        try:
            out = subprocess.run(["dpkg", "-L", "dataset-fashion-mnist"], check=True,
                                 capture_output=True, text=True).stdout
            paths = [p.strip() for p in out.splitlines() if "idx" in os.path.basename(p)]
        except (OSError, subprocess.CalledProcessError):
            pass
    if not paths:  # fall back to the usual Debian location
        d = "/usr/share/datasets/fashion-mnist"
        if os.path.isdir(d):
            paths = [os.path.join(d, f) for f in os.listdir(d) if "idx" in f]
    found = {}
    for p in paths:
        b = os.path.basename(p)
        for key in ("train-images", "train-labels", "t10k-images", "t10k-labels"):
            if b.startswith(key) and os.path.isfile(p):
                found[key] = p
    missing = [k for k in ("train-images", "train-labels", "t10k-images", "t10k-labels")
               if k not in found]
    if missing:
        raise RuntimeError("Fashion-MNIST IDX files not found (%s); "
                           "apt-get install dataset-fashion-mnist" % ", ".join(missing))
    return found


def read_idx(path):
    """Read an IDX file (optionally gzipped) into a numpy array."""
    opener = gzip.open if path.endswith(".gz") else open
    with opener(path, "rb") as f:
        data = f.read()
    zero, dtype_code, ndim = struct.unpack(">HBB", data[:4])
    if zero != 0 or dtype_code != 0x08:
        raise ValueError("%s: not an unsigned-byte IDX file" % path)
    dims = struct.unpack(">" + "I" * ndim, data[4:4 + 4 * ndim])
    arr = np.frombuffer(data, dtype=np.uint8, offset=4 + 4 * ndim)
    if arr.size != int(np.prod(dims)):
        raise ValueError("%s: size mismatch" % path)
    return arr.reshape(dims)


def load_fmnist_uint8(split):
    """(images uint8 N x 28 x 28, labels int64 N) for split 'train' or 'test'."""
    files = _fmnist_files()
    pre = "train" if split == "train" else "t10k"
    x = read_idx(files[pre + "-images"])
    y = read_idx(files[pre + "-labels"]).astype(np.int64)
    return x, y


def to_pm1(x_uint8):
    """uint8 images -> float32 tensor N x 1 x H x W in [-1, 1] (0 -> -1, 255 -> 1)."""
    x = torch.from_numpy(np.array(x_uint8, dtype=np.float32))
    return (x / 127.5 - 1.0).unsqueeze(1).contiguous()


def load_fmnist(split, limit=None):
    """(images float32 N x 1 x 28 x 28 in [-1,1], labels int64 tensor N)."""
    x, y = load_fmnist_uint8(split)
    if limit:
        x, y = x[:limit], y[:limit]
    return to_pm1(x), torch.from_numpy(y.copy())


# ---------------------------------------------------------------- misc

def seed_all(seed):
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def base_parser(desc, epochs, out):
    p = argparse.ArgumentParser(description=desc)
    p.add_argument("--epochs", type=int, default=epochs)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--out", default=out, help="checkpoint / output path")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--batch", type=int, default=128)
    p.add_argument("--lr", type=float, default=None)
    p.add_argument("--limit", type=int, default=None, help="use only N training images (smoke test)")
    p.add_argument("--max-minutes", type=float, default=None,
                   help="stop after the epoch during which this wall time is exceeded")
    p.add_argument("--deadline", default=None,
                   help="UTC HH:MM; stop (after saving) when the next epoch would end after it "
                        "(diffusion trainings: stop, with a checkpoint, at the deadline itself)")
    p.add_argument("--ema-reset", type=int, default=0,
                   help="diffusion trainings: on resume, restart the EMA from the current weights")
    p.add_argument("--lr-schedule", default="steps", choices=["steps", "deadline"],
                   help="diffusion trainings: cosine LR decay over the planned steps, or over the "
                        "wall time until --deadline")
    p.add_argument("--init", default=None,
                   help="start from these weights (an exported TorchScript file or a *-ema.pt / final "
                        "file) instead of random ones; ignored when --ckpt exists (resume wins)")
    p.add_argument("--device", default="cpu",
                   help="diffusion trainings: torch device (cuda on a GPU machine); checkpoints and "
                        "outputs hold CPU tensors in torch's legacy format, which torch 1.13 loads")
    p.add_argument("--init-steps", type=int, default=0,
                   help="diffusion trainings: training steps behind the --init weights, added to this "
                        "run's steps in the count written to --out (export_models states it); "
                        "default: what the --init file states")
    return p


# The metadata record of every exported file: written and read by scripts/stsl_export/meta.py
# alone (the library's grammar).
sys.path.insert(0, os.path.dirname(HERE))
from stsl_export import meta as record  # noqa: E402

load_scripted = record.load_module   # (module on the CPU, record text) of an exported file


STEPS_NOTE = "(%s training steps)"  # how an export's record comment states the steps behind it


def recorded_steps(d):
    """The training steps a weights file (a dict) records: "steps" in a training output, "step" in
    a checkpoint; 0 when it says nothing."""
    return d.get("steps") or d.get("step") or 0


def init_from(model, args):
    """Load starting weights (args.init) into model: a TorchScript export (models/*.pt, whose
    state_dict has the eager module's keys) or a training output holding "ema" or "model". Used to
    continue a finished stage from committed weights when its training checkpoint is gone. Unless
    --init-steps says otherwise, the steps behind those weights are what the file states: a training
    output's (recorded_steps), an export's record comment (STEPS_NOTE, which export_models writes)."""
    if not args.init:
        return
    try:
        module, record = load_scripted(args.init)
        sd = module.state_dict()
        found = re.search(re.escape(STEPS_NOTE).replace("%s", r"(\d+)"), record)
        steps = int(found.group(1)) if found else 0
    except (RuntimeError, ValueError):
        d = load_file(args.init)
        sd = d["ema"] if "ema" in d else d["model"]
        steps = int(recorded_steps(d))
    model.load_state_dict(sd)
    if not args.init_steps:
        args.init_steps = steps
    log("initial weights from", args.init, "after", args.init_steps, "training steps")


def past_deadline(args, epoch_seconds):
    """True when another epoch of epoch_seconds would end after args.deadline (UTC HH:MM today)."""
    if not getattr(args, "deadline", None):
        return False
    hh, mm = [int(v) for v in args.deadline.split(":")]
    now = time.gmtime()
    now_s = now.tm_hour * 3600 + now.tm_min * 60 + now.tm_sec
    return now_s + epoch_seconds > hh * 3600 + mm * 60


def setup_threads(n):
    torch.set_num_threads(int(n))
    log("torch", torch.__version__, "threads", torch.get_num_threads())


def _to_cpu(obj):
    if torch.is_tensor(obj):
        return obj.detach().cpu()
    if isinstance(obj, dict):
        return {k: _to_cpu(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return type(obj)(_to_cpu(v) for v in obj)
    return obj


def atomic_save(obj, path):
    """CPU tensors, torch's legacy (non-zip) format: what a GPU machine's torch 2.x writes, the
    development machine's torch 1.13 reads."""
    d = os.path.dirname(os.path.abspath(path))
    os.makedirs(d, exist_ok=True)
    tmp = path + ".tmp%d" % os.getpid()
    torch.save(_to_cpu(obj), tmp, _use_new_zipfile_serialization=False)
    os.replace(tmp, path)


def load_file(path):
    """torch.load onto the CPU of our own files (dicts of config, weights, numbers), under torch
    1.13 and under torch >= 2.6, whose default would refuse their argparse records."""
    try:
        return torch.load(path, map_location="cpu", weights_only=False)
    except TypeError:  # a torch without the weights_only argument
        return torch.load(path, map_location="cpu")


def load_checkpoint(path):
    if path and os.path.isfile(path):
        log("resuming from", path)
        return load_file(path)
    return None


def epoch_train_loop(model, opt, n, args, ckpt_path, name, lr, batch_step, end_epoch, lr_floor=0.0):
    """The resumable epoch loop of the classifier and the autoencoder: resume from ckpt_path, then
    per epoch n // args.batch batches of a random permutation of range(n), the learning rate
    following a cosine from lr down to lr_floor * lr over all the planned steps; a checkpoint after
    each epoch; stop early when another epoch would pass args.deadline.
    batch_step(idx, epoch, i, nb) trains on the indices idx (batch i of nb) and returns a tuple of
    losses; end_epoch(mean_losses) evaluates and returns the rest of the epoch's log line."""
    start, step = 0, 0
    ck = load_checkpoint(ckpt_path)
    if ck is not None:
        model.load_state_dict(ck["model"])
        opt.load_state_dict(ck["opt"])
        start, step = ck["epoch"], ck["step"]
    B = args.batch
    nb = n // B
    total = args.epochs * nb
    for epoch in range(start, args.epochs):
        t0 = time.time()
        model.train()
        perm = torch.randperm(n)
        sums = None
        for i in range(nb):
            cur = lr * (lr_floor + (1.0 - lr_floor) * 0.5 * (1 + math.cos(math.pi * step / total)))
            for g in opt.param_groups:
                g["lr"] = cur
            losses = batch_step(perm[i * B:(i + 1) * B], epoch, i, nb)
            step += 1
            sums = list(losses) if sums is None else [a + b for a, b in zip(sums, losses)]
        text = end_epoch([v / nb for v in sums])
        dt = time.time() - t0
        log("%s epoch %d/%d %s  %.1fs/epoch" % (name, epoch + 1, args.epochs, text, dt))
        atomic_save({"model": model.state_dict(), "opt": opt.state_dict(), "epoch": epoch + 1,
                     "step": step, "args": vars(args)}, ckpt_path)
        if past_deadline(args, dt):
            log("deadline reached")
            break


def count_params(m):
    return sum(p.numel() for p in m.parameters())


class EMA:
    """Exponential moving average of a module's parameters and buffers, with the usual warm-up
    decay_eff = min(decay, (1 + n) / (10 + n)) over the n updates since the EMA (re)started, so
    that the random initial weights do not linger in the average of a short run."""

    def __init__(self, model, decay=0.999):
        self.decay = decay
        self.num_updates = 0
        self.shadow = {k: v.detach().clone() for k, v in model.state_dict().items()}

    @torch.no_grad()
    def update(self, model):
        self.num_updates += 1
        n = self.num_updates
        d = min(self.decay, (1.0 + n) / (10.0 + n))
        for k, v in model.state_dict().items():
            if v.dtype.is_floating_point:
                self.shadow[k].mul_(d).add_(v.detach(), alpha=1 - d)
            else:
                self.shadow[k].copy_(v)

    def state_dict(self):
        return self.shadow

    def load_state_dict(self, sd, num_updates=10 ** 9):
        self.shadow = {k: v.clone().to(self.shadow[k].device) for k, v in sd.items()}
        self.num_updates = num_updates


# ---------------------------------------------------------------- diffusion

TIMESTEPS = 1000
BETA_START = 1e-4
BETA_END = 0.02


def linear_schedule(T=TIMESTEPS, b0=BETA_START, b1=BETA_END):
    """betas and alpha-bar (float64 -> float32) of the linear schedule, as in DDPM."""
    betas = torch.linspace(b0, b1, T, dtype=torch.float64)
    abar = torch.cumprod(1.0 - betas, dim=0)
    return betas.float(), abar.float()


def deadline_timestamp(args):
    """Unix time of args.deadline (UTC HH:MM today), or None."""
    if not getattr(args, "deadline", None):
        return None
    hh, mm = [int(v) for v in args.deadline.split(":")]
    now = time.time()
    g = time.gmtime(now)
    return now - (g.tm_hour * 3600 + g.tm_min * 60 + g.tm_sec) + hh * 3600 + mm * 60


class StopFlag:
    """Set by SIGTERM / SIGINT; training loops save a mid-epoch checkpoint and exit cleanly."""

    def __init__(self):
        import signal
        self.stop = False
        for sig in (signal.SIGTERM, signal.SIGINT):
            signal.signal(sig, self._handler)

    def _handler(self, signum, frame):
        log("signal %d: will checkpoint and stop after this batch" % signum)
        self.stop = True


def diffusion_train_loop(model, data, args, ckpt_path, name, lr_default, flip=False):
    """Generic eps-prediction DDPM training loop with EMA, checkpoint each epoch, resume.

    data: float32 tensor N x C x H x W (the x_0 samples).
    LR: 500-step linear warm-up, then cosine decay to 10%%; the decay runs over the planned
    steps (--epochs), or with --lr-schedule deadline over the wall time from this run's start
    to --deadline (robust to an unknown, shared CPU budget). SIGTERM saves a mid-epoch
    checkpoint (resumed at the same batch position).
    Returns (model, ema, step): EMA weights in ema.state_dict(), step = optimizer steps of this
    checkpoint's run (resumes included).
    """
    lr = args.lr or lr_default
    dev = torch.device(getattr(args, "device", "cpu"))
    model.to(dev)
    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=0.0)
    ema = EMA(model, 0.999)
    _, abar = linear_schedule()
    abar = abar.to(dev)
    start_epoch, step, start_batch = 0, 0, 0
    ck = load_checkpoint(ckpt_path)
    if ck is not None:
        model.load_state_dict(ck["model"])
        opt.load_state_dict(ck["opt"])  # moves the moments onto the parameters' device
        if getattr(args, "ema_reset", 0):
            ema = EMA(model, 0.999)
            log("EMA restarted from the current weights (with warm-up)")
        else:
            # checkpoints written before the warm-up existed carry no count: treat as warmed up
            ema.load_state_dict(ck["ema"], ck.get("ema_updates", 10 ** 9))
        start_epoch, step = ck["epoch"], ck["step"]
        start_batch = ck.get("batch_in_epoch", 0)
        if not getattr(args, "init_steps", 0):  # the run that started from --init said how many
            args.init_steps = ck.get("args", {}).get("init_steps", 0) or 0
        log("resumed at epoch %d batch %d step %d" % (start_epoch, start_batch, step))
    flag = StopFlag()
    n = data.shape[0]
    B = args.batch
    nb = n // B
    total_steps = max(1, args.epochs * nb)
    warm = 500
    t_start = time.time()
    dl = deadline_timestamp(args)
    time_sched = getattr(args, "lr_schedule", "steps") == "deadline" and dl is not None
    for epoch in range(start_epoch, args.epochs):
        t_ep = time.time()
        model.train()
        perm = torch.randperm(n)
        tot = 0.0
        first = start_batch if epoch == start_epoch else 0
        nrun = 0
        for i in range(first, nb):
            idx = perm[i * B:(i + 1) * B]
            x0 = data[idx].to(dev)
            if flip:
                m = torch.rand(B) < 0.5
                x0 = torch.where(m[:, None, None, None].to(dev), x0.flip(3), x0)
            t = torch.randint(0, TIMESTEPS, (B,))
            eps = torch.randn(x0.shape).to(dev)  # drawn on the CPU: one stream for every device
            t = t.to(dev)
            a = abar[t].view(B, 1, 1, 1)
            xt = a.sqrt() * x0 + (1 - a).sqrt() * eps
            pred = model(xt, t.float())
            loss = torch.nn.functional.mse_loss(pred, eps)
            if step < warm:
                cur = lr * (step + 1) / warm
            elif time_sched:
                prog = min(1.0, (time.time() - t_start) / max(1.0, dl - t_start))
                cur = lr * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * prog)))
            else:
                prog = min(1.0, (step - warm) / max(1, total_steps - warm))
                cur = lr * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * prog)))
            for g in opt.param_groups:
                g["lr"] = cur
            opt.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            opt.step()
            ema.update(model)
            step += 1
            nrun += 1
            tot += loss.item()
            if i % 100 == 0:
                log("%s epoch %d batch %d/%d loss %.4f lr %.2e" % (name, epoch + 1, i, nb, loss.item(), cur))
            if flag.stop or (dl is not None and time.time() > dl):
                atomic_save({"model": model.state_dict(), "opt": opt.state_dict(), "ema": ema.state_dict(),
                             "ema_updates": ema.num_updates, "epoch": epoch, "batch_in_epoch": i + 1, "step": step, "args": vars(args)},
                            ckpt_path)
                log("%s: stopped in epoch %d at batch %d (step %d), checkpoint saved" % (name, epoch + 1, i + 1, step))
                return model, ema, step
        dt = time.time() - t_ep
        log("%s epoch %d/%d mean loss %.4f  %.1fs/epoch (%d batches, step %d)"
            % (name, epoch + 1, args.epochs, tot / max(1, nrun), dt, nrun, step))
        atomic_save({"model": model.state_dict(), "opt": opt.state_dict(), "ema": ema.state_dict(),
                     "ema_updates": ema.num_updates, "epoch": epoch + 1, "batch_in_epoch": 0, "step": step, "args": vars(args)}, ckpt_path)
        if args.max_minutes is not None and (time.time() - t_start) / 60 > args.max_minutes:
            log("%s: time budget of %.1f min reached after epoch %d" % (name, args.max_minutes, epoch + 1))
            break
    log("%s: training done, total %.1f min this run, %d steps in all" % (name, (time.time() - t_start) / 60, step))
    return model, ema, step
