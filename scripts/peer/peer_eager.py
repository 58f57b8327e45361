#!/usr/bin/python3
"""DPS and STSL written directly in PyTorch eager: the peer side of `make bench-peer`.

The same mathematics as the library's solvers (src/solvers/dps.c, src/solvers/stsl.c, conventions
in docs/algorithms.md), written the way a PyTorch user would: one forward pass under autograd and
one backward pass per gradient, torch.optim.Adam for STSL.  See docs/peer-bench.md.

Two sub-commands:

  prepare  --lib lib/libstsl.so --task T --n N --seed S --out DIR
           Drives the library through its public C API (ctypes): the measurements y of the first
           N test images exactly as `stsl-bench --task T --seed S` makes them (operator SEED = S,
           noise seed S + index), the operator's parameters, the library's solver defaults, and a
           check that the torch operator below equals the library's (forward, adjoint,
           back-projection).  Writes DIR/prep.json and DIR/y.f32.  Runs once per task, untimed.

  run      --prep DIR --solver dps|stsl --steps T --batch B --n N --threads K --seed S
           [--models models] [--csv FILE]
           Restores the first N images B at a time and appends one CSV row per image: PSNR
           (clipped to [0, 1], as stsl-bench), seconds per image (wall time of the solver call for
           the batch / batch size; model loading, data loading and process start are outside),
           and the network passes made (forwards under autograd, backwards, plain forwards).

Never imports libstsl into a `run` process: the timed process holds only torch.
"""
import argparse
import ctypes
import json
import math
import os
import sys
import time

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))
sys.path.insert(0, os.path.join(ROOT, "scripts"))
from stsl_metrics import psnr  # noqa: E402  (the one PSNR, as stsl-bench's)

# ---- public enum values of include/stsl.h (checked against the header by `prepare`) ----------
P_NOISE_SIGMA, P_SEED, P_KERNEL_SIZE, P_BLUR_SIGMA, P_BOUNDARY = 1, 2, 3, 4, 5
P_SR_FILTER, P_LOSS = 7, 14
P_STEPS, P_INNER, P_PROBES, P_ETA, P_LAMBDA, P_LR, P_DECAY, P_KAPPA, P_ZETA = (
    100, 101, 102, 103, 104, 105, 106, 107, 108)
P_INIT, P_SQUARED, P_INCLUSIVE, P_PERSIST = 115, 116, 117, 118
INIT_FRESH_NOISE = 1


def log(msg):
    print("peer_eager: " + msg, file=sys.stderr, flush=True)


def die(msg):
    log(msg)
    sys.exit(1)


# ---- data: the same images as stsl-bench's image mode ---------------------------------------

def read_indices(path, n):
    idx = []
    with open(path) as f:
        for line in f:
            s = line.strip()
            if s and not s.startswith("#"):
                idx.append(int(s))
    if len(idx) < n:
        die("%s has %d indices, %d asked" % (path, len(idx), n))
    return idx[:n]


def load_images(indices):
    """The test images at `indices` from where stsl-bench reads them ($STSL_FMNIST_DIR or Debian's
    dataset-fashion-mnist), N x 1 x H x W in [-1, 1]."""
    sys.path.insert(0, os.path.join(ROOT, "scripts", "train"))
    from common import read_idx
    d = os.environ.get("STSL_FMNIST_DIR") or "/usr/share/datasets/fashion-mnist"
    imgs = read_idx(os.path.join(d, "t10k-images-idx3-ubyte.gz"))
    rows, cols = imgs.shape[1], imgs.shape[2]
    # stsl-bench: v / 127.5 - 1 in float32
    x = imgs[indices].astype(np.float32) / np.float32(127.5) - np.float32(1.0)
    return x.reshape(len(indices), 1, rows, cols)


# ---- operator definitions (docs/operators.md, src/operators/) --------------------------------

def _cubic(x):
    a = abs(x)
    if a <= 1:
        return 1.5 * a ** 3 - 2.5 * a ** 2 + 1
    if a <= 2:
        return -0.5 * a ** 3 + 2.5 * a ** 2 - 4 * a + 2
    return 0.0


def _box(x):
    return 1.0 if -0.5 <= x < 0.5 else 0.0


def _mirror(p, n):
    q = p % (2 * n)
    return q if q < n else 2 * n - 1 - q


