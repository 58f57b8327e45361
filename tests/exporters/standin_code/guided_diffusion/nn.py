"""Helpers: sinusoidal timestep embedding and gradient checkpointing through a custom autograd
Function (the part torch.jit.trace cannot record)."""
import math

import torch


def timestep_embedding(timesteps, dim, max_period=10000):
    half = dim // 2
    freqs = torch.exp(-math.log(max_period) * torch.arange(half, dtype=torch.float32) / half)
    freqs = freqs.to(device=timesteps.device)  # a device the tracer fixes as a constant
    args = timesteps[:, None].float() * freqs[None]
    return torch.cat([torch.cos(args), torch.sin(args)], dim=-1)


class CheckpointFunction(torch.autograd.Function):
    """Runs func without storing activations; recomputes them in backward."""

    @staticmethod
    def forward(ctx, func, n_inputs, *args):
        ctx.func = func
        ctx.inputs = list(args[:n_inputs])
        ctx.params = list(args[n_inputs:])
        with torch.no_grad():
            return func(*ctx.inputs)

    @staticmethod
    def backward(ctx, *grads):
        inputs = [x.detach().requires_grad_(True) for x in ctx.inputs]
        with torch.enable_grad():
            out = ctx.func(*inputs)
        g = torch.autograd.grad(out, inputs + ctx.params, grads, allow_unused=True)
        return (None, None) + tuple(g)


def checkpoint(func, inputs, params, flag):
    if flag:
        return CheckpointFunction.apply(func, len(inputs), *(tuple(inputs) + tuple(params)))
    return func(*inputs)
