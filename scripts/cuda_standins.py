#!/usr/bin/env python3
"""Random-initialised, real-size stand-in UNets for the CUDA timings of scripts/check-cuda.sh.

Written for libstsl (issue 16); no pretrained weights, no code from the model repositories: a
plain DDPM-style UNet (residual blocks with a timestep embedding, self-attention blocks with a
feed-forward at the coarse resolutions, stride-2 down / nearest up sampling) sized like

  adm256   the 256x256 pixel-space UNet of DPS / STSL's FFHQ experiments (ADM layout: 128
           channels, multipliers 1,1,2,2,4,4, one block per level, residual blocks at the resamplings, attention at 16x16; ~99M)
  sd512    Stable Diffusion's latent UNet at 512x512 images (4x64x64 latents; 320 channels,
           multipliers 1,2,4,4, two blocks per level, attention at 64/32/16 with a feed-
           forward of 8x width standing in for the text cross-attention's weights; ~0.84B)
  tiny-*   small versions of both for a CPU dry run of check-cuda.sh

    python3 scripts/cuda_standins.py NAME OUT.pt [--device cuda]   # export, print the size
    python3 scripts/cuda_standins.py --count                       # parameter counts only

Export goes through scripts/export_torchscript.py (torch.jit.trace; stsl_meta.txt record).
"""
import argparse
import math
import os
import sys

import torch
import torch.nn as nn
import torch.nn.functional as F

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)


def norm(c):
    return nn.GroupNorm(32 if c % 32 == 0 else 8, c)


class Res(nn.Module):
    def __init__(self, cin, cout, temb):
        super().__init__()
        self.n1, self.c1 = norm(cin), nn.Conv2d(cin, cout, 3, padding=1)
        self.emb = nn.Linear(temb, cout)
        self.n2, self.c2 = norm(cout), nn.Conv2d(cout, cout, 3, padding=1)
        self.skip = nn.Conv2d(cin, cout, 1) if cin != cout else nn.Identity()

    def forward(self, x, e):
        h = self.c1(F.silu(self.n1(x))) + self.emb(e)[:, :, None, None]
        return self.skip(x) + self.c2(F.silu(self.n2(h)))


