#!/usr/bin/python3
"""Generate the TorchScript test fixtures of tests/scores/test_torchscript.c (seeded, reproducible).

    /usr/bin/python3 tests/scores/make_fixtures.py tests/scores/fixtures

Needs Debian's python3-torch (the first python3 on PATH may be one without torch).  Writes tiny
models through scripts/export_torchscript.py (so the export path is exercised too), broken files
for the error tests, and expected values computed here in float64-checked float32:
<model>.expect.txt holds named float arrays, one per line: `name count v0 v1 ...`.

Fixtures (all CPU, float32):
  unet_eps.pt     tiny conv UNet (2x8x8, time embedding, skip), eps, linear schedule, scripted
  unet_v.pt       same architecture, other weights, v-prediction, cosine schedule, scripted
  unet_x0.pt      x0-prediction, scaled-linear schedule, TRACED
  unet_latent.pt  latent-space eps UNet on 2x4x4, pairs with ae.pt
  unet_rgb.pt     pixel-space eps UNet on 3x8x8 (docs/real-models.md's RGB example, check-install)
  ae.pt           autoencoder 1x8x8 <-> 2x4x4 with encode/decode, latent_scale 0.5
  ae_encoder.pt, ae_decoder.pt   the same weights as two files (roles encoder, decoder)
  no_meta.pt      a UNet saved without stsl_meta.txt
  bad_meta.pt     a UNet whose record says prediction = noise
  state_dict.pt   a torch.save() checkpoint: a zip archive, but not TorchScript
  garbage.pt      a text file
  wrong_signature.pt  forward(x) only, with a unet record
  wrong_channels.pt   record says sample_shape 3,8,8; the first conv takes 1 channel
  wrong_output.pt     forward returns one channel for a 2-channel sample_shape
  not_differentiable.pt  forward detaches x (VJP must fail clearly)
  batch_one.pt        raises for batches larger than 1 (call-time rejection, multi-line error)
"""
import math
import os
import sys

# TorchScript writes class constants in set order: fix the hash seed so files are byte-identical.
if os.environ.get("PYTHONHASHSEED") != "0":
    os.environ["PYTHONHASHSEED"] = "0"
    os.execv(sys.executable, [sys.executable] + sys.argv)

import torch  # noqa: E402
import torch.nn as nn  # noqa: E402
import torch.nn.functional as F  # noqa: E402

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "..", "scripts"))
import export_torchscript as ets  # noqa: E402
from stsl_export import meta as stsl_meta  # noqa: E402

torch.set_num_threads(1)
torch.use_deterministic_algorithms(True)