def resize_matrix(in_len, out_len, scale, bicubic):
    """Dense out_len x in_len matrix of the DPS reference's Resizer (MATLAB imresize port):
    Keys cubic a = -0.5 (or box), widened by 1/scale when downscaling, normalised per output,
    taps mirrored with edge repeat."""
    kern = _cubic if bicubic else _box
    kw = 4.0 if bicubic else 1.0
    antialias = scale < 1.0
    if antialias:
        kw /= scale
    taps = int(math.ceil(kw)) + 2
    m = np.zeros((out_len, in_len), dtype=np.float64)
    for i in range(out_len):
        match = (i + 1) / scale + 0.5 * (1.0 - 1.0 / scale)
        left = int(math.floor(match - kw / 2.0))
        w = []
        for k in range(taps):
            d = match - (left + k - 1) - 1
            w.append(scale * kern(scale * d) if antialias else kern(d))
        s = sum(w) or 1.0
        for k in range(taps):
            # the library stores float32 weights
            m[i, _mirror(left + k - 1, in_len)] += float(np.float32(w[k] / s))
    return m


class TorchOperator:
    """y = A x for the tasks the peer supports, in torch, differentiable by autograd."""

    def __init__(self, torch, prep):
        self.torch = torch
        self.kind = prep["kind"]
        F = torch.nn.functional
        self.F = F
        C, H, W = prep["shape"]
        if self.kind == "gaussian-blur":
            sg, ks = prep["blur_sigma"], prep["kernel_size"]
            r = min(ks // 2, int(4.0 * sg + 0.5))
            a = np.arange(-r, r + 1, dtype=np.float64)
            w = np.exp(-0.5 * a * a / (sg * sg))
            w = (w / w.sum()).astype(np.float32)
            k2 = torch.from_numpy(np.outer(w, w).astype(np.float32))
            self.r = r
            self.kernel = k2.expand(C, 1, 2 * r + 1, 2 * r + 1).contiguous()
            self.C = C
        elif self.kind in ("sr2", "sr4", "sr8"):
            f = prep["factor"]
            bic = prep["sr_filter"] == 0
            self.Rv = torch.from_numpy(resize_matrix(H, H // f, 1.0 / f, bic).astype(np.float32))
            self.Rh = torch.from_numpy(resize_matrix(W, W // f, 1.0 / f, bic).astype(np.float32))
            self.Uv = torch.from_numpy(resize_matrix(H // f, H, float(f), bic).astype(np.float32))
            self.Uh = torch.from_numpy(resize_matrix(W // f, W, float(f), bic).astype(np.float32))
        elif self.kind in ("random-inpaint", "box-inpaint"):
            self.mask = torch.from_numpy(np.asarray(prep["mask"], dtype=np.float32).reshape(1, 1, H, W))
        else:
            die("task %s has no torch operator in the peer (supported: gaussian-blur, sr2, sr4, "
                "sr8, random-inpaint, box-inpaint)" % self.kind)

    def forward(self, x):
        if self.kind == "gaussian-blur":
            # ReflectionPad2d + conv2d, as the DPS reference (cross-correlation, symmetric kernel)
            xp = self.F.pad(x, (self.r, self.r, self.r, self.r), mode="reflect")
            return self.F.conv2d(xp, self.kernel, groups=self.C)
        if self.kind.startswith("sr"):
            return self.Rv @ x @ self.Rh.t()
        return self.mask * x

    def adjoint(self, y, like):
        with self.torch.enable_grad():
            x = self.torch.zeros_like(like, requires_grad=True)
            (g,) = self.torch.autograd.grad(self.forward(x), x, grad_outputs=y)
        return g

    def backproject(self, y, like):
        """B y as the library: bicubic (or nearest) upscaling for SR, A^T y otherwise."""
        if self.kind.startswith("sr"):
            return self.Uv @ y @ self.Uh.t()
        return self.adjoint(y, like)


# ---- prepare: the library through ctypes ------------------------------------------------------

class Shape(ctypes.Structure):
    _fields_ = [("channels", ctypes.c_int32), ("height", ctypes.c_int32), ("width", ctypes.c_int32)]


def check_header_enums():
    """The enum values above must be the header's (a renumbered header would mis-set keys)."""
    import re
    hdr = open(os.path.join(ROOT, "include", "stsl.h")).read()
    want = {"STSL_PARAM_NOISE_SIGMA": P_NOISE_SIGMA, "STSL_PARAM_SEED": P_SEED,
            "STSL_PARAM_KERNEL_SIZE": P_KERNEL_SIZE, "STSL_PARAM_BLUR_SIGMA": P_BLUR_SIGMA,
            "STSL_PARAM_BOUNDARY": P_BOUNDARY, "STSL_PARAM_SR_FILTER": P_SR_FILTER,
            "STSL_PARAM_LOSS": P_LOSS, "STSL_PARAM_STEPS": P_STEPS,
            "STSL_PARAM_INNER_STEPS": P_INNER, "STSL_PARAM_PROBES": P_PROBES,
            "STSL_PARAM_ETA": P_ETA, "STSL_PARAM_LAMBDA": P_LAMBDA,
            "STSL_PARAM_LEARNING_RATE": P_LR, "STSL_PARAM_LR_DECAY": P_DECAY,
            "STSL_PARAM_KAPPA": P_KAPPA, "STSL_PARAM_ZETA": P_ZETA, "STSL_PARAM_INIT": P_INIT,
            "STSL_PARAM_SQUARED_LOSS": P_SQUARED, "STSL_PARAM_INNER_INCLUSIVE": P_INCLUSIVE,
            "STSL_PARAM_ADAM_PERSIST": P_PERSIST, "STSL_INIT_FRESH_NOISE": INIT_FRESH_NOISE}
    for name, v in want.items():
        m = re.search(r"\b%s\s*=\s*(\d+)" % name, hdr)
        if not m or int(m.group(1)) != v:
            die("include/stsl.h: %s is not %d; update scripts/peer/peer_eager.py" % (name, v))


def load_lib(path):
    L = ctypes.CDLL(path)
    vp, i64, dbl = ctypes.c_void_p, ctypes.c_int64, ctypes.c_double
    fp = ctypes.POINTER(ctypes.c_float)
    sig = {
        "stsl_version": (ctypes.c_char_p, []),
        "stsl_context_create": (ctypes.c_int, [ctypes.POINTER(vp)]),
        "stsl_context_destroy": (None, [vp]),
        "stsl_context_last_error": (ctypes.c_char_p, [vp]),
        "stsl_operator_create_by_name": (ctypes.c_int, [vp, ctypes.c_char_p, Shape, ctypes.POINTER(vp)]),
        "stsl_operator_destroy": (None, [vp]),
        "stsl_operator_set_int": (ctypes.c_int, [vp, ctypes.c_int, i64]),
        "stsl_operator_get_int": (ctypes.c_int, [vp, ctypes.c_int, ctypes.POINTER(i64)]),
        "stsl_operator_get_float": (ctypes.c_int, [vp, ctypes.c_int, ctypes.POINTER(dbl)]),
        "stsl_operator_output_shape": (ctypes.c_int, [vp, ctypes.POINTER(Shape)]),
        "stsl_operator_forward": (ctypes.c_int, [vp, fp, fp, ctypes.c_int]),
        "stsl_operator_adjoint": (ctypes.c_int, [vp, fp, fp, ctypes.c_int]),
        "stsl_operator_backproject": (ctypes.c_int, [vp, fp, fp, ctypes.c_int]),
        "stsl_operator_measure": (ctypes.c_int, [vp, fp, fp, ctypes.c_int, ctypes.c_uint64]),
        "stsl_operator_last_error": (ctypes.c_char_p, [vp]),
        "stsl_solver_create_by_name": (ctypes.c_int, [vp, ctypes.c_char_p, ctypes.POINTER(vp)]),
        "stsl_solver_destroy": (None, [vp]),
        "stsl_solver_get_int": (ctypes.c_int, [vp, ctypes.c_int, ctypes.POINTER(i64)]),
        "stsl_solver_get_float": (ctypes.c_int, [vp, ctypes.c_int, ctypes.POINTER(dbl)]),
    }
    for name, (res, args) in sig.items():
        f = getattr(L, name)
        f.restype, f.argtypes = res, args
    return L


def fptr(a):
    return a.ctypes.data_as(ctypes.POINTER(ctypes.c_float))


def solver_defaults(L, ctx, name, ints, floats):
    sv = ctypes.c_void_p()
    if L.stsl_solver_create_by_name(ctx, name.encode(), ctypes.byref(sv)) != 0:
        die("library: solver %s: %s" % (name, L.stsl_context_last_error(ctx).decode()))
    out = {}
    for k, key in ints.items():
        v = ctypes.c_int64()
        if L.stsl_solver_get_int(sv, key, ctypes.byref(v)) == 0:
            out[k] = int(v.value)
    for k, key in floats.items():
        v = ctypes.c_double()
        if L.stsl_solver_get_float(sv, key, ctypes.byref(v)) == 0:
            out[k] = float(v.value)
    L.stsl_solver_destroy(sv)
    return out


def cmd_prepare(a):
    import torch
    check_header_enums()
    L = load_lib(a.lib)
    ctx = ctypes.c_void_p()
    if L.stsl_context_create(ctypes.byref(ctx)) != 0:
        die("library: cannot create a context")
    idx = read_indices(a.indices, a.n)
    clean = load_images(idx)
    n, C, H, W = clean.shape
    op = ctypes.c_void_p()
    if L.stsl_operator_create_by_name(ctx, a.task.encode(), Shape(C, H, W), ctypes.byref(op)) != 0:
        die("library: task %s: %s" % (a.task, L.stsl_context_last_error(ctx).decode()))
    if L.stsl_operator_set_int(op, P_SEED, a.seed) != 0:
        die("library: operator seed: %s" % L.stsl_operator_last_error(op).decode())

    def gi(key):
        v = ctypes.c_int64()
        return int(v.value) if L.stsl_operator_get_int(op, key, ctypes.byref(v)) == 0 else None

    def gf(key):
        v = ctypes.c_double()
        return float(v.value) if L.stsl_operator_get_float(op, key, ctypes.byref(v)) == 0 else None

    ys = Shape()
    L.stsl_operator_output_shape(op, ctypes.byref(ys))
    prep = {"task": a.task, "kind": a.task, "shape": [C, H, W],
            "out_shape": [ys.channels, ys.height, ys.width], "seed": a.seed, "indices": idx,
            "noise_sigma": gf(P_NOISE_SIGMA), "loss": gi(P_LOSS),
            "library_version": L.stsl_version().decode(), "library": os.path.abspath(a.lib)}
    if prep["loss"] not in (None, 0):
        die("task %s: the library's loss is not squared; the peer implements Gaussian noise only" % a.task)
    if a.task == "gaussian-blur":
        prep.update(blur_sigma=gf(P_BLUR_SIGMA), kernel_size=gi(P_KERNEL_SIZE), boundary=gi(P_BOUNDARY))
        if prep["boundary"] != 0:
            die("gaussian-blur: the library's boundary is not reflect")
    elif a.task in ("sr2", "sr4", "sr8"):
        prep.update(factor=H // ys.height, sr_filter=gi(P_SR_FILTER))
    elif a.task in ("random-inpaint", "box-inpaint"):
        ones = np.ones((1, C, H, W), dtype=np.float32)
        m = np.zeros_like(ones)
        L.stsl_operator_forward(op, fptr(ones), fptr(m), 1)
        prep["mask"] = m[0, 0].reshape(-1).tolist()
    dy = ys.channels * ys.height * ys.width
    # y exactly as stsl-bench: one image at a time, noise seed = seed + index
    y = np.zeros((n, dy), dtype=np.float32)
    for i in range(n):
        xi = np.ascontiguousarray(clean[i])
        yi = np.zeros(dy, dtype=np.float32)
        if L.stsl_operator_measure(op, fptr(xi), fptr(yi), 1, a.seed + idx[i]) != 0:
            die("library: measure: %s" % L.stsl_operator_last_error(op).decode())
        y[i] = yi
    # the torch operator against the library's on the clean images and on y
    T = TorchOperator(torch, prep)
    xt = torch.from_numpy(clean)
    yt = torch.from_numpy(y.reshape(n, *prep["out_shape"]))
    lib_fwd = np.zeros((n, dy), dtype=np.float32)
    lib_adj = np.zeros((n, C * H * W), dtype=np.float32)
    lib_bp = np.zeros((n, C * H * W), dtype=np.float32)
    L.stsl_operator_forward(op, fptr(np.ascontiguousarray(clean)), fptr(lib_fwd), n)
    L.stsl_operator_adjoint(op, fptr(y), fptr(lib_adj), n)
    L.stsl_operator_backproject(op, fptr(y), fptr(lib_bp), n)
    t_fwd = T.forward(xt).detach().numpy().reshape(n, -1)
    t_adj = T.adjoint(yt, xt).detach().numpy().reshape(n, -1)
    t_bp = T.backproject(yt, xt).detach().numpy().reshape(n, -1)
    check = {"forward": float(np.abs(t_fwd - lib_fwd).max()),
             "adjoint": float(np.abs(t_adj - lib_adj).max()),
             "backproject": float(np.abs(t_bp - lib_bp).max())}
    prep["operator_max_abs_diff"] = check
    log("%s: torch operator vs library, max |diff|: forward %.2e, adjoint %.2e, back-projection %.2e"
        % (a.task, check["forward"], check["adjoint"], check["backproject"]))
    if max(check.values()) > 1e-4:
        die("%s: the torch operator differs from the library's (max |diff| > 1e-4)" % a.task)
    # solver defaults as the library has them
    prep["dps"] = solver_defaults(L, ctx, "dps", {"steps": P_STEPS}, {})
    prep["stsl"] = solver_defaults(
        L, ctx, "stsl",
        {"steps": P_STEPS, "K": P_INNER, "N": P_PROBES, "init": P_INIT, "squared": P_SQUARED,
         "inclusive": P_INCLUSIVE, "persist": P_PERSIST},
        {"eta": P_ETA, "lambda": P_LAMBDA, "lr": P_LR, "decay": P_DECAY, "kappa": P_KAPPA})
    # bench-peer runs the library with --step-rule adam: Adam's learning rate when unset is the
    # paper's 1e-2 (src/solvers/stsl.c), not the LEARNING_RATE table default of the scaled rule
    prep["stsl"]["lr"] = 1e-2
    L.stsl_operator_destroy(op)
    L.stsl_context_destroy(ctx)
    os.makedirs(a.out, exist_ok=True)
    y.tofile(os.path.join(a.out, "y.f32"))
    with open(os.path.join(a.out, "prep.json"), "w") as f:
        json.dump(prep, f, indent=1)
    return 0


# ---- models ------------------------------------------------------------------------------------

def read_meta(torch, path):
    """(torch.jit.load's module, parsed record) of a model file: scripts/stsl_export/meta.py."""
    sys.path.insert(0, os.path.join(ROOT, "scripts"))
    from stsl_export import meta as record
    js, text = record.load_module(path)
    return js, record.parse_record(text)


def eager_module(torch, path, cls, cfg):
    """The eager nn.Module of scripts/train/nets.py with the weights of the TorchScript file
    (its state_dict); torch.jit.load's module itself only if that does not load strictly."""
    js, meta = read_meta(torch, path)
    try:
        m = cls(**(cfg(meta) if callable(cfg) else cfg))
        m.load_state_dict(js.state_dict(), strict=True)
        kind = "eager"
    except Exception as e:  # a file whose architecture nets.py no longer describes
        log("%s: eager module failed (%s); using torch.jit.load" % (path, str(e).splitlines()[0]))
        m, kind = js, "torchscript"
    m.eval()
    for p in m.parameters():
        p.requires_grad_(False)
    return m, meta, kind


def alpha_bars(meta):
    if meta.get("schedule") != "linear":
        die("schedule %s: the peer implements the linear schedule only" % meta.get("schedule"))
    b0, b1, T = float(meta["beta_start"]), float(meta["beta_end"]), int(meta["timesteps"])
    ab, out = 1.0, []
    for i in range(T):
        ab *= 1.0 - (b0 + (b1 - b0) * (i / (T - 1) if T > 1 else 0.0))
        out.append(ab)
    return out


def ddim_seq(T_train, n):
    """stsl_schedule_ddim_steps: floor(i * T / n), ascending."""
    return [(i * T_train) // n for i in range(n)]


# ---- random numbers ----------------------------------------------------------------------------

TAG_INIT_NOISE, TAG_STEP_NOISE, TAG_PROBE = 5, 6, 7     # src/core/internal.h (append-only list)


class TorchNoise:
    """What an eager user writes: torch.randn from one seeded generator (the timed runs)."""

    def __init__(self, torch, seed, batch):
        self.torch, self.B = torch, batch
        self.gen = torch.Generator().manual_seed(seed)

    def normal(self, tag, a, b, shape):
        return self.torch.randn((self.B,) + tuple(shape), generator=self.gen)


def _splitmix64(x):
    M = (1 << 64) - 1
    x = (x + 0x9E3779B97F4A7C15) & M
    x = ((x ^ (x >> 30)) * 0xBF58476D1CE4E5B9) & M
    x = ((x ^ (x >> 27)) * 0x94D049BB133111EB) & M
    return x ^ (x >> 31)


def lib_stream(tag, a, b, c):
    """stsl__stream (src/core/rng.c)."""
    h = _splitmix64(tag)
    h = _splitmix64(h ^ a)
    h = _splitmix64(h ^ b)
    return _splitmix64(h ^ c)


class LibNoise:
    """The library's own draws (verification only): sample i of a run with seed s reads
    (s + i, stsl__stream(tag, 0, a, b)) through the public stsl_random_normal, as the solvers do
    (docs/algorithms.md, "Random numbers").  With it the eager solvers must reproduce the
    library's restorations up to float rounding."""

    def __init__(self, torch, lib, seed, batch):
        self.torch, self.B, self.seed = torch, batch, seed
        f = lib.stsl_random_normal
        f.restype = ctypes.c_int
        f.argtypes = [ctypes.c_void_p, ctypes.c_uint64, ctypes.c_uint64, ctypes.c_uint64,
                      ctypes.POINTER(ctypes.c_float), ctypes.c_size_t]
        self.f = f

    def normal(self, tag, a, b, shape):
        n = 1
        for v in shape:
            n *= v
        out = np.zeros((self.B, n), dtype=np.float32)
        st = lib_stream(tag, 0, a, b)
        for i in range(self.B):
            if self.f(None, self.seed + i, st, 0, fptr(out[i]), n) != 0:
                die("library: stsl_random_normal failed")
        return self.torch.from_numpy(out.reshape((self.B,) + tuple(shape)))


# ---- the solvers in eager PyTorch ---------------------------------------------------------------

class Counter:
    def __init__(self):
        self.graph_fwd = 0      # network forwards recorded for autograd (points)
        self.backward = 0       # backward passes through the network (points)
        self.plain_fwd = 0      # forwards without autograd (points)
        self.net_s = 0.0        # seconds inside network forwards and backward passes

    def timed(self, fn, *args):
        """fn(*args), its wall time added to net_s: the network's part of a restoration, which a
        library running the same kernels spends too, less eager's Python dispatch inside it."""
        t0 = time.perf_counter()
        out = fn(*args)
        self.net_s += time.perf_counter() - t0
        return out


def dps(torch, net, A, y, abar, steps, zeta, noise, shape, cnt):
    """Chung et al. Algorithm 1 as src/solvers/dps.c: DDPM ancestral step on the DDIM subsequence,
    then x <- x' - zeta grad_x ||y - A x0hat(x)|| (the per-sample norm), x0hat not clipped."""
    B = y.shape[0]
    seq = ddim_seq(len(abar), steps)
    x = noise.normal(TAG_INIT_NOISE, 0, 0, shape)
    for i in range(steps - 1, -1, -1):
        t = seq[i]
        ab, abp = abar[t], (abar[seq[i - 1]] if i > 0 else 1.0)
        alpha = ab / abp
        beta = 1.0 - alpha
        x = x.detach().requires_grad_(True)
        eps = cnt.timed(net, x, torch.full((B,), float(t)))
        cnt.graph_fwd += B
        x0 = (x - math.sqrt(1.0 - ab) * eps) / math.sqrt(ab)
        norm = torch.linalg.vector_norm((y - A.forward(x0)).reshape(B, -1), dim=1)
        (g,) = cnt.timed(torch.autograd.grad, norm.sum(), x)
        cnt.backward += B
        cz = math.sqrt(alpha) * (1.0 - abp) / (1.0 - ab)
        c0 = math.sqrt(abp) * beta / (1.0 - ab)
        sig = math.sqrt(beta * (1.0 - abp) / (1.0 - ab)) if i > 0 else 0.0
        with torch.no_grad():
            xn = cz * x + c0 * x0
            if sig > 0:
                xn = xn + sig * noise.normal(TAG_STEP_NOISE, i, 0, shape)
            x = xn - zeta * g
    return x.detach()


def stsl(torch, net, vae, scale, A, y, abar, steps, cfg, noise, zshape, like, cnt):
    """Rout et al. Algorithm 1 as src/solvers/stsl.c with the library's defaults: fresh-noise
    forward process from E(B y), K Adam passes per reverse step on
    lambda ||y - A D(zbar)||^2 + (eta/d) mean_n [e_n^T s(Z + e_n) - e_n^T s(Z)], the Z and Z + e_n
    points of every sample in one batched forward, then line 13 (zbar at the new Z) and line 14."""
    B = y.shape[0]
    K = cfg["K"] + (1 if cfg["inclusive"] else 0)
    eta, lam, lr, decay = cfg["eta"], cfg["lambda"], cfg["lr"], cfg["decay"]
    N = cfg["N"] if eta > 0 else 0
    squared = cfg["squared"]
    d = 1
    for s in zshape:
        d *= s
    seq = ddim_seq(len(abar), steps)
    dec = (lambda z: cnt.timed(vae.decode, z / scale)) if vae is not None else (lambda z: z)
    with torch.no_grad():
        xb = A.backproject(y, like)                                   # line 1: zf_0 = E(B y)
        zf = scale * cnt.timed(vae.encode, xb) if vae is not None else xb
        for k in range(1, steps + 1):                                 # lines 2-4, fresh noise
            abp = abar[seq[k - 2]] if k > 1 else 1.0
            alpha = abar[seq[k - 1]] / abp
            zf = math.sqrt(alpha) * zf + math.sqrt(1.0 - alpha) * noise.normal(TAG_INIT_NOISE, k, 0, zshape)
    Z = zf.clone().requires_grad_(True)                               # line 5
    opt = None
    for k in range(steps, 0, -1):                                     # lines 6-15
        t = seq[k - 1]
        ab, abp = abar[t], (abar[seq[k - 2]] if k > 1 else 1.0)
        alpha, sa, s1 = ab / abp, math.sqrt(ab), math.sqrt(1.0 - ab)
        if opt is None or not cfg["persist"]:
            opt = torch.optim.Adam([Z], lr=lr)                        # a new optimiser per step
        else:
            for gparam in opt.param_groups:
                gparam["lr"] = lr
        tt = torch.full((B * (N + 1),), float(t))
        for p in range(K):                                            # line 7
            e = noise.normal(TAG_PROBE, k, p, (N,) + tuple(zshape)) if N > 0 else None  # line 8
            pts = Z.unsqueeze(1) if N == 0 else torch.cat([Z.unsqueeze(1), Z.unsqueeze(1) + e], 1)
            eps = cnt.timed(net, pts.reshape((B * (N + 1),) + tuple(zshape)), tt)
            eps = eps.reshape((B, N + 1) + tuple(zshape))
            cnt.graph_fwd += B * (N + 1)
            zbar = (Z - s1 * eps[:, 0]) / sa                          # line 9 (Tweedie)
            r = (A.forward(dec(zbar)) - y).reshape(B, -1)
            l2 = (r * r).sum(1)
            loss = lam * (l2 if squared else torch.sqrt(l2)).sum()
            if N > 0:                                                 # Hutchinson term, s = -eps/s1
                s = -eps / s1
                ee = e.reshape(B, N, -1)
                hut = (ee * s[:, 1:].reshape(B, N, -1)).sum(2) - (ee * s[:, :1].reshape(B, 1, -1)).sum(2)
                loss = loss + (eta / d) * hut.mean(1).sum()
            opt.zero_grad(set_to_none=True)
            cnt.timed(loss.backward)                                  # lines 10-11
            cnt.backward += B * (N + 1)
            opt.step()
        with torch.no_grad():
            eps = cnt.timed(net, Z, torch.full((B,), float(t)))       # line 13
            cnt.plain_fwd += B
            zbar = (Z - s1 * eps) / sa
            cz = math.sqrt(alpha) * (1.0 - abp) / (1.0 - ab)
            cb = math.sqrt(abp) * (1.0 - alpha) / (1.0 - ab)
            Z.mul_(cz).add_(cb * zbar)                                # line 14
        lr *= decay
    with torch.no_grad():
        return dec(Z)                                                 # line 16


def cmd_run(a):
    import torch
    torch.set_num_threads(a.threads)
    try:
        torch.set_num_interop_threads(1)
    except RuntimeError:
        pass
    sys.path.insert(0, os.path.join(ROOT, "scripts", "train"))
    from nets import VAE, LatentNet, PixelUNet
    with open(os.path.join(a.prep, "prep.json")) as f:
        prep = json.load(f)
    n = a.n
    if n > len(prep["indices"]):
        die("prepared for %d images, %d asked" % (len(prep["indices"]), n))
    idx = prep["indices"][:n]
    clean = load_images(idx)
    yall = np.fromfile(os.path.join(a.prep, "y.f32"), dtype=np.float32)
    yall = yall.reshape(len(prep["indices"]), *prep["out_shape"])[:n]
    A = TorchOperator(torch, prep)
    vae, scale = None, 1.0
    if a.solver == "dps":
        net, meta, kind = eager_module(torch, os.path.join(a.models, "fmnist-ddpm.pt"), PixelUNet,
                                       dict(cin=1, c1=32, c2=64, c3=64, temb=128))
        kinds = "unet %s" % kind
        zshape = tuple(prep["shape"])
        # the library's default when ZETA is not set: chosen from the operator kind
        # (src/solvers/dps.c, docs/algorithms.md): 0.5 for inpainting, 0.3 for blur and SR
        zeta = 0.5 if "inpaint" in prep["kind"] else 0.3
    elif a.solver == "stsl":
        # channels from the records (sample_shape, latent_shape): 4 or 8 latent channels
        net, meta, kind = eager_module(torch, os.path.join(a.models, "fmnist-ldm.pt"), LatentNet,
                                       lambda m: dict(cin=int(m["sample_shape"].split(",")[0]), ch=96,
                                                      nblocks=4, temb=128))
        vae, vmeta, vkind = eager_module(torch, os.path.join(a.models, "fmnist-vae.pt"), VAE,
                                         lambda m: dict(cin=1, zc=int(m["latent_shape"].split(",")[0]),
                                                        c1=32, c2=64))
        kinds = "unet %s; vae %s" % (kind, vkind)
        scale = float(vmeta["latent_scale"])
        zshape = tuple(int(v) for v in meta["sample_shape"].split(","))
        cfg = dict(prep["stsl"])
        if cfg.get("init", INIT_FRESH_NOISE) != INIT_FRESH_NOISE or cfg.get("kappa", 0.0) != 0.0:
            die("the library's stsl defaults (init %s, kappa %s) are not the fresh-noise, kappa-0 "
                "setting the peer implements" % (cfg.get("init"), cfg.get("kappa")))
    else:
        die("unknown solver %s (dps, stsl)" % a.solver)
    abar = alpha_bars(meta)
    libn = ctypes.CDLL(a.library_noise) if a.library_noise else None
    rows, restored = [], []
    for b0 in range(0, n, a.batch):
        nb = min(a.batch, n - b0)
        y = torch.from_numpy(np.ascontiguousarray(yall[b0:b0 + nb]))
        like = torch.zeros((nb,) + tuple(prep["shape"]))
        if libn is not None:   # the library's streams: every run of stsl-bench uses the seed itself
            noise = LibNoise(torch, libn, a.seed, nb)
        else:
            noise = TorchNoise(torch, a.seed + b0, nb)
        cnt = Counter()
        t0 = time.perf_counter()
        if a.solver == "dps":
            x = dps(torch, net, A, y, abar, a.steps, zeta, noise, zshape, cnt)
        else:
            x = stsl(torch, net, vae, scale, A, y, abar, a.steps, cfg, noise, zshape, like, cnt)
        dt = time.perf_counter() - t0
        xr = x.numpy()
        restored.append(xr)
        for i in range(nb):
            g = b0 + i
            rows.append((idx[g], psnr(clean[g], xr[i]), dt / nb, cnt.graph_fwd / nb,
                         cnt.backward / nb, cnt.plain_fwd / nb, cnt.net_s / nb))
    if a.compare:
        # the library's restorations of the same run (stsl-bench --out DIR), same order
        lib = np.fromfile(os.path.join(a.compare, "restored.f32"), dtype=np.float32)
        mine = np.concatenate(restored).reshape(-1)
        if lib.size != mine.size:
            die("%s/restored.f32 holds %d floats, %d expected" % (a.compare, lib.size, mine.size))
        diff = np.abs(lib - mine)
        lib_psnr = np.mean([psnr(clean[i], lib.reshape(clean.shape)[i]) for i in range(n)])
        print(json.dumps({"max_abs_diff": float(diff.max()), "mean_abs_diff": float(diff.mean()),
                          "psnr_library": float(lib_psnr),
                          "psnr_eager": float(np.mean([r[1] for r in rows]))}))
        return 0
    if a.csv:
        fresh = not os.path.exists(a.csv) or os.path.getsize(a.csv) == 0
        with open(a.csv, "a") as f:
            if fresh:
                f.write("task,solver,steps,batch,threads,index,psnr,seconds,graph_forward,backward,"
                        "plain_forward,network_seconds,modules\n")
            for r in rows:
                f.write("%s,%s,%d,%d,%d,%d,%.4f,%.4f,%.1f,%.1f,%.1f,%.4f,%s\n"
                        % (prep["task"], a.solver, a.steps, a.batch, a.threads, r[0], r[1], r[2],
                           r[3], r[4], r[5], r[6], kinds))
    if not a.quiet:
        for r in rows:
            print("%6d %8.3f %9.4f" % (r[0], r[1], r[2]))
        print("# %s %s@%d eager (%s): PSNR %.3f, %.4f s per image"
              % (prep["task"], a.solver, a.steps, kinds, np.mean([r[1] for r in rows]),
                 np.mean([r[2] for r in rows])))
    return 0


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    sub = ap.add_subparsers(dest="cmd", required=True)
    p = sub.add_parser("prepare")
    p.add_argument("--lib", required=True)
    p.add_argument("--task", required=True)
    p.add_argument("--n", type=int, required=True)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--indices", default=os.path.join(ROOT, "data", "bench_indices.txt"))
    p.add_argument("--out", required=True)
    r = sub.add_parser("run")
    r.add_argument("--prep", required=True)
    r.add_argument("--solver", required=True)
    r.add_argument("--steps", type=int, required=True)
    r.add_argument("--batch", type=int, default=1)
    r.add_argument("--n", type=int, required=True)
    r.add_argument("--threads", type=int, default=1)
    r.add_argument("--seed", type=int, default=0)
    r.add_argument("--models", default=os.path.join(ROOT, "models"))
    r.add_argument("--csv")
    r.add_argument("--quiet", action="store_true")
    r.add_argument("--library-noise", metavar="LIBSTSL_SO",
                   help="verification: draw the library's random numbers (stsl_random_normal)")
    r.add_argument("--compare", metavar="DIR",
                   help="verification: print how far the restorations are from DIR/restored.f32 "
                        "(stsl-bench --out DIR of the same run) as one JSON line")
    a = ap.parse_args()
    return cmd_prepare(a) if a.cmd == "prepare" else cmd_run(a)


if __name__ == "__main__":
    sys.exit(main())
