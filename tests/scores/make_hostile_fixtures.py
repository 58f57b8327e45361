#!/usr/bin/python3
"""Generate the hostile model files of tests/scores/test_hostile_models.c (issue 17).

    /usr/bin/python3 tests/scores/make_hostile_fixtures.py tests/scores/fixtures

Needs Debian's python3-torch, like tests/scores/make_fixtures.py (run that first: the truncated
files are cut from its unet_eps.pt).  Every file here must give a clear status and a one-line
message, never a crash or an abort inside libtorch:

  hostile_trunc_NN.pt      unet_eps.pt cut to NN% of its bytes (zip central directory lost, or
                           records cut inside)
  hostile_flipped.pt       unet_eps.pt with 64 bytes inside the archive overwritten
  hostile_role_ae.pt       a UNet whose record says role = autoencoder (no encode/decode)
  hostile_ae_as_unet.pt    an autoencoder whose record says role = unet (forward(x) only)
  hostile_beta.pt          record: beta_end = 1.5 (not a schedule)
  hostile_timesteps.pt     record: timesteps = 2000000000
  hostile_shape_odd.pt     record: sample_shape = 2,9,9 (the UNet's skip concat fails on 9x9)
  hostile_shape_huge.pt    record: sample_shape = 2,100000,100000
  hostile_channels.pt      record: sample_shape = 4096,8,8 (the first conv takes 2 channels)
  hostile_shape_big.pt     an identity UNet whose record says sample_shape = 1,4096,4096: within the
                           image limits, over the probe's (STSL_MAX_MODEL_SAMPLE_VALUES, 2^22)
  hostile_nan.pt           forward returns NaN everywhere
  hostile_nan_late.pt      forward returns NaN for t < 300 only (fails part-way through a run)
  hostile_inf_grad.pt      finite forward, but its VJP is NaN (sqrt at 0)
  hostile_batch3.pt        returns one channel too few when the batch is 3 or more
  hostile_batch_drop.pt    returns a batch of 1 for any batch of 2 or more
  hostile_slow.pt          a fraction of a second per call (400 chained 256x256 matmuls): runs must be
                           cancellable within one call
"""
import os
import sys

if os.environ.get("PYTHONHASHSEED") != "0":
    os.environ["PYTHONHASHSEED"] = "0"
    os.execv(sys.executable, [sys.executable] + sys.argv)

import torch  # noqa: E402
import torch.nn as nn  # noqa: E402

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "..", "scripts"))
sys.path.insert(0, HERE)
from stsl_export import meta as stsl_meta  # noqa: E402
from make_fixtures import TinyAE, TinyUNet  # noqa: E402

torch.set_num_threads(1)
SHAPE = (2, 8, 8)


class _OnTinyUNet(nn.Module):
    """A hostile model built on the well-behaved TinyUNet (self.net), made first."""

    def __init__(self):
        super().__init__()
        self.net = TinyUNet()


class NaNOut(nn.Module):
    def __init__(self):
        super().__init__()
        self.c = nn.Conv2d(2, 2, 3, padding=1)

    def forward(self, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        return self.c(x) * float("nan")


class NaNLate(_OnTinyUNet):
    def forward(self, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        out = self.net(x, t)
        late = (t < 300.0).view(-1, 1, 1, 1).expand_as(out)
        return torch.where(late, torch.full_like(out, float("nan")), out)


class NaNGrad(_OnTinyUNet):
    """sqrt(relu(x) * 0): the value is 0, the gradient at 0 is inf * 0 = NaN."""

    def forward(self, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        return self.net(x, t) + torch.sqrt(torch.relu(x) * 0.0)


class Batch3(_OnTinyUNet):
    def forward(self, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        out = self.net(x, t)
        if x.shape[0] >= 3:
            return out[:, :1]
        return out


class BatchDrop(_OnTinyUNet):
    def forward(self, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        out = self.net(x, t)
        if x.shape[0] >= 2:
            return out[:1]
        return out


class Identity(nn.Module):
    def forward(self, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        return x * 1.0


class Slow(_OnTinyUNet):
    def __init__(self, reps: int = 400):
        super().__init__()
        self.reps = reps
        self.w = nn.Parameter(torch.randn(256, 256) / 16.0)

    def forward(self, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        h = torch.ones(256, 256)
        for _ in range(self.reps):
            h = torch.tanh(h @ self.w)
        return self.net(x, t) + 0.0 * h.mean()


def main(outdir):
    P = lambda name: os.path.join(outdir, name)  # noqa: E731
    src = P("unet_eps.pt")
    if not os.path.exists(src):
        sys.exit(f"{src} is missing: run tests/scores/make_fixtures.py first")
    good = open(src, "rb").read()
    for pct in (10, 50, 90, 99):
        with open(P(f"hostile_trunc_{pct:02d}.pt"), "wb") as f:
            f.write(good[: len(good) * pct // 100])
    flipped = bytearray(good)
    mid = len(flipped) // 2
    flipped[mid: mid + 64] = bytes((b ^ 0x5A) for b in flipped[mid: mid + 64])
    with open(P("hostile_flipped.pt"), "wb") as f:
        f.write(bytes(flipped))

    meta = stsl_meta.make_record("unet", prediction="eps", schedule="linear", beta_start=1e-4,
                         beta_end=0.02, timesteps=1000, sample_shape=SHAPE)
    ae_meta = stsl_meta.make_record("autoencoder", image_shape=(1, 8, 8), latent_shape=(2, 4, 4),
                            latent_scale=0.5)

    def save(module, name, record):
        torch.jit.save(torch.jit.script(module.eval()), P(name), _extra_files={stsl_meta.META_NAME: record})

    torch.manual_seed(31)
    unet = TinyUNet()
    save(unet, "hostile_role_ae.pt", ae_meta)
    save(TinyAE(), "hostile_ae_as_unet.pt", meta)
    save(unet, "hostile_beta.pt", meta.replace("beta_end = 0.02", "beta_end = 1.5"))
    save(unet, "hostile_timesteps.pt", meta.replace("timesteps = 1000", "timesteps = 2000000000"))
    save(unet, "hostile_shape_odd.pt", meta.replace("sample_shape = 2,8,8", "sample_shape = 2,9,9"))
    save(unet, "hostile_shape_huge.pt",
         meta.replace("sample_shape = 2,8,8", "sample_shape = 2,100000,100000"))
    save(unet, "hostile_channels.pt", meta.replace("sample_shape = 2,8,8", "sample_shape = 4096,8,8"))
    save(Identity(), "hostile_shape_big.pt",
         meta.replace("sample_shape = 2,8,8", "sample_shape = 1,4096,4096"))
    torch.manual_seed(32)
    save(NaNOut(), "hostile_nan.pt", meta)
    save(NaNLate(), "hostile_nan_late.pt", meta)
    save(NaNGrad(), "hostile_inf_grad.pt", meta)
    save(Batch3(), "hostile_batch3.pt", meta)
    save(BatchDrop(), "hostile_batch_drop.pt", meta)
    save(Slow(), "hostile_slow.pt", meta)
    for line in meta.splitlines():
        assert "\n" not in line
    names = sorted(f for f in os.listdir(outdir) if f.startswith("hostile_"))
    print(f"wrote {len(names)} hostile files into {outdir}")


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else os.path.join(HERE, "fixtures"))