class TinyUNet(nn.Module):
    """Conv UNet-like: sinusoidal time embedding, one down/up level, a skip connection."""

    def __init__(self, ch: int = 2, base: int = 8, temb: int = 16):
        super().__init__()
        self.temb = temb
        self.t1 = nn.Linear(temb, base)
        self.inc = nn.Conv2d(ch, base, 3, padding=1)
        self.down = nn.Conv2d(base, 2 * base, 3, stride=2, padding=1)
        self.mid = nn.Conv2d(2 * base, 2 * base, 3, padding=1)
        self.up = nn.Conv2d(2 * base, base, 3, padding=1)
        self.out = nn.Conv2d(2 * base, ch, 3, padding=1)

    def forward(self, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        half = self.temb // 2
        freqs = torch.exp(-math.log(1000.0) *
                          torch.arange(half, dtype=torch.float32, device=x.device) / half)
        args = t.float()[:, None] * freqs[None, :]
        emb = torch.cat([torch.sin(args), torch.cos(args)], dim=1)
        h0 = F.silu(self.inc(x) + self.t1(emb)[:, :, None, None])
        h1 = F.silu(self.down(h0))
        h1 = F.silu(self.mid(h1))
        u = F.interpolate(h1, scale_factor=2.0, mode="nearest")
        u = F.silu(self.up(u))
        return self.out(torch.cat([u, h0], dim=1))


class TinyAE(nn.Module):
    """1x8x8 images <-> 2x4x4 latents."""

    def __init__(self):
        super().__init__()
        self.e1 = nn.Conv2d(1, 4, 3, padding=1)
        self.e2 = nn.Conv2d(4, 2, 3, stride=2, padding=1)
        self.d1 = nn.Conv2d(2, 4, 3, padding=1)
        self.d2 = nn.Conv2d(4, 1, 3, padding=1)

    @torch.jit.export
    def encode(self, x: torch.Tensor) -> torch.Tensor:
        return self.e2(F.silu(self.e1(x)))

    @torch.jit.export
    def decode(self, z: torch.Tensor) -> torch.Tensor:
        u = F.interpolate(z, scale_factor=2.0, mode="nearest")
        return torch.tanh(self.d2(F.silu(self.d1(u))))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.decode(self.encode(x))


class OneInput(nn.Module):
    def __init__(self):
        super().__init__()
        self.c = nn.Conv2d(2, 2, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.c(x)


class OneChannelOut(nn.Module):
    def __init__(self):
        super().__init__()
        self.net = TinyUNet()

    def forward(self, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        return self.net(x, t)[:, :1]


class NotDifferentiable(nn.Module):
    def __init__(self):
        super().__init__()
        self.c = nn.Conv2d(2, 2, 3, padding=1)

    def forward(self, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        return self.c(x.detach())


class BatchOfOne(nn.Module):
    """Refuses batches larger than 1 at call time (a shape the model rejects after loading)."""

    def __init__(self):
        super().__init__()
        self.c = nn.Conv2d(2, 2, 3, padding=1)

    def forward(self, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        if x.shape[0] > 1:
            raise RuntimeError("this model only takes a batch of 1")
        return self.c(x)


# ---- schedules exactly as src/core/schedule.c computes them (float64) ----

def alpha_bar_table(kind, beta_start, beta_end, T):
    out, abar = [], 1.0
    for i in range(T):
        frac = i / (T - 1) if T > 1 else 0.0
        if kind == "linear":
            beta = beta_start + (beta_end - beta_start) * frac
        elif kind == "scaled-linear":
            r = math.sqrt(beta_start) + (math.sqrt(beta_end) - math.sqrt(beta_start)) * frac
            beta = r * r
        else:
            s, hp = beta_start, 1.5707963267948966
            f0 = math.cos(((i / T) + s) / (1 + s) * hp)
            f1 = math.cos((((i + 1) / T) + s) / (1 + s) * hp)
            beta = min(1.0 - (f1 * f1) / (f0 * f0), 0.999)
        abar *= 1.0 - beta
        out.append(abar)
    return out


def alpha_bar_at(table, t):
    T = len(table)
    if t <= -1:
        return 1.0
    if t >= T - 1:
        return table[-1]
    lo = math.floor(t)
    w = t - lo
    a = 1.0 if lo < 0 else table[lo]
    return a + (table[lo + 1] - a) * w


def write_expect(path, arrays):
    with open(path, "w") as f:
        f.write("# generated by tests/scores/make_fixtures.py; name count values...\n")
        for name, a in arrays:
            v = a.detach().double().reshape(-1).tolist()
            f.write(f"{name} {len(v)} " + " ".join("%.9g" % x for x in v) + "\n")


def unet_expect(sm, path, pred, table, shape, seed):
    """x, t, v; raw model output and its VJP; the eps and eps-VJP the library must return."""
    g = torch.Generator().manual_seed(seed)
    n = 2
    x = torch.randn(n, *shape, generator=g)
    t = torch.tensor([10.0, 500.5], dtype=torch.float32)
    v = torch.randn(n, *shape, generator=g)
    xr = x.clone().requires_grad_(True)
    out = sm(xr, t)
    (gout,) = torch.autograd.grad(out, xr, v)
    out = out.detach()
    ab = torch.tensor([alpha_bar_at(table, float(ti)) for ti in t], dtype=torch.float64)
    a = ab.sqrt().view(n, 1, 1, 1)
    b = (1 - ab).sqrt().view(n, 1, 1, 1)
    xd, od, gd, vd = x.double(), out.double(), gout.double(), v.double()
    if pred == "eps":
        eps, geps = od, gd
    elif pred == "v":
        eps, geps = a * od + b * xd, a * gd + b * vd
    else:
        eps, geps = (xd - a * od) / b, (vd - a * gd) / b
    write_expect(path, [("x", x), ("t", t), ("v", v), ("out", out), ("out_vjp", gout),
                        ("eps", eps), ("eps_vjp", geps)])


def main(outdir):
    os.makedirs(outdir, exist_ok=True)
    P = lambda name: os.path.join(outdir, name)  # noqa: E731
    shape = (2, 8, 8)

    specs = [
        ("unet_eps", "eps", dict(schedule="linear", beta_start=1e-4, beta_end=0.02), "script", 1),
        ("unet_v", "v", dict(schedule="cosine", cosine_s=0.008), "script", 2),
        ("unet_x0", "x0", dict(schedule="scaled-linear", beta_start=0.00085, beta_end=0.012),
         "trace", 3),
    ]
    for name, pred, sched, how, seed in specs:
        torch.manual_seed(seed)
        model = TinyUNet().eval()
        ets.export_unet(model, P(name + ".pt"), sample_shape=shape, prediction=pred,
                        timesteps=1000, name="fixture-" + name, how=how, **sched)
        kind = sched["schedule"]
        table = alpha_bar_table(kind, sched.get("beta_start", sched.get("cosine_s")),
                                sched.get("beta_end", 0.999), 1000)
        sm = torch.jit.load(P(name + ".pt"))
        unet_expect(sm, P(name + ".expect.txt"), pred, table, shape, 100 + seed)

    torch.manual_seed(4)
    ets.export_unet(TinyUNet(ch=2).eval(), P("unet_latent.pt"), sample_shape=(2, 4, 4),
                    prediction="eps", schedule="linear", beta_start=1e-4, beta_end=0.02,
                    timesteps=1000, space="latent", pairs_with="ae.pt",
                    name="fixture-unet-latent", how="script")

    torch.manual_seed(6)
    ets.export_unet(TinyUNet(ch=3).eval(), P("unet_rgb.pt"), sample_shape=(3, 8, 8),
                    prediction="eps", schedule="linear", beta_start=1e-4, beta_end=0.02,
                    timesteps=1000, name="fixture-unet-rgb", how="script")

    # autoencoder: one file and an encoder/decoder pair with the same weights
    torch.manual_seed(5)
    ae = TinyAE().eval()
    ae_kw = dict(image_shape=(1, 8, 8), latent_shape=(2, 4, 4), latent_scale=0.5,
                 name="fixture-ae")
    ets.export_autoencoder(ae, P("ae.pt"), how="script", **ae_kw)
    ets.export_encoder_decoder(ae, P("ae_encoder.pt"), P("ae_decoder.pt"), how="script", **ae_kw)
    g = torch.Generator().manual_seed(200)
    x = torch.rand(2, 1, 8, 8, generator=g) * 2 - 1
    z = torch.randn(2, 2, 4, 4, generator=g)
    u = torch.randn(2, 1, 8, 8, generator=g)
    scale = 0.5
    with torch.no_grad():
        enc = ae.encode(x) * scale                       # E(x) = scale * encode(x)
    zr = z.clone().requires_grad_(True)
    dec = ae.decode(zr / scale)                          # D(z) = decode(z / scale)
    (gz,) = torch.autograd.grad(dec, zr, u)              # J_D(z)^T u (includes the 1/scale)
    write_expect(P("ae.expect.txt"), [("x", x), ("z", z), ("u", u), ("enc", enc),
                                      ("dec", dec.detach()), ("dec_vjp", gz)])

    # broken files
    torch.manual_seed(6)
    good_meta = stsl_meta.make_record("unet", prediction="eps", schedule="linear", beta_start=1e-4,
                              beta_end=0.02, timesteps=1000, sample_shape=shape)
    sm = torch.jit.script(TinyUNet().eval())
    torch.jit.save(sm, P("no_meta.pt"))
    torch.jit.save(sm, P("bad_meta.pt"), _extra_files={
        stsl_meta.META_NAME: good_meta.replace("prediction = eps", "prediction = noise")})
    torch.save(TinyUNet().state_dict(), P("state_dict.pt"))
    with open(P("garbage.pt"), "w") as f:
        f.write("this is not a TorchScript file\n")
    torch.jit.save(torch.jit.script(OneInput().eval()), P("wrong_signature.pt"),
                   _extra_files={stsl_meta.META_NAME: good_meta})
    torch.manual_seed(7)
    torch.jit.save(torch.jit.script(TinyUNet(ch=1).eval()), P("wrong_channels.pt"),
                   _extra_files={stsl_meta.META_NAME: good_meta.replace("sample_shape = 2,8,8",
                                                                  "sample_shape = 3,8,8")})
    torch.jit.save(torch.jit.script(OneChannelOut().eval()), P("wrong_output.pt"),
                   _extra_files={stsl_meta.META_NAME: good_meta})
    torch.manual_seed(8)
    torch.jit.save(torch.jit.script(NotDifferentiable().eval()), P("not_differentiable.pt"),
                   _extra_files={stsl_meta.META_NAME: good_meta})
    torch.manual_seed(9)
    torch.jit.save(torch.jit.script(BatchOfOne().eval()), P("batch_one.pt"),
                   _extra_files={stsl_meta.META_NAME: good_meta})
    total = sum(os.path.getsize(P(f)) for f in os.listdir(outdir))
    print(f"wrote {len(os.listdir(outdir))} files, {total} bytes, into {outdir}")


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else os.path.join(HERE, "fixtures"))
