"""A small UNet with guided-diffusion's calling conventions."""
from abc import abstractmethod

import torch
import torch.nn as nn
import torch.nn.functional as F

from .nn import checkpoint, timestep_embedding


class TimestepBlock(nn.Module):
    @abstractmethod
    def forward(self, x, emb):
        """x and the timestep embedding."""


class TimestepEmbedSequential(nn.Sequential, TimestepBlock):
    def forward(self, x, emb):
        for layer in self:
            x = layer(x, emb) if isinstance(layer, TimestepBlock) else layer(x)
        return x


def norm(ch):
    return nn.GroupNorm(4, ch)


class ResBlock(TimestepBlock):
    def __init__(self, ch, emb_ch, out_ch, scale_shift):
        super().__init__()
        self.scale_shift = scale_shift
        self.inp = nn.Sequential(norm(ch), nn.SiLU(), nn.Conv2d(ch, out_ch, 3, padding=1))
        self.emb = nn.Linear(emb_ch, 2 * out_ch if scale_shift else out_ch)
        self.out_norm = norm(out_ch)
        self.out = nn.Sequential(nn.SiLU(), nn.Conv2d(out_ch, out_ch, 3, padding=1))
        self.skip = nn.Identity() if ch == out_ch else nn.Conv2d(ch, out_ch, 1)

    def forward(self, x, emb):
        h = self.inp(x)
        e = self.emb(F.silu(emb)).type(h.dtype)[..., None, None]
        if self.scale_shift:
            scale, shift = e.chunk(2, dim=1)
            h = self.out_norm(h) * (1 + scale) + shift
        else:
            h = self.out_norm(h + e)
        return self.skip(x) + self.out(h)


class AttentionBlock(nn.Module):
    def __init__(self, ch, num_heads=1):
        super().__init__()
        self.heads = num_heads
        self.norm = norm(ch)
        self.qkv = nn.Conv1d(ch, 3 * ch, 1)
        self.proj = nn.Conv1d(ch, ch, 1)

    def forward(self, x):
        # as upstream: always checkpointed, whatever use_checkpoint says
        return checkpoint(self._forward, (x,), self.parameters(), True)

    def _forward(self, x):
        b, c, h, w = x.shape
        qkv = self.qkv(self.norm(x).reshape(b, c, h * w))
        q, k, v = qkv.reshape(b * self.heads, 3 * c // self.heads, h * w).chunk(3, dim=1)
        a = torch.softmax(torch.einsum("bct,bcs->bts", q, k) / (c // self.heads) ** 0.5, dim=-1)
        out = torch.einsum("bts,bcs->bct", a, v).reshape(b, c, h * w)
        return x + self.proj(out).reshape(b, c, h, w)


class UNetModel(nn.Module):
    def __init__(self, image_size, in_channels, model_channels, out_channels, num_res_blocks,
                 attention_resolutions, channel_mult=(1, 2), num_classes=None, use_fp16=False,
                 num_heads=1, use_scale_shift_norm=False, **_unused):
        super().__init__()
        self.in_channels = in_channels
        self.out_channels = out_channels
        self.num_classes = num_classes
        self.dtype = torch.float16 if use_fp16 else torch.float32
        self.model_channels = model_channels
        emb = 4 * model_channels
        self.time_embed = nn.Sequential(nn.Linear(model_channels, emb), nn.SiLU(),
                                        nn.Linear(emb, emb))
        if num_classes is not None:
            self.label_emb = nn.Embedding(num_classes, emb)
        self.input_blocks = nn.ModuleList([TimestepEmbedSequential(
            nn.Conv2d(in_channels, model_channels, 3, padding=1))])
        chans, ch, ds = [model_channels], model_channels, 1
        for level, mult in enumerate(channel_mult):
            for _ in range(num_res_blocks):
                layers = [ResBlock(ch, emb, mult * model_channels, use_scale_shift_norm)]
                ch = mult * model_channels
                if ds in attention_resolutions:
                    layers.append(AttentionBlock(ch, num_heads))
                self.input_blocks.append(TimestepEmbedSequential(*layers))
                chans.append(ch)
            if level != len(channel_mult) - 1:
                self.input_blocks.append(TimestepEmbedSequential(
                    nn.Conv2d(ch, ch, 3, stride=2, padding=1)))
                chans.append(ch)
                ds *= 2
        self.middle_block = TimestepEmbedSequential(
            ResBlock(ch, emb, ch, use_scale_shift_norm), AttentionBlock(ch, num_heads))
        self.output_blocks = nn.ModuleList([])
        for level, mult in list(enumerate(channel_mult))[::-1]:
            for i in range(num_res_blocks + 1):
                layers = [ResBlock(ch + chans.pop(), emb, mult * model_channels,
                                   use_scale_shift_norm)]
                ch = mult * model_channels
                if ds in attention_resolutions:
                    layers.append(AttentionBlock(ch, num_heads))
                if level and i == num_res_blocks:
                    layers.append(nn.Upsample(scale_factor=2, mode="nearest"))
                    ds //= 2
                self.output_blocks.append(TimestepEmbedSequential(*layers))
        self.out = nn.Sequential(norm(ch), nn.SiLU(), nn.Conv2d(ch, out_channels, 3, padding=1))
        if use_fp16:
            self.input_blocks.half()
            self.middle_block.half()
            self.output_blocks.half()

    def forward(self, x, timesteps, y=None):
        assert (y is not None) == (self.num_classes is not None), "y iff class-conditional"
        emb = self.time_embed(timestep_embedding(timesteps, self.model_channels))
        if self.num_classes is not None:
            emb = emb + self.label_emb(y)
        hs, h = [], x.type(self.dtype)
        for block in self.input_blocks:
            h = block(h, emb)
            hs.append(h)
        h = self.middle_block(h, emb)
        for block in self.output_blocks:
            h = block(torch.cat([h, hs.pop()], dim=1), emb)
        return self.out(h.type(x.dtype))
