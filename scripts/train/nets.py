"""Network definitions shared by the training, export and evaluation scripts.

All modules are TorchScript-scriptable (torch 1.13): forward signatures are typed and
no Python-only constructs are used in forward paths.
"""
import math

import torch
import torch.nn as nn
import torch.nn.functional as F


def _gn(c: int) -> nn.GroupNorm:
    return nn.GroupNorm(8 if c % 8 == 0 else 1, c)


def timestep_embedding(t: torch.Tensor, dim: int) -> torch.Tensor:
    """Sinusoidal embedding of float timesteps t [N] -> [N, dim]."""
    half = dim // 2
    freqs = torch.exp(torch.arange(half, dtype=torch.float32, device=t.device)
                      * (-math.log(10000.0) / half))
    args = t.to(torch.float32).unsqueeze(1) * freqs.unsqueeze(0)
    return torch.cat([torch.cos(args), torch.sin(args)], dim=1)


class ResBlock(nn.Module):
    def __init__(self, cin: int, cout: int, temb: int, dropout: float = 0.0):
        super().__init__()
        self.n1 = _gn(cin)
        self.c1 = nn.Conv2d(cin, cout, 3, padding=1)
        self.emb = nn.Linear(temb, cout)
        self.n2 = _gn(cout)
        self.drop = nn.Dropout(dropout)
        self.c2 = nn.Conv2d(cout, cout, 3, padding=1)
        self.skip = nn.Conv2d(cin, cout, 1) if cin != cout else nn.Identity()

    def forward(self, x: torch.Tensor, emb: torch.Tensor) -> torch.Tensor:
        h = self.c1(F.silu(self.n1(x)))
        h = h + self.emb(emb).unsqueeze(-1).unsqueeze(-1)
        h = self.c2(self.drop(F.silu(self.n2(h))))
        return self.skip(x) + h


class Attn(nn.Module):
    """Single-head self-attention over spatial positions."""

    def __init__(self, c: int):
        super().__init__()
        self.norm = _gn(c)
        self.qkv = nn.Conv2d(c, 3 * c, 1)
        self.proj = nn.Conv2d(c, c, 1)
        self.scale = 1.0 / math.sqrt(c)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        n, c, h, w = x.shape
        qkv = self.qkv(self.norm(x)).reshape(n, 3, c, h * w)
        q, k, v = qkv[:, 0], qkv[:, 1], qkv[:, 2]
        a = torch.softmax(torch.bmm(q.transpose(1, 2), k) * self.scale, dim=-1)  # n, hw, hw
        o = torch.bmm(v, a.transpose(1, 2)).reshape(n, c, h, w)
        return x + self.proj(o)


class _EpsNet(nn.Module):
    """What the eps-prediction nets share, under the attribute names their checkpoints use: the
    timestep embedding's MLP (t1, t2), made first, and the output head (outn, outc), made last by
    _make_head and zero-initialised so that training starts from eps = 0.  Construction order is
    the seeded initialisation order: keep it."""

    def __init__(self, temb: int):
        super().__init__()
        self.temb_dim = temb
        self.t1 = nn.Linear(temb, temb)
        self.t2 = nn.Linear(temb, temb)

    def _make_head(self, ch: int, cout: int) -> None:
        self.outn = _gn(ch)
        self.outc = nn.Conv2d(ch, cout, 3, padding=1)
        nn.init.zeros_(self.outc.weight)
        nn.init.zeros_(self.outc.bias)

    def embed(self, t: torch.Tensor) -> torch.Tensor:
        return self.t2(F.silu(self.t1(timestep_embedding(t, self.temb_dim))))

    def head(self, h: torch.Tensor) -> torch.Tensor:
        return self.outc(F.silu(self.outn(h)))


