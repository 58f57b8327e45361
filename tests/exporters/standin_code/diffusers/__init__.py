"""libstsl test stand-in for the diffusers interfaces the sd-unet / sd-vae front-ends use (see
../README.md): small modules, not the diffusers architectures."""
import json
import os
from types import SimpleNamespace

import torch
import torch.nn as nn
import torch.nn.functional as F

__version__ = "0.19.0-standin"


class _Configured(nn.Module):
    @classmethod
    def from_config(cls, config):
        kw = {k: v for k, v in config.items() if not k.startswith("_")}
        model = cls(**kw)
        model.config = SimpleNamespace(**kw)
        return model

    @classmethod
    def from_pretrained(cls, path, subfolder=None):
        """config.json and diffusion_pytorch_model.bin of `path`[/`subfolder`]."""
        folder = os.path.join(path, subfolder or "")
        with open(os.path.join(folder, "config.json"), encoding="utf-8") as f:
            model = cls.from_config(json.load(f))
        model.load_state_dict(torch.load(os.path.join(folder, "diffusion_pytorch_model.bin"),
                                         map_location="cpu"))
        return model.eval()


class _Out:
    def __init__(self, sample):
        self.sample = sample


def _temb(t, dim):
    half = dim // 2
    f = torch.exp(-torch.arange(half, dtype=torch.float32) * (9.2103 / half))
    a = t[:, None].float() * f[None]
    return torch.cat([torch.sin(a), torch.cos(a)], dim=-1)


class _CrossAttention(nn.Module):
    def __init__(self, ch, ctx_dim):
        super().__init__()
        self.norm = nn.GroupNorm(4, ch)
        self.q = nn.Linear(ch, ch, bias=False)
        self.k = nn.Linear(ctx_dim, ch, bias=False)
        self.v = nn.Linear(ctx_dim, ch, bias=False)
        self.o = nn.Linear(ch, ch)

    def forward(self, x, ctx):
        b, c, h, w = x.shape
        s = self.norm(x).reshape(b, c, h * w).transpose(1, 2)
        a = torch.softmax(self.q(s) @ self.k(ctx).transpose(1, 2) / c ** 0.5, dim=-1)
        return x + self.o(a @ self.v(ctx)).transpose(1, 2).reshape(b, c, h, w)


class UNet2DConditionModel(_Configured):
    def __init__(self, sample_size=8, in_channels=4, out_channels=4, block_out_channels=(8, 16),
                 cross_attention_dim=12, **_unused):
        super().__init__()
        c0, c1 = block_out_channels[0], block_out_channels[-1]
        self.c0 = c0
        self.time = nn.Sequential(nn.Linear(c0, 2 * c0), nn.SiLU(), nn.Linear(2 * c0, c1))
        self.conv_in = nn.Conv2d(in_channels, c0, 3, padding=1)
        self.down = nn.Conv2d(c0, c1, 3, stride=2, padding=1)
        self.attn = _CrossAttention(c1, cross_attention_dim)
        self.up = nn.Conv2d(c1, c0, 3, padding=1)
        self.conv_out = nn.Conv2d(2 * c0, out_channels, 3, padding=1)

    def forward(self, sample, timestep, encoder_hidden_states, return_dict=True):
        if not torch.is_tensor(timestep):
            timestep = torch.tensor([timestep], dtype=torch.float32)
        timestep = timestep.expand(sample.shape[0])
        e = self.time(_temb(timestep, self.c0))
        h0 = F.silu(self.conv_in(sample))
        h = F.silu(self.down(h0)) + e[:, :, None, None]
        h = self.attn(h, encoder_hidden_states)
        h = F.interpolate(F.silu(self.up(h)), scale_factor=2.0, mode="nearest")
        out = self.conv_out(torch.cat([h, h0], dim=1))
        return _Out(out) if return_dict else (out,)


class UNet2DModel(_Configured):
    """Unconditional: forward(sample, timestep, return_dict)."""

    def __init__(self, sample_size=16, in_channels=3, out_channels=3, block_out_channels=(8, 16),
                 **_unused):
        super().__init__()
        c0, c1 = block_out_channels[0], block_out_channels[-1]
        self.c0 = c0
        self.time = nn.Sequential(nn.Linear(c0, c1), nn.SiLU())
        self.conv_in = nn.Conv2d(in_channels, c0, 3, padding=1)
        self.down = nn.Conv2d(c0, c1, 3, stride=2, padding=1)
        self.up = nn.Conv2d(c1, c0, 3, padding=1)
        self.conv_out = nn.Conv2d(2 * c0, out_channels, 3, padding=1)

    def forward(self, sample, timestep, return_dict=True):
        h0 = F.silu(self.conv_in(sample))
        h = F.silu(self.down(h0)) + self.time(_temb(timestep, self.c0))[:, :, None, None]
        h = F.interpolate(F.silu(self.up(h)), scale_factor=2.0, mode="nearest")
        out = self.conv_out(torch.cat([h, h0], dim=1))
        return _Out(out) if return_dict else (out,)


class _Dist:
    def __init__(self, moments):
        self.mean, self.logvar = moments.chunk(2, dim=1)


class AutoencoderKL(_Configured):
    def __init__(self, in_channels=3, latent_channels=4, block_out_channels=(8, 8),
                 sample_size=16, scaling_factor=0.18215, **_unused):
        super().__init__()
        c = block_out_channels[0]
        n = len(block_out_channels) - 1
        enc = [nn.Conv2d(in_channels, c, 3, padding=1)]
        dec = [nn.Conv2d(latent_channels, c, 3, padding=1)]
        for _ in range(n):
            enc += [nn.SiLU(), nn.Conv2d(c, c, 3, stride=2, padding=1)]
            dec += [nn.SiLU(), nn.Upsample(scale_factor=2.0, mode="nearest"),
                    nn.Conv2d(c, c, 3, padding=1)]
        enc += [nn.SiLU(), nn.Conv2d(c, 2 * latent_channels, 1)]
        dec += [nn.SiLU(), nn.Conv2d(c, in_channels, 3, padding=1)]
        self.encoder = nn.Sequential(*enc)
        self.decoder = nn.Sequential(*dec)

    def encode(self, x, return_dict=True):
        d = _Dist(self.encoder(x))
        return SimpleNamespace(latent_dist=d) if return_dict else (d,)

    def decode(self, z, return_dict=True):
        out = torch.tanh(self.decoder(z))
        return _Out(out) if return_dict else (out,)