class Attn(nn.Module):
    """Multi-head self-attention over the pixels, then (ff > 0) a position-wise feed-forward."""

    def __init__(self, c, heads, ff):
        super().__init__()
        self.heads, self.scale = heads, 1.0 / math.sqrt(c // heads)
        self.n, self.qkv, self.proj = norm(c), nn.Conv2d(c, 3 * c, 1), nn.Conv2d(c, c, 1)
        self.ff = nn.Sequential(norm(c), nn.Conv2d(c, ff * c, 1), nn.GELU(), nn.Conv2d(ff * c, c, 1)) \
            if ff > 0 else None

    def forward(self, x):
        b, c, h, w = x.shape
        q, k, v = self.qkv(self.n(x)).reshape(b, 3, self.heads, c // self.heads, h * w).unbind(1)
        a = torch.softmax(torch.einsum("bhdi,bhdj->bhij", q, k) * self.scale, dim=-1)
        x = x + self.proj(torch.einsum("bhij,bhdj->bhdi", a, v).reshape(b, c, h, w))
        return x + self.ff(x) if self.ff is not None else x


class UNet(nn.Module):
    def __init__(self, ch, base, mults, blocks, attn_res, res, heads, ff, updown_res=False):
        super().__init__()
        temb = 4 * base
        self.base = base
        self.t1, self.t2 = nn.Linear(base, temb), nn.Linear(temb, temb)
        self.inc = nn.Conv2d(ch, base, 3, padding=1)
        self.down, self.up, kinds_d, kinds_u = nn.ModuleList(), nn.ModuleList(), [], []
        skips, c, r = [base], base, res
        for i, m in enumerate(mults):
            for _ in range(blocks):
                self.down.append(Res(c, base * m, temb)); kinds_d.append("res"); c = base * m
                if r in attn_res:
                    self.down.append(Attn(c, heads, ff)); kinds_d.append("attn")
                skips.append(c)
            if i < len(mults) - 1:
                if updown_res:   # a residual block at each resampling, as ADM's resblock_updown
                    self.down.append(Res(c, c, temb)); kinds_d.append("res2")
                self.down.append(nn.Conv2d(c, c, 3, stride=2, padding=1)); kinds_d.append("down")
                skips.append(c); r //= 2
        self.mid = nn.ModuleList([Res(c, c, temb), Attn(c, heads, ff), Res(c, c, temb)])
        for i, m in reversed(list(enumerate(mults))):
            for _ in range(blocks + 1):
                self.up.append(Res(c + skips.pop(), base * m, temb)); kinds_u.append("res"); c = base * m
                if r in attn_res:
                    self.up.append(Attn(c, heads, ff)); kinds_u.append("attn")
            if i > 0:
                self.up.append(nn.Sequential(nn.Upsample(scale_factor=2.0, mode="nearest"),
                                             nn.Conv2d(c, c, 3, padding=1)))
                kinds_u.append("up"); r *= 2
                if updown_res:
                    self.up.append(Res(c, c, temb)); kinds_u.append("res2")
        self.kinds_d, self.kinds_u = kinds_d, kinds_u
        self.out = nn.Sequential(norm(c), nn.SiLU(), nn.Conv2d(c, ch, 3, padding=1))

    def forward(self, x, t):
        half = self.base // 2
        f = torch.exp(-math.log(10000.0) * torch.arange(half, dtype=torch.float32, device=x.device) / half)
        a = t.float()[:, None] * f[None, :]
        e = self.t2(F.silu(self.t1(torch.cat([torch.sin(a), torch.cos(a)], dim=1))))
        h = self.inc(x)
        hs = [h]
        for kind, m in zip(self.kinds_d, self.down):
            h = m(h, e) if kind in ("res", "res2") else m(h)
            if kind == "attn":
                hs[-1] = h
            elif kind != "res2":
                hs.append(h)
        h = self.mid[2](self.mid[1](self.mid[0](h, e)), e)
        for kind, m in zip(self.kinds_u, self.up):
            if kind == "res":
                h = m(torch.cat([h, hs.pop()], dim=1), e)
            else:
                h = m(h, e) if kind == "res2" else m(h)
        return self.out(h)


# name: (constructor kwargs, sample shape)
CONFIGS = {
    "adm256": (dict(ch=3, base=128, mults=(1, 1, 2, 2, 4, 4), blocks=1, attn_res=(16,), res=256,
                    heads=4, ff=0, updown_res=True), (3, 256, 256)),
    "sd512": (dict(ch=4, base=320, mults=(1, 2, 4, 4), blocks=2, attn_res=(64, 32, 16), res=64,
                   heads=8, ff=8), (4, 64, 64)),
    "tiny-adm": (dict(ch=3, base=32, mults=(1, 2), blocks=1, attn_res=(8,), res=16, heads=4, ff=0,
                      updown_res=True),
                 (3, 16, 16)),
    "tiny-sd": (dict(ch=4, base=32, mults=(1, 2), blocks=1, attn_res=(8,), res=16, heads=4, ff=2),
                (4, 16, 16)),
}


def build(name, device="cpu", seed=0):
    kw, shape = CONFIGS[name]
    torch.manual_seed(seed)
    # torch >= 2.0: parameters created (and initialised) on the device directly, not on the host
    with torch.no_grad(), (torch.device(device) if hasattr(torch.device, "__enter__") else _nullctx()):
        m = UNet(**kw).to(device).eval()
    for p in m.parameters():
        p.requires_grad_(False)
    return m, shape


def nparams(m):
    return sum(p.numel() for p in m.parameters())


def export(name, out, device="cpu", tol=1e-4):
    """Trace on `device` (a traced graph keeps the device of constants it creates; x.device
    above keeps the timestep table on the input's device) and save with the metadata record."""
    import export_torchscript as ets
    m, shape = build(name, device)
    ets.export_unet(m, out, sample_shape=shape, name=f"standin-{name}", how="trace", rtol=tol, atol=tol)
    return m, shape


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("name", nargs="?", choices=sorted(CONFIGS))
    ap.add_argument("out", nargs="?")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--count", action="store_true")
    a = ap.parse_args()
    if a.count:
        for n in CONFIGS:
            kw, shape = CONFIGS[n]
            with torch.device("meta") if hasattr(torch, "device") and hasattr(torch.device, "__enter__") \
                    else _nullctx():
                m = UNet(**kw)
            print(f"{n} {nparams(m)} {shape}")
        return
    if not a.name or not a.out:
        ap.error("NAME and OUT are needed (or --count)")
    m, shape = export(a.name, a.out, a.device)
    print(f"{a.name} {nparams(m)} parameters, sample {shape}, {os.path.getsize(a.out) / 1e6:.1f} MB")


class _nullctx:
    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False


if __name__ == "__main__":
    main()