class PixelUNet(_EpsNet):
    """eps-prediction UNet for 1x28x28 images: 28 -> 14 -> 7, channels (c1, c2, c3),
    one residual block per level on the way down, one (with skip concat) on the way up,
    a 7x7 middle with self-attention."""

    def __init__(self, cin: int = 1, c1: int = 32, c2: int = 64, c3: int = 64, temb: int = 128):
        super().__init__(temb)
        self.inc = nn.Conv2d(cin, c1, 3, padding=1)
        self.d1 = ResBlock(c1, c1, temb)
        self.down1 = nn.Conv2d(c1, c1, 3, stride=2, padding=1)      # 28 -> 14
        self.d2 = ResBlock(c1, c2, temb)
        self.down2 = nn.Conv2d(c2, c2, 3, stride=2, padding=1)      # 14 -> 7
        self.d3 = ResBlock(c2, c3, temb)
        self.m1 = ResBlock(c3, c3, temb)
        self.attn = Attn(c3)
        self.m2 = ResBlock(c3, c3, temb)
        self.u3 = ResBlock(c3 + c3, c3, temb)
        self.up2 = nn.Conv2d(c3, c2, 3, padding=1)                  # after nearest x2, 7 -> 14
        self.u2 = ResBlock(c2 + c2, c2, temb)
        self.up1 = nn.Conv2d(c2, c1, 3, padding=1)                  # 14 -> 28
        self.u1 = ResBlock(c1 + c1, c1, temb)
        self._make_head(c1, cin)

    def forward(self, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        emb = self.embed(t)
        h = self.inc(x)
        s1 = self.d1(h, emb)
        h = self.down1(s1)
        s2 = self.d2(h, emb)
        h = self.down2(s2)
        s3 = self.d3(h, emb)
        h = self.m1(s3, emb)
        h = self.attn(h)
        h = self.m2(h, emb)
        h = self.u3(torch.cat([h, s3], dim=1), emb)
        h = self.up2(F.interpolate(h, scale_factor=2.0, mode="nearest"))
        h = self.u2(torch.cat([h, s2], dim=1), emb)
        h = self.up1(F.interpolate(h, scale_factor=2.0, mode="nearest"))
        h = self.u1(torch.cat([h, s1], dim=1), emb)
        return self.head(h)


class LatentNet(_EpsNet):
    """eps-prediction residual net for cin x 7 x 7 latents, no downsampling (7 is odd):
    conv in, `nblocks` time-conditioned residual blocks at 7x7 with one self-attention
    in the middle, conv out."""

    def __init__(self, cin: int = 4, ch: int = 96, nblocks: int = 4, temb: int = 128):
        super().__init__(temb)
        self.inc = nn.Conv2d(cin, ch, 3, padding=1)
        half = nblocks // 2
        self.blocks_a = nn.ModuleList([ResBlock(ch, ch, temb) for _ in range(half)])
        self.attn = Attn(ch)
        self.blocks_b = nn.ModuleList([ResBlock(ch, ch, temb) for _ in range(nblocks - half)])
        self._make_head(ch, cin)

    def forward(self, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        emb = self.embed(t)
        h = self.inc(x)
        for b in self.blocks_a:
            h = b(h, emb)
        h = self.attn(h)
        for b in self.blocks_b:
            h = b(h, emb)
        return self.head(h)


class _AEBlock(nn.Module):
    def __init__(self, cin: int, cout: int):
        super().__init__()
        self.n1 = _gn(cin)
        self.c1 = nn.Conv2d(cin, cout, 3, padding=1)
        self.n2 = _gn(cout)
        self.c2 = nn.Conv2d(cout, cout, 3, padding=1)
        self.skip = nn.Conv2d(cin, cout, 1) if cin != cout else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.c1(F.silu(self.n1(x)))
        h = self.c2(F.silu(self.n2(h)))
        return self.skip(x) + h


class VAE(nn.Module):
    """KL autoencoder 1x28x28 <-> zc x 7 x 7 (two stride-2 downsamples).
    encode(x) returns the posterior mean (unscaled); decode(z) the image in [-1,1] (unclamped)."""

    def __init__(self, cin: int = 1, zc: int = 4, c1: int = 32, c2: int = 64):
        super().__init__()
        self.e_in = nn.Conv2d(cin, c1, 3, padding=1)
        self.e_b1 = _AEBlock(c1, c1)
        self.e_down1 = nn.Conv2d(c1, c1, 3, stride=2, padding=1)   # 14
        self.e_b2 = _AEBlock(c1, c2)
        self.e_down2 = nn.Conv2d(c2, c2, 3, stride=2, padding=1)   # 7
        self.e_b3 = _AEBlock(c2, c2)
        self.e_n = _gn(c2)
        self.e_out = nn.Conv2d(c2, 2 * zc, 3, padding=1)
        self.d_in = nn.Conv2d(zc, c2, 3, padding=1)
        self.d_b3 = _AEBlock(c2, c2)
        self.d_up2 = nn.Conv2d(c2, c2, 3, padding=1)               # 14
        self.d_b2 = _AEBlock(c2, c1)
        self.d_up1 = nn.Conv2d(c1, c1, 3, padding=1)               # 28
        self.d_b1 = _AEBlock(c1, c1)
        self.d_n = _gn(c1)
        self.d_out = nn.Conv2d(c1, cin, 3, padding=1)
        self.zc = zc

    def moments(self, x: torch.Tensor):
        h = self.e_b1(self.e_in(x))
        h = self.e_b2(self.e_down1(h))
        h = self.e_b3(self.e_down2(h))
        m = self.e_out(F.silu(self.e_n(h)))
        mean, logvar = torch.chunk(m, 2, dim=1)
        return mean, torch.clamp(logvar, -30.0, 20.0)

    @torch.jit.export
    def encode(self, x: torch.Tensor) -> torch.Tensor:
        mean, _ = self.moments(x)
        return mean

    @torch.jit.export
    def decode(self, z: torch.Tensor) -> torch.Tensor:
        h = self.d_b3(self.d_in(z))
        h = self.d_b2(self.d_up2(F.interpolate(h, scale_factor=2.0, mode="nearest")))
        h = self.d_b1(self.d_up1(F.interpolate(h, scale_factor=2.0, mode="nearest")))
        return self.d_out(F.silu(self.d_n(h)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.decode(self.encode(x))


class Classifier(nn.Module):
    """Small CNN for Fashion-MNIST; input Nx1x28x28 in [-1,1]; forward -> logits [N,10];
    features(x) -> penultimate features [N,128] (for a Frechet distance)."""

    def __init__(self, nclass: int = 10, feat: int = 128):
        super().__init__()
        self.b1 = nn.Sequential(
            nn.Conv2d(1, 32, 3, padding=1), nn.BatchNorm2d(32), nn.ReLU(),
            nn.Conv2d(32, 32, 3, padding=1), nn.BatchNorm2d(32), nn.ReLU(),
            nn.MaxPool2d(2))                                      # 14
        self.b2 = nn.Sequential(
            nn.Conv2d(32, 64, 3, padding=1), nn.BatchNorm2d(64), nn.ReLU(),
            nn.Conv2d(64, 64, 3, padding=1), nn.BatchNorm2d(64), nn.ReLU(),
            nn.MaxPool2d(2))                                      # 7
        self.b3 = nn.Sequential(
            nn.Conv2d(64, 128, 3, padding=1), nn.BatchNorm2d(128), nn.ReLU())
        self.drop = nn.Dropout(0.3)
        self.fc1 = nn.Linear(128, feat)  # after global average pooling
        self.fc2 = nn.Linear(feat, nclass)

    @torch.jit.export
    def features(self, x: torch.Tensor) -> torch.Tensor:
        h = self.b3(self.b2(self.b1(x)))
        h = torch.mean(h, dim=(2, 3))
        return F.relu(self.fc1(h))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(self.drop(self.features(x)))
