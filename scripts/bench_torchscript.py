#!/usr/bin/python3
"""Benchmark libstsl's TorchScript backend against the same calls made directly in Python.

    /usr/bin/python3 scripts/bench_torchscript.py --lib-bench bin/bench-torchscript \
        --workdir build/bench-torchscript --threads 2 --repeats 15 --out docs/torchscript-bench.md

(`make bench-torchscript` does this.)  For a small and a mid-size UNet (seeded, exported with
scripts/export_torchscript.py into --workdir) it times one forward and one VJP (J^T v with
respect to x, with the forward of the same evaluation) of batch 1, through the library and
directly in Python on the same file with the same thread count:
  - paired: libstsl.so loaded with ctypes into this process (sharing its libtorch); library and
    Python calls alternated one by one on the same tensors; medians of --repeats pairs after
    --warmup pairs, --rounds times; overhead = median of the per-pair ratios.  This cancels most
    of the noise of a loaded machine and is the figure reported as the overhead.
  - separate: the standalone tool examples/bench-torchscript.c and a Python loop, one after the
    other (absolute times).
A last table shows libtorch's graph-executor warm-up (first calls) under the executor settings
the shim could choose (each in a fresh Python process: the settings are process-wide), which is
how the shim's choice was made.

The report replaces the block between `<!-- bench-torchscript:begin -->` and
`<!-- bench-torchscript:end -->` of --out; the page's hand-written sections outside it are kept.
"""
import argparse
import datetime
import json
import os
import platform
import statistics
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)

import torch  # noqa: E402
import torch.nn as nn  # noqa: E402
import torch.nn.functional as F  # noqa: E402

import export_torchscript as ets  # noqa: E402
from bench_common import cpu_model, parse_key_values, replace_block  # noqa: E402


# ---- a DDPM-style UNet (scriptable) ----

class ResBlock(nn.Module):
    def __init__(self, cin: int, cout: int, temb: int):
        super().__init__()
        self.n1 = nn.GroupNorm(8, cin)
        self.c1 = nn.Conv2d(cin, cout, 3, padding=1)
        self.t = nn.Linear(temb, cout)
        self.n2 = nn.GroupNorm(8, cout)
        self.c2 = nn.Conv2d(cout, cout, 3, padding=1)
        self.skip = nn.Conv2d(cin, cout, 1) if cin != cout else nn.Identity()

    def forward(self, x: torch.Tensor, emb: torch.Tensor) -> torch.Tensor:
        h = self.c1(F.silu(self.n1(x)))
        h = h + self.t(emb)[:, :, None, None]
        h = self.c2(F.silu(self.n2(h)))
        return h + self.skip(x)


class UNet(nn.Module):
    def __init__(self, ch: int = 3, base: int = 32, mults=(1, 2), blocks: int = 1):
        super().__init__()
        temb = base * 4
        self.base = base
        self.temb1 = nn.Linear(base, temb)
        self.temb2 = nn.Linear(temb, temb)
        self.inc = nn.Conv2d(ch, base, 3, padding=1)
        downs, ups, skips = [], [], [base]
        c = base
        for i, m in enumerate(mults):
            for _ in range(blocks):
                downs.append(ResBlock(c, base * m, temb))
                c = base * m
                skips.append(c)
            if i < len(mults) - 1:
                downs.append(nn.Conv2d(c, c, 3, stride=2, padding=1))
                skips.append(c)
        self.downs = nn.ModuleList(downs)
        self.mid = ResBlock(c, c, temb)
        for i, m in reversed(list(enumerate(mults))):
            for _ in range(blocks + 1):
                ups.append(ResBlock(c + skips.pop(), base * m, temb))
                c = base * m
            if i > 0:
                ups.append(nn.Upsample(scale_factor=2.0, mode="nearest"))
        self.ups = nn.ModuleList(ups)
        self.out = nn.Sequential(nn.GroupNorm(8, c), nn.SiLU(), nn.Conv2d(c, ch, 3, padding=1))

    def forward(self, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        half = self.base // 2
        freqs = torch.exp(-9.210340371976184 *
                          torch.arange(half, dtype=torch.float32, device=x.device) / half)
        a = t.float()[:, None] * freqs[None, :]
        emb = self.temb2(F.silu(self.temb1(torch.cat([torch.sin(a), torch.cos(a)], dim=1))))
        h = self.inc(x)
        hs = [h]
        for m in self.downs:
            if isinstance(m, ResBlock):
                h = m(h, emb)
            else:
                h = m(h)
            hs.append(h)
        h = self.mid(h, emb)
        for m in self.ups:
            if isinstance(m, ResBlock):
                h = m(torch.cat([h, hs.pop()], dim=1), emb)
            else:
                h = m(h)
        return self.out(h)


MODELS = {
    # name: (constructor kwargs, sample shape)
    "small": (dict(ch=1, base=32, mults=(1, 2), blocks=1), (1, 28, 28)),
    "mid": (dict(ch=3, base=64, mults=(1, 2, 2), blocks=2), (3, 32, 32)),
}


def make_models(workdir):
    paths = {}
    for name, (kw, shape) in MODELS.items():
        p = os.path.join(workdir, f"bench_unet_{name}.pt")
        torch.manual_seed(0)
        model = UNet(**kw).eval()
        nparam = sum(q.numel() for q in model.parameters())
        if not os.path.exists(p):
            ets.export_unet(model, p, sample_shape=shape, name=f"bench-{name}", how="trace")
        paths[name] = (p, shape, nparam)
    return paths


# ---- direct Python timing ----

def py_time(path, shape, threads, repeats, warmup, batch=1):
    torch.set_num_threads(threads)
    m = torch.jit.load(path).eval()
    for p in m.parameters():
        p.requires_grad_(False)
    g = torch.Generator().manual_seed(0)
    x = torch.rand(batch, *shape, generator=g) * 2 - 1
    v = torch.rand(batch, *shape, generator=g) * 2 - 1
    t = torch.full((batch,), 500.0)
    res = {}
    fw = []
    for i in range(warmup + repeats):
        a = time.perf_counter()
        with torch.no_grad():
            out = m(x, t)
        fw.append((time.perf_counter() - a) * 1e3)
    res["forward_median_ms"] = statistics.median(fw[warmup:])
    vj = []
    for i in range(warmup + repeats):
        a = time.perf_counter()
        xr = x.detach().requires_grad_(True)
        out = m(xr, t)
        (gx,) = torch.autograd.grad(out, xr, v)
        vj.append((time.perf_counter() - a) * 1e3)
    res["vjp_median_ms"] = statistics.median(vj[warmup:])
    del out, gx
    return res


class Lib:
    """libstsl through ctypes, in this process (it shares this process's libtorch)."""

    def __init__(self, so_path, threads):
        import ctypes as C
        self.C = C
        self.lib = L = C.CDLL(os.path.abspath(so_path))
        vp, fp = C.c_void_p, C.c_void_p
        L.stsl_context_create.argtypes = [C.POINTER(vp)]
        L.stsl_context_set_threads.argtypes = [vp, C.c_int]
        L.stsl_context_last_error.argtypes = [vp]
        L.stsl_context_last_error.restype = C.c_char_p
        L.stsl_score_load.argtypes = [vp, C.c_char_p, C.POINTER(vp)]
        L.stsl_score_eps.argtypes = [vp, fp, fp, fp, C.c_int]
        L.stsl_score_eps_vjp.argtypes = [vp, fp, fp, fp, fp, fp, C.c_int]
        L.stsl_score_destroy.argtypes = [vp]
        L.stsl_context_destroy.argtypes = [vp]
        self.ctx = vp()
        assert L.stsl_context_create(C.byref(self.ctx)) == 0
        assert L.stsl_context_set_threads(self.ctx, threads) == 0

    def load(self, path):
        s = self.C.c_void_p()
        if self.lib.stsl_score_load(self.ctx, path.encode(), self.C.byref(s)) != 0:
            raise RuntimeError(self.lib.stsl_context_last_error(self.ctx).decode())
        return s

    def close(self, s):
        self.lib.stsl_score_destroy(s)


def paired_time(lib, path, shape, threads, repeats, warmup):
    """Library and Python calls alternated one by one in the same process on the same inputs,
    so that the machine's load affects both alike."""
    torch.set_num_threads(threads)
    m = torch.jit.load(path).eval()
    for p in m.parameters():
        p.requires_grad_(False)
    s = lib.load(path)
    g = torch.Generator().manual_seed(0)
    x = (torch.rand(1, *shape, generator=g) * 2 - 1).contiguous()
    v = (torch.rand(1, *shape, generator=g) * 2 - 1).contiguous()
    t = torch.full((1,), 500.0)
    eps = torch.empty_like(x)
    vjp = torch.empty_like(x)
    L = lib.lib

    def py_fwd():
        with torch.no_grad():
            return m(x, t)

    def lib_fwd():
        assert L.stsl_score_eps(s, x.data_ptr(), t.data_ptr(), eps.data_ptr(), 1) == 0

    def py_vjp():
        xr = x.detach().requires_grad_(True)
        out = m(xr, t)
        return torch.autograd.grad(out, xr, v)

    def lib_vjp():
        assert L.stsl_score_eps_vjp(s, x.data_ptr(), t.data_ptr(), v.data_ptr(),
                                    eps.data_ptr(), vjp.data_ptr(), 1) == 0

    res = {}
    for kind, fp, fl in (("forward", py_fwd, lib_fwd), ("vjp", py_vjp, lib_vjp)):
        tp, tl = [], []
        for i in range(warmup + repeats):
            order = ((fp, tp), (fl, tl)) if i % 2 == 0 else ((fl, tl), (fp, tp))
            for f, acc in order:
                a = time.perf_counter()
                f()
                acc.append((time.perf_counter() - a) * 1e3)
        tp, tl = tp[warmup:], tl[warmup:]
        res[kind] = dict(py=statistics.median(tp), lib=statistics.median(tl),
                         pair_ratio=statistics.median(b / a for a, b in zip(tp, tl)),
                         min_ratio=min(tl) / min(tp))
    # the library's eps equals the module's output (eps model)
    res["max_abs_diff"] = (eps - py_fwd()).abs().max().item()
    lib.close(s)
    return res


def lib_time(bench, path, threads, repeats, warmup, batch=1):
    out = subprocess.run([bench, path, "--threads", str(threads), "--repeats", str(repeats),
                          "--warmup", str(warmup), "--batch", str(batch)],
                         check=True, capture_output=True, text=True).stdout
    return parse_key_values(out)


# ---- executor warm-up study (fresh process per setting) ----

WARMUP_CHILD = r"""
import json, sys, time, torch
mode, path, threads = sys.argv[1], sys.argv[2], int(sys.argv[3])
shape = tuple(int(s) for s in sys.argv[4].split(","))
torch.set_num_threads(threads)
if mode == "legacy":
    torch._C._jit_set_profiling_executor(False)
    torch._C._jit_set_profiling_mode(False)
elif mode == "no-optimize":
    torch._C._set_graph_executor_optimize(False)
m = torch.jit.load(path).eval()
for p in m.parameters():
    p.requires_grad_(False)
x = torch.rand(1, *shape) * 2 - 1
v = torch.rand(1, *shape)
t = torch.full((1,), 500.0)
fw, vj = [], []
for i in range(8):
    a = time.perf_counter()
    with torch.no_grad():
        m(x, t)
    fw.append((time.perf_counter() - a) * 1e3)
for i in range(8):
    a = time.perf_counter()
    xr = x.detach().requires_grad_(True)
    o = m(xr, t)
    torch.autograd.grad(o, xr, v)
    vj.append((time.perf_counter() - a) * 1e3)
print(json.dumps({"forward": fw, "vjp": vj}))
"""


def warmup_study(path, shape, threads):
    out = {}
    for mode in ("profiling (default)", "legacy", "no-optimize"):
        key = mode.split()[0]
        r = subprocess.run([sys.executable, "-c", WARMUP_CHILD, key, path, str(threads),
                            ",".join(map(str, shape))], check=True, capture_output=True,
                           text=True)
        out[mode] = json.loads(r.stdout.strip().splitlines()[-1])
    return out


def machine():
    cpu = cpu_model(platform.processor() or "?")
    return f"{platform.node()}: {cpu}, {os.cpu_count()} logical CPUs, {platform.system()} " \
           f"{platform.release()}, torch {torch.__version__} (Debian python3-torch / libtorch-dev)"


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--lib-bench", default="bin/bench-torchscript")
    ap.add_argument("--lib-so", default="lib/libstsl.so.1")
    ap.add_argument("--workdir", default="build/bench-torchscript")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--repeats", type=int, default=40)
    ap.add_argument("--warmup", type=int, default=5)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--out", default="docs/torchscript-bench.md")
    ap.add_argument("--no-warmup-study", action="store_true")
    a = ap.parse_args()
    os.makedirs(a.workdir, exist_ok=True)
    models = make_models(a.workdir)

    lib = Lib(a.lib_so, a.threads)
    rows, raw = [], {}
    for name, (path, shape, nparam) in models.items():
        paired = [paired_time(lib, path, shape, a.threads, a.repeats, a.warmup)
                  for _ in range(a.rounds)]
        sep_py = py_time(path, shape, a.threads, a.repeats, a.warmup)
        sep_lib = lib_time(a.lib_bench, path, a.threads, a.repeats, a.warmup)
        med = lambda k, f: statistics.median(p[k][f] for p in paired)  # noqa: E731
        row = dict(name=name, shape=shape, params=nparam,
                   py_fwd=med("forward", "py"), lib_fwd=med("forward", "lib"),
                   r_fwd=med("forward", "pair_ratio"),
                   py_vjp=med("vjp", "py"), lib_vjp=med("vjp", "lib"),
                   r_vjp=med("vjp", "pair_ratio"),
                   m_fwd=med("forward", "min_ratio"), m_vjp=med("vjp", "min_ratio"),
                   diff=max(p["max_abs_diff"] for p in paired),
                   sep_py_fwd=sep_py["forward_median_ms"], sep_lib_fwd=sep_lib["forward_median_ms"],
                   sep_py_vjp=sep_py["vjp_median_ms"], sep_lib_vjp=sep_lib["vjp_median_ms"],
                   lib_first=[sep_lib.get(f"forward_call{i}_ms") for i in (1, 2, 3)],
                   load_ms=sep_lib["load_ms"])
        print(f"{name}: {row}", file=sys.stderr)
        rows.append(row)
        raw[name] = dict(paired=paired, separate_python=sep_py, separate_library=sep_lib)

    study = {} if a.no_warmup_study else warmup_study(models["mid"][0], models["mid"][1],
                                                      a.threads)

    now = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    L = []
    L.append(f"Generated by `make bench-torchscript` (scripts/bench_torchscript.py) on {now}.\n")
    L.append(f"- Machine: {machine()}.")
    L.append(f"- Threads: {a.threads} (libtorch intra-op, the same in both columns); batch 1.")
    L.append("- The machine may be shared with other jobs: absolute "
             "times move a lot between runs.  The overhead is therefore measured with **paired, "
             "interleaved calls in one process**: `libstsl.so` loaded with ctypes into the Python "
             "process (it shares that process's libtorch), each library call alternated with the "
             "same call made directly in Python on the same file and the same input tensors "
             f"(zero-copy pointers); {a.warmup} warm-up pairs, then {a.repeats} timed pairs, "
             f"{a.rounds} rounds; the table gives the medians and the median of the per-pair "
             "ratios library / Python (in brackets: the ratio of the fastest calls, the "
             "least disturbed estimate).")
    L.append("- Library: `stsl_score_eps` and `stsl_score_eps_vjp` (with the eps output).  Python: "
             "`torch.jit.load`, forward under `torch.no_grad()`, VJP = forward + "
             "`torch.autograd.grad(out, x, v)`; parameters set to `requires_grad=False` in both "
             "(the shim does this at load).\n")
    L.append("| model | sample | params | Python forward ms | library forward ms | overhead | "
             "Python VJP ms | library VJP ms | overhead |")
    L.append("|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        L.append(f"| {r['name']} | {','.join(map(str, r['shape']))} | {r['params'] / 1e6:.2f} M | "
                 f"{r['py_fwd']:.2f} | {r['lib_fwd']:.2f} | **{r['r_fwd']:.3f}x** ({r['m_fwd']:.3f}) | "
                 f"{r['py_vjp']:.2f} | {r['lib_vjp']:.2f} | **{r['r_vjp']:.3f}x** ({r['m_vjp']:.3f}) |")
    L.append("")
    L.append("Largest |library eps - Python output| over the runs: " +
             ", ".join(f"{r['name']} {r['diff']:.2g}" for r in rows) + ".\n")
    L.append("Goal (issue 5): overhead at most 1.05x.  What the library adds per call: argument "
             "checks, a mutex, wrapping the caller's buffers with `from_blob` (no input copy on "
             "CPU), one copy of the output into the caller's buffer, and a NaN/Inf scan of the "
             "output.\n")
    L.append("Separate processes (the standalone tool `bin/bench-torchscript` and a Python loop, "
             "one after the other; medians, ms; sensitive to the machine's load at each moment, "
             "shown for the absolute times only):\n")
    L.append("| model | Python forward | bench-torchscript forward | Python VJP | "
             "bench-torchscript VJP |")
    L.append("|---|---|---|---|---|")
    for r in rows:
        L.append(f"| {r['name']} | {r['sep_py_fwd']:.2f} | {r['sep_lib_fwd']:.2f} | "
                 f"{r['sep_py_vjp']:.2f} | {r['sep_lib_vjp']:.2f} |")
    L.append("")
    L.append("Load time through the library (file read, CRC-32 check, metadata check, one probe "
             "forward on a batch of 1): " + ", ".join(f"{r['name']} {r['load_ms']:.0f} ms" for r in rows) +
             ".\n")
    if study:
        L.append("## Graph-executor warm-up (mid model, Python, fresh process per setting)\n")
        L.append("libtorch 1.13's profiling executor records shapes on the first call(s) of a "
                 "method and optimises afterwards, and it specialises again when "
                 "`requires_grad` changes (the VJP path).  Times of the first calls, ms:\n")
        L.append("| executor | forward calls 1-4 | steady forward | VJP calls 1-4 | steady VJP |")
        L.append("|---|---|---|---|---|")
        for mode, d in study.items():
            f, v = d["forward"], d["vjp"]
            L.append(f"| {mode} | {' / '.join(f'{x:.1f}' for x in f[:4])} | "
                     f"{statistics.median(f[4:]):.2f} | {' / '.join(f'{x:.1f}' for x in v[:4])} | "
                     f"{statistics.median(v[4:]):.2f} |")
        L.append("")
        steady = {mode: (statistics.median(d["forward"][4:]), statistics.median(d["vjp"][4:]))
                  for mode, d in study.items()}
        default = "profiling (default)"
        fastest = min(steady, key=lambda mode: sum(steady[mode]))
        gap = sum(steady[default]) / sum(steady[fastest]) - 1
        L.append("Choice: the shim keeps libtorch's default (profiling) executor.  Here its steady "
                 "forward + VJP " +
                 ("is the fastest of the three" if fastest == default else
                  f"is {100 * gap:.1f} % slower than {fastest}'s") +
                 " (a machine's noise is a few per cent).  The legacy executor is a process-wide "
                 "setting that would also change every other libtorch user in the host process; "
                 "the no-optimize row is what `STSL_JIT_OPTIMIZE=0` at load gives one model "
                 "(docs/cuda.md, \"Start-up\").  The default's cost is the first one or two calls "
                 "of each kind; the probe forward at load time absorbs the first.  The library's "
                 "own first forward calls after load (mid model, standalone tool): " +
                 " / ".join(f"{x:.1f}" for x in rows[-1]["lib_first"] if x is not None) +
                 " ms.\n")
    replace_block(a.out, "<!-- bench-torchscript:begin -->", "<!-- bench-torchscript:end -->",
                  "\n".join(L), new_file_heading="# TorchScript backend: library overhead\n")
    with open(os.path.join(a.workdir, "raw.json"), "w") as f:
        json.dump(dict(rows=rows, raw=raw, study=study), f, indent=1)
    print("\n".join(L))


if __name__ == "__main__":
    main()
