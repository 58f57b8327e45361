#!/usr/bin/python3
"""Export PyTorch models to libstsl's model-file contract (docs/models.md).

A model file is a TorchScript module saved with ``torch.jit.save`` whose extra file
``stsl_meta.txt`` carries the metadata record.  This module writes such files and checks them by
loading them back and comparing outputs with the original model.

Importable functions (training scripts use these)::

    from export_torchscript import export_unet, export_autoencoder, export_encoder_decoder
    export_unet(model, "ddpm.pt", sample_shape=(1, 28, 28), prediction="eps",
                schedule="linear", beta_start=1e-4, beta_end=0.02, timesteps=1000,
                name="fmnist-ddpm-28")
    export_autoencoder(vae, "vae.pt", image_shape=(3, 64, 64), latent_shape=(4, 8, 8),
                       latent_scale=0.18215)

    make_meta(...) / parse_meta(text) / read_meta(path) / check_file(path)
    (the record's functions are stsl_export.meta's: make_record, parse_record, read_record)
    wrap_diffusers_unet(unet) / wrap_diffusers_vae(vae)    (when diffusers is importable)

Command line::

    export_torchscript.py unet --model pkg.module:factory [--state-dict ckpt.pt] --out f.pt \
        --sample-shape 1,28,28 [--prediction eps] [--schedule linear --beta-start 1e-4 ...]
    export_torchscript.py autoencoder --model pkg.module:factory --out vae.pt \
        --image-shape 3,64,64 --latent-shape 4,8,8 --latent-scale 0.18215
    export_torchscript.py diffusers-unet --pretrained DIR [--subfolder unet] --out f.pt ...
    export_torchscript.py diffusers-vae --pretrained DIR [--subfolder vae] --out vae.pt ...
    export_torchscript.py check FILE      # read the record back, run one forward, print both
    export_torchscript.py meta FILE       # print the record

Run it with a python that has torch (on Debian: /usr/bin/python3 with python3-torch).
"""
from __future__ import annotations

import argparse
import importlib
import io
import itertools
import json
import math
import os
import re
import sys
from typing import Dict, Iterable, Optional, Sequence, Tuple

try:
    import torch
    import torch.nn as nn
except ImportError:  # the first python3 on PATH may be one without torch (pyenv, venv)
    sys.stderr.write("export_torchscript: this python (%s) has no torch; run it with Debian's "
                     "/usr/bin/python3 (apt-get install python3-torch) or a python where "
                     "'import torch' works\n" % sys.executable)
    sys.exit(1)

# PyTorch 2.x (2.15 measured) marks torch.jit.trace/script/load deprecated with a FutureWarning
# at every call.  TorchScript is the library's file format (libtorch's C++ API loads nothing
# else), so the warning tells the user nothing actionable and would bury this script's one-line
# errors; other warnings stay on.
import warnings  # noqa: E402
warnings.filterwarnings("ignore", category=FutureWarning, message=r".*torch\.jit\.")

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from stsl_export import frontends  # noqa: E402

# The record: one writer and reader for every script (scripts/stsl_export/meta.py).
from stsl_export.meta import (FORMAT_VERSION, META_NAME, PREDICTIONS, ROLES,  # noqa: E402,F401
                              SCHEDULES, SPACES, RecordError, _shape, make_record, parse_record,
                              read_record, save_module)

# Earlier names of the record's functions, kept for scripts that import them from here.
make_meta = make_record
parse_meta = parse_record
read_meta = read_record


class ExportError(RecordError):
    """The model or the requested metadata does not fit the contract."""


# ------------------------------------------------------------------------------------------
# Wrappers
# ------------------------------------------------------------------------------------------

class _UNetWrapper(nn.Module):
    """forward(x, t) -> Tensor around a module whose output is a Tensor, a tuple (first item) or
    an object with `.sample` (diffusers)."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model

    def forward(self, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        out = self.model(x, t)
        if hasattr(out, "sample"):
            out = out.sample
        elif isinstance(out, (tuple, list)):
            out = out[0]
        return out


def wrap_diffusers_unet(unet: nn.Module) -> nn.Module:
    """A diffusers UNet2DModel (unconditional) as forward(x, t).  Traced, since diffusers modules
    are not scriptable.  A UNet2DConditionModel needs its encoder_hidden_states: use
    stsl_export.frontends.build_sd_unet (command sd-unet), which stores a fixed embedding."""

    class DiffusersUNet(nn.Module):
        def __init__(self, unet):
            super().__init__()
            self.unet = unet

        def forward(self, x, t):
            return self.unet(x, t, return_dict=False)[0]

    return DiffusersUNet(unet)


def wrap_diffusers_vae(vae: nn.Module) -> nn.Module:
    """A diffusers AutoencoderKL with deterministic encode (posterior mean) and decode."""
    return frontends.DiffusersVAE(vae)


class _AEHalf(nn.Module):
    """One method of an autoencoder (self.ae) as a module's forward: the exported file's."""

    def __init__(self, ae):
        super().__init__()
        self.ae = ae


class _Encoder(_AEHalf):
    def forward(self, x):
        return self.ae.encode(x)


class _Decoder(_AEHalf):
    def forward(self, z):
        return self.ae.decode(z)


class _RangeAE(nn.Module):
    """Maps the library's -1,1 images to a model's lo,hi range and back."""

    def __init__(self, ae, lo: float, hi: float):
        super().__init__()
        self.ae = ae
        self.lo, self.hi = float(lo), float(hi)

    def encode(self, x):
        return self.ae.encode((x + 1) * 0.5 * (self.hi - self.lo) + self.lo)

    def decode(self, z):
        return (self.ae.decode(z) - self.lo) / (self.hi - self.lo) * 2 - 1

    def forward(self, x):
        return self.decode(self.encode(x))


def with_value_range(ae: nn.Module, lo: float, hi: float) -> nn.Module:
    """Wrap an autoencoder working on images in [lo, hi] so that it takes and gives -1,1."""
    return ae if (lo, hi) == (-1, 1) else _RangeAE(ae, lo, hi)


# ------------------------------------------------------------------------------------------
# Export
# ------------------------------------------------------------------------------------------

def _to_script(model: nn.Module, how: str, example: Optional[Dict[str, tuple]]):
    model = model.eval()
    if isinstance(model, torch.jit.ScriptModule):
        return model
    if how == "script":
        return _script(model)
    if how == "trace":
        if not example:
            raise ExportError("tracing needs example inputs")
        if len(example) == 1 and "forward" in example:
            return trace_checked(model, example["forward"])
        return trace_checked(model, example)
    if how == "auto":
        try:
            return torch.jit.script(model)
        except Exception as e:  # not scriptable: trace
            print(f"export_torchscript: scripting failed ({frontends.first_line(e)}); tracing",
                  file=sys.stderr)
            return _to_script(model, "trace", example)
    raise ExportError(f"unknown conversion {how!r} (script, trace, auto)")


def _script(model: nn.Module):
    try:
        return torch.jit.script(model)
    except Exception as e:
        raise ExportError(f"scripting failed: {frontends.first_line(e)} (try --how trace)") from None


def _custom_functions():
    """Subclasses of torch.autograd.Function defined outside torch (user code)."""
    out, stack = [], list(torch.autograd.Function.__subclasses__())
    while stack:
        c = stack.pop()
        stack.extend(c.__subclasses__())
        if not c.__module__.startswith("torch"):
            out.append(c)
    return out


def trace_checked(model: nn.Module, example):
    """torch.jit.trace (a tuple of inputs: forward; a dict: trace_module), failing with one line
    that names the cause.  A custom autograd Function (e.g. guided-diffusion's gradient
    checkpointing) cannot be recorded by the tracer, whose own error is an opaque
    'unordered_map::at': calls to such functions are watched and named."""
    called = []
    patched = []
    for cls in _custom_functions():
        orig = cls.apply

        def watch(*args, _orig=orig, _cls=cls):
            called.append(f"{_cls.__module__}.{_cls.__qualname__}")
            return _orig(*args)
        patched.append((cls, "apply" in cls.__dict__, cls.__dict__.get("apply")))
        cls.apply = staticmethod(watch)
    try:
        if isinstance(example, dict):
            return torch.jit.trace_module(model, example, check_trace=False)
        return torch.jit.trace(model, example, check_trace=False)
    except Exception as e:
        if called:
            raise ExportError(f"tracing failed ({frontends.first_line(e)}): the model calls the "
                              f"custom autograd function {called[0]}.apply, which "
                              "torch.jit.trace cannot record; call the wrapped function directly "
                              "for export (the guided-diffusion front-end does: "
                              "export_torchscript.py adm)") from None
        raise ExportError(f"tracing failed: {frontends.first_line(e)}") from None
    finally:
        for cls, had, orig in patched:
            if had:
                cls.apply = orig
            else:
                del cls.apply


# ------------------------------------------------------------------------------------------
# Device portability
# ------------------------------------------------------------------------------------------
# The tracer records the device of every tensor the model makes itself as a constant: traced on
# the CPU, guided-diffusion's `torch.arange(half).to(device=timesteps.device)` becomes
# `aten::arange(..., device="cpu")` and `aten::to(..., device="cpu")`, and the file then fails
# on CUDA with "Expected all tensors to be on the same device".  Scripted code that names a
# device (`torch.zeros(3, device="cpu")`) has the same constant.  Weights and tensor constants
# are not the problem: a loader maps them to its device.  The files written here therefore
# replace every Device constant of every method by the device of that method's first tensor
# input (prim::device), which is what a model meant; the library's loader does the same to
# files written elsewhere (shim/torchscript_shim.cpp), and device_pins() finds what is left.


def _device_constants(block):
    """prim::Constant nodes of type Device in `block` and its nested blocks."""
    for node in block.nodes():
        if node.kind() == "prim::Constant" and node.output().type().kind() == "DeviceObjType":
            yield node
        for sub in node.blocks():
            yield from _device_constants(sub)


def _graphs(sm):
    """(qualified method name, graph) of every method of `sm` and its submodules."""
    for prefix, mod in sm.named_modules():
        for name in mod._c._method_names():
            yield (f"{prefix}.{name}" if prefix else name), mod._c._get_method(name).graph


def make_device_portable(sm) -> int:
    """Replace, in place, every Device constant of the graphs of `sm` (a ScriptModule) by the
    device of its method's first tensor input.  Returns the number replaced; a method that
    creates a device constant without having a tensor input keeps it (device_pins names it)."""
    replaced = 0
    for _, graph in _graphs(sm):
        pins = list(_device_constants(graph))
        tensors = [v for v in graph.inputs() if v.type().kind() == "TensorType"]
        if not pins or not tensors:
            continue
        node = graph.create("prim::device", [tensors[0]])
        node.output().setType(torch._C.DeviceObjType.get())
        node.insertBefore(next(iter(graph.nodes())))
        for pin in pins:
            pin.output().replaceAllUsesWith(node.output())
            pin.destroy()
            replaced += 1
    return replaced


def _where(node) -> str:
    """The source location the tracer or compiler recorded for a node ("file.py:65"), or ''."""
    m = re.search(r"# (\S+?:\d+)(?::\d+)?\s*$", str(node).strip())
    return m.group(1) if m else ""


def device_pins(sm) -> list:
    """What fixes a device in the methods the library calls (forward, encode, decode, every
    call inlined): one line per pin, e.g. "forward: aten::arange makes its result on cpu
    (make_fixtures.py:65)".  Empty for a device-portable module."""
    found = []
    for name in sm._c._method_names():
        if name not in ("forward", "encode", "decode"):
            continue
        graph = sm._c._get_method(name).graph.copy()
        torch._C._jit_pass_inline(graph)
        for pin in _device_constants(graph):
            users = [u.user for u in pin.output().uses()] or [pin]
            for user in users:
                where = _where(user)
                found.append(f"{name}: {user.kind()} fixes device {pin.output().toIValue()}"
                             + (f" ({where})" if where else ""))
    return found


def _save(sm, path: str, meta: str) -> None:
    """Save a device-portable copy of `sm` whose tensors are stored for the CPU (the caller's
    module, possibly on a GPU, is left as it is); refuse one that still pins a device."""
    buf = io.BytesIO()
    torch.jit.save(sm, buf)
    buf.seek(0)
    portable = torch.jit.load(buf, map_location="cpu")
    make_device_portable(portable)
    pins = device_pins(portable)
    if pins:
        raise ExportError("the exported graph fixes a device that the library cannot move: "
                          + "; ".join(pins[:3]) + (f" (and {len(pins) - 3} more)"
                                                   if len(pins) > 3 else ""))
    save_module(portable, path, meta)


def _compare(name: str, ref: torch.Tensor, got: torch.Tensor, rtol: float, atol: float) -> float:
    if ref.shape != got.shape:
        raise ExportError(f"{name}: exported output has shape {tuple(got.shape)}, original "
                          f"{tuple(ref.shape)}")
    err = (ref - got).abs().max().item() if ref.numel() else 0.0
    tol = atol + rtol * ref.abs().max().item()
    if not err <= tol:
        raise ExportError(f"{name}: exported module differs from the original by {err:.3g} "
                          f"(tolerance {tol:.3g})")
    return err


def _example_t(n: int, timesteps: int, gen: torch.Generator) -> torch.Tensor:
    return torch.rand(n, generator=gen, dtype=torch.float64).mul(timesteps - 1).float()


def _device_of(model: nn.Module) -> torch.device:
    """Where the module's weights are: the example inputs are made there (drawn on the CPU, so
    the same values on any device), so that a module on a GPU traces and checks on it."""
    for tensor in itertools.chain(model.parameters(), model.buffers()):
        return tensor.device
    return torch.device("cpu")


def _script_unet(model: nn.Module, how: str, x: torch.Tensor, t: torch.Tensor):
    """Script the model itself when it is scriptable and returns a Tensor; otherwise trace it
    through a wrapper that picks the prediction out of tuples / diffusers outputs."""
    if isinstance(model, torch.jit.ScriptModule):
        return model
    if how in ("script", "auto"):
        try:
            sm = torch.jit.script(model.eval())
            rets = sm.forward.schema.returns
            if len(rets) == 1 and str(rets[0].type) == "Tensor":
                return sm
            if how == "script":
                raise ExportError("forward must return a Tensor to be scripted; use how='trace'")
            print("export_torchscript: forward does not return a Tensor; tracing a wrapper",
                  file=sys.stderr)
        except ExportError:
            raise
        except Exception as e:
            _scripting_failed(e, how)
    elif how != "trace":
        raise ExportError(f"unknown conversion {how!r} (script, trace, auto)")
    return trace_checked(_UNetWrapper(model).eval(), (x, t))


def export_unet(model: nn.Module, path: str, *, sample_shape: Sequence[int],
                prediction: str = "eps", schedule: str = "linear", beta_start: float = 1e-4,
                beta_end: float = 0.02, cosine_s: float = 0.008, timesteps: int = 1000,
                space: str = "pixel", pairs_with: Optional[str] = None,
                name: Optional[str] = None, how: str = "auto", check: bool = True,
                batch: int = 2, rtol: float = 1e-4, atol: float = 1e-5,
                extra: Optional[Dict[str, str]] = None) -> str:
    """Export a noise-prediction network forward(x[N,C,H,W], t[N]) -> Tensor (a Tensor, a tuple
    whose first item is the prediction, or a diffusers output with .sample).  Returns path."""
    meta = make_meta("unet", name=name, prediction=prediction, schedule=schedule,
                     beta_start=beta_start, beta_end=beta_end, cosine_s=cosine_s,
                     timesteps=timesteps, sample_shape=sample_shape, space=space,
                     pairs_with=pairs_with, extra=extra)
    s = _shape(sample_shape, "sample_shape")
    gen = torch.Generator().manual_seed(1234)
    dev = _device_of(model)
    x = torch.randn(batch, *s, generator=gen).to(dev)
    t = _example_t(batch, timesteps, gen).to(dev)
    wrapped = model if isinstance(model, torch.jit.ScriptModule) else _UNetWrapper(model)
    sm = _script_unet(model, how, x, t)
    _save(sm, path, meta)
    if check:
        check_file(path, reference=wrapped, inputs=(x, t), rtol=rtol, atol=atol)
        if batch > 1:  # a trace that baked the batch size in fails here, not in the library
            check_file(path, reference=wrapped, inputs=(x[:1], t[:1]), rtol=rtol, atol=atol)
    return path


def export_autoencoder(model: nn.Module, path: str, *, image_shape: Sequence[int],
                       latent_shape: Sequence[int], latent_scale: float,
                       name: Optional[str] = None, how: str = "auto", check: bool = True,
                       value_range=(-1, 1), batch: int = 2, rtol: float = 1e-4,
                       atol: float = 1e-5, extra: Optional[Dict[str, str]] = None) -> str:
    """Export one module with encode(x) and decode(z) methods (unscaled latents; encode is
    deterministic, e.g. the posterior mean).  value_range: the model's own image range; the file
    then maps -1,1 to it."""
    model = with_value_range(model, *value_range)
    meta = make_meta("autoencoder", name=name, image_shape=image_shape,
                     latent_shape=latent_shape, latent_scale=latent_scale, extra=extra)
    gen = torch.Generator().manual_seed(1234)
    dev = _device_of(model)
    x = (torch.rand(batch, *_shape(image_shape, "image_shape"), generator=gen) * 2 - 1).to(dev)
    z = torch.randn(batch, *_shape(latent_shape, "latent_shape"), generator=gen).to(dev)
    if isinstance(model, torch.jit.ScriptModule):
        sm = model
    elif how in ("script", "auto"):
        try:
            sm = torch.jit.script(model.eval())
            for m in ("encode", "decode"):
                if not hasattr(sm, m):
                    raise ExportError(f"the scripted module has no method {m!r}: decorate it "
                                      "with @torch.jit.export")
        except ExportError:
            raise
        except Exception as e:
            _scripting_failed(e, how)
            sm = trace_checked(model.eval(), {"encode": (x,), "decode": (z,)})
    else:
        sm = trace_checked(model.eval(), {"encode": (x,), "decode": (z,)})
    _save(sm, path, meta)
    if check:
        check_file(path, reference=model, inputs=(x, z), rtol=rtol, atol=atol)
    return path


def export_encoder_decoder(model: nn.Module, encoder_path: str, decoder_path: str, *,
                           image_shape: Sequence[int], latent_shape: Sequence[int],
                           latent_scale: float, name: Optional[str] = None, how: str = "auto",
                           check: bool = True, value_range=(-1, 1), batch: int = 2,
                           rtol: float = 1e-4, atol: float = 1e-5) -> Tuple[str, str]:
    """Export the encode and decode methods of `model` as two files whose forward encodes /
    decodes (roles encoder and decoder)."""
    model = with_value_range(model, *value_range).eval()
    gen = torch.Generator().manual_seed(1234)
    dev = _device_of(model)
    x = (torch.rand(batch, *_shape(image_shape, "image_shape"), generator=gen) * 2 - 1).to(dev)
    z = torch.randn(batch, *_shape(latent_shape, "latent_shape"), generator=gen).to(dev)
    for role, wrapper, ex, p in (("encoder", _Encoder(model), x, encoder_path),
                                 ("decoder", _Decoder(model), z, decoder_path)):
        meta = make_meta(role, name=name, image_shape=image_shape, latent_shape=latent_shape,
                         latent_scale=latent_scale)
        sm = _to_script(wrapper.eval(), how, {"forward": (ex,)})
        _save(sm, p, meta)
        if check:
            check_file(p, reference=wrapper, inputs=(ex,), rtol=rtol, atol=atol)
    return encoder_path, decoder_path


def check_file(path: str, reference: Optional[nn.Module] = None, inputs: Optional[tuple] = None,
               rtol: float = 1e-4, atol: float = 1e-5, verbose: bool = False) -> Dict[str, str]:
    """Load a model file back as the library would: read and validate the record, check the
    methods, run them on inputs of the record's shapes (or `inputs`) and, when `reference` is
    given, compare with it.  The file is run on the device of `inputs` (the CPU without them)
    and must not fix a device in its graph (device_pins).  Returns the record."""
    meta = read_meta(path)
    if meta.get("stsl_model_format") != str(FORMAT_VERSION):
        raise ExportError(f"{path}: stsl_model_format must be {FORMAT_VERSION}")
    role = meta.get("role")
    device = inputs[0].device if inputs else torch.device("cpu")
    sm = torch.jit.load(path, map_location=device).eval()
    pins = device_pins(sm)
    if pins:
        raise ExportError(f"{path}: not device-portable, its graph fixes a device: "
                          + "; ".join(pins[:3]) + (f" (and {len(pins) - 3} more)"
                                                   if len(pins) > 3 else "")
                          + " -- export it again with this script")
    gen = torch.Generator().manual_seed(99)
    results = {}
    with torch.no_grad():
        if role == "unet":
            s = _shape(meta["sample_shape"], "sample_shape")
            T = int(meta["timesteps"])
            x, t = inputs if inputs else (torch.randn(2, *s, generator=gen),
                                          _example_t(2, T, gen))
            if tuple(x.shape[1:]) != s:
                raise ExportError(f"{path}: example input shape {tuple(x.shape)} is not "
                                  f"sample_shape {s}")
            out = sm(x, t)
            if not isinstance(out, torch.Tensor) or tuple(out.shape) != tuple(x.shape):
                raise ExportError(f"{path}: forward(x, t) must return a Tensor of x's shape, "
                                  f"got {getattr(out, 'shape', type(out))}")
            if reference is not None:
                results["forward"] = _compare("forward", reference.eval()(x, t), out, rtol, atol)
        elif role in ("autoencoder", "encoder", "decoder"):
            img = _shape(meta["image_shape"], "image_shape")
            lat = _shape(meta["latent_shape"], "latent_shape")
            calls = {"autoencoder": [("encode", img, lat), ("decode", lat, img)],
                     "encoder": [("forward", img, lat)], "decoder": [("forward", lat, img)]}[role]
            for i, (method, shp_in, shp_out) in enumerate(calls):
                if inputs:
                    xin = inputs[i]
                else:
                    xin = torch.randn(2, *shp_in, generator=gen)
                out = getattr(sm, method)(xin)
                if tuple(out.shape) != (xin.shape[0],) + tuple(shp_out):
                    raise ExportError(f"{path}: {method} returned shape {tuple(out.shape)}, "
                                      f"expected {(xin.shape[0],) + tuple(shp_out)}")
                if reference is not None:
                    results[method] = _compare(method, getattr(reference.eval(), method)(xin),
                                               out, rtol, atol)
        else:
            raise ExportError(f"{path}: role {role!r} is not one of {ROLES}")
    if verbose:
        for k, v in results.items():
            print(f"{path}: {k} matches the original (max abs diff {v:.3g})")
    return meta


# ------------------------------------------------------------------------------------------
# Command line
# ------------------------------------------------------------------------------------------

def _load_model(spec: str, state_dict: Optional[str]) -> nn.Module:
    if ":" not in spec:
        raise ExportError("--model takes module:factory (e.g. nets:make_unet)")
    mod_name, attr = spec.split(":", 1)
    sys.path.insert(0, ".")
    obj = getattr(importlib.import_module(mod_name), attr)
    model = obj() if callable(obj) and not isinstance(obj, nn.Module) else obj
    if state_dict:
        sd = torch.load(state_dict, map_location="cpu")
        for key in ("ema", "model", "state_dict"):
            if isinstance(sd, dict) and key in sd and isinstance(sd[key], dict):
                sd = sd[key]
                break
        model.load_state_dict(sd)
    return model.eval()


def _range(text: str):
    lo, hi = (float(v) for v in text.split(","))
    return lo, hi


def _frontend(a) -> int:
    """adm, sd-unet, sd-vae: build the eager module from the user's code and checkpoint, trace
    it, save it with its record, and compare the file with the eager module.  What the
    upstream code prints goes to stderr: stdout says only which file was written."""
    with frontends.upstream_output_to_stderr():
        _build_and_export(a)
    print(f"wrote {a.out}")
    return 0


def _build_and_export(a) -> None:
    torch.manual_seed(0)
    check = not a.no_check
    # the weights are frozen below (model.requires_grad_(False)), as the shim does at load:
    # otherwise tracing records an autograd graph through every parameter and holds its
    # activations (SD v1.5 UNet: over 13 GiB at batch 2)
    # upstream asserts on shapes and a batch>=64 branch (diffusers' upsampler) make the tracer
    # warn; the export is checked at batch 2 and 1 against the eager module instead
    warnings.filterwarnings("ignore", category=torch.jit.TracerWarning)
    if a.cmd == "adm":
        sets = {}
        for kv in a.set:
            if "=" not in kv:
                raise ExportError(f"--set {kv!r}: expected KEY=VALUE")
            k, v = kv.split("=", 1)
            sets[k.strip()] = v.strip()
        cfg = frontends.read_adm_config(a.config, sets)
        model, extra, size = frontends.build_adm(a.code, cfg, a.checkpoint, a.class_label,
                                                 a.random_init)
        model.requires_grad_(False)
        kw = {"schedule": a.schedule, "timesteps": a.timesteps, "prediction": "eps",
              "sample_shape": (3, size, size)}
        if a.schedule != "cosine":  # guided-diffusion's linear schedule, scaled to T steps
            kw.update(beta_start=1e-4 * 1000 / a.timesteps, beta_end=0.02 * 1000 / a.timesteps)
        export_unet(model, a.out, how="trace", name=a.name, extra=extra, check=check,
                    **kw)
    elif a.cmd == "sd-unet":
        model, kw, extra = frontends.build_sd_unet(a.code, a.pipeline, a.cond, a.uncond,
                                                   a.guidance_scale, a.random_init)
        model.requires_grad_(False)
        if a.prediction:
            kw["prediction"] = a.prediction
        export_unet(model, a.out, how="trace", name=a.name, extra=extra, space="latent",
                    pairs_with=os.path.basename(a.pairs_with), check=check, **kw)
    else:
        model, kw, extra = frontends.build_sd_vae(a.code, a.pipeline, a.image_size,
                                                  a.random_init)
        model.requires_grad_(False)
        export_autoencoder(model, a.out, how="trace", name=a.name, extra=extra, check=check,
                           **kw)


def _scripting_failed(e: Exception, how: str) -> None:
    """torch.jit.script raised e: an ExportError when scripting was asked for, else a note that
    the export falls back to tracing."""
    if how == "script":
        raise ExportError(f"scripting failed: {frontends.first_line(e)} (try --how trace)") from None
    print(f"export_torchscript: scripting failed ({frontends.first_line(e)}); tracing", file=sys.stderr)


def _model_and_how(a, own_cmd: str, class_name: str, wrap, check_config=None):
    """The model a unet or autoencoder command exports and how: the user's module:factory (command
    `own_cmd`) as --how says, or a diffusers `class_name` from --pretrained, wrapped and traced.
    check_config(a), when given, vets the pretrained folder before it is loaded."""
    if a.cmd == own_cmd:
        return _load_model(a.model, a.state_dict), a.how
    cls = _diffusers_class(class_name)
    kw = {"subfolder": a.subfolder} if a.subfolder else {}
    if check_config:
        check_config(a)
    return wrap(cls.from_pretrained(a.pretrained, **kw)), "trace"


def _check_unconditional(a) -> None:
    """diffusers-unet takes an unconditional UNet2DModel only."""
    cfgp = os.path.join(a.pretrained, a.subfolder or "", "config.json")
    if os.path.isfile(cfgp):
        with open(cfgp, encoding="utf-8") as f:
            cls = json.load(f).get("_class_name", "UNet2DModel")
        if cls != "UNet2DModel":
            raise ExportError(f"{cfgp} describes a {cls}: a conditional UNet needs "
                              "its conditioning, use 'sd-unet --pipeline DIR --cond "
                              "EMB' (docs/real-models.md)")


def _diffusers_class(name: str):
    """A model class of diffusers, or an ExportError when diffusers is not installed."""
    try:
        import diffusers  # type: ignore
    except ImportError:
        raise ExportError("diffusers is not importable in this python") from None
    return getattr(diffusers, name)


def main(argv: Optional[Iterable[str]] = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="cmd", required=True)

    def unet_args(p):
        p.add_argument("--out", required=True)
        p.add_argument("--sample-shape", required=True)
        p.add_argument("--prediction", default="eps", choices=PREDICTIONS)
        p.add_argument("--schedule", default="linear", choices=SCHEDULES)
        p.add_argument("--beta-start", type=float, default=1e-4)
        p.add_argument("--beta-end", type=float, default=0.02)
        p.add_argument("--cosine-s", type=float, default=0.008)
        p.add_argument("--timesteps", type=int, default=1000)
        p.add_argument("--space", default="pixel", choices=SPACES)
        p.add_argument("--pairs-with")
        p.add_argument("--name")
        p.add_argument("--how", default="auto", choices=("auto", "script", "trace"))

    def ae_args(p):
        p.add_argument("--out", help="one file with encode/decode")
        p.add_argument("--encoder-out")
        p.add_argument("--decoder-out")
        p.add_argument("--image-shape", required=True)
        p.add_argument("--latent-shape", required=True)
        p.add_argument("--latent-scale", type=float, required=True)
        p.add_argument("--value-range", type=_range, default=(-1.0, 1.0),
                       help="the model's own image range lo,hi (mapped from -1,1)")
        p.add_argument("--name")
        p.add_argument("--how", default="auto", choices=("auto", "script", "trace"))

    p = sub.add_parser("unet", help="a user nn.Module forward(x, t)")
    p.add_argument("--model", required=True, help="module:factory")
    p.add_argument("--state-dict")
    unet_args(p)
    p = sub.add_parser("autoencoder", help="a user nn.Module with encode/decode")
    p.add_argument("--model", required=True, help="module:factory")
    p.add_argument("--state-dict")
    ae_args(p)
    p = sub.add_parser("diffusers-unet", help="a diffusers UNet2DModel (needs diffusers)")
    p.add_argument("--pretrained", required=True)
    p.add_argument("--subfolder")
    unet_args(p)
    p = sub.add_parser("diffusers-vae", help="a diffusers AutoencoderKL (needs diffusers)")
    p.add_argument("--pretrained", required=True)
    p.add_argument("--subfolder")
    ae_args(p)
    p = sub.add_parser("adm", help="a guided-diffusion (ADM) UNet from its code and checkpoint")
    p.add_argument("--code", help="the guided-diffusion repository (or any directory holding "
                   "the guided_diffusion package); default: importable")
    p.add_argument("--config", help="YAML/JSON with create_model's arguments (DPS's "
                   "configs/model_config.yaml)")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="a create_model argument (repeatable), e.g. --set learn_sigma=true")
    p.add_argument("--checkpoint", help="the weights: .pt / .pth / .safetensors")
    p.add_argument("--class-label", type=int, help="class of a class-conditional model (fixed)")
    p.add_argument("--random-init", action="store_true",
                   help="export without weights (measurements of the architecture only)")
    p.add_argument("--out", required=True)
    p.add_argument("--schedule", default="linear", choices=SCHEDULES)
    p.add_argument("--timesteps", type=int, default=1000)
    p.add_argument("--name")
    p.add_argument("--no-check", action="store_true", help="skip the eager comparison")
    p = sub.add_parser("sd-unet", help="a Stable Diffusion UNet2DConditionModel (diffusers) "
                       "with a fixed conditioning embedding")
    p.add_argument("--code", help="the diffusers source (repository or its src/); default: "
                   "importable")
    p.add_argument("--pipeline", required=True, help="diffusers pipeline directory (unet/, "
                   "scheduler/)")
    p.add_argument("--cond", help="the conditioning embedding: a tensor [L, D] or [1, L, D] in "
                   ".pt or .safetensors (e.g. the empty prompt's)")
    p.add_argument("--uncond", help="unconditional embedding for classifier-free guidance")
    p.add_argument("--guidance-scale", type=float, default=1.0)
    p.add_argument("--prediction", choices=PREDICTIONS,
                   help="override the scheduler config's prediction_type")
    p.add_argument("--pairs-with", required=True, help="file name of the exported VAE")
    p.add_argument("--random-init", action="store_true",
                   help="no weights, random embedding (measurements of the architecture only)")
    p.add_argument("--out", required=True)
    p.add_argument("--name")
    p.add_argument("--no-check", action="store_true", help="skip the eager comparison")
    p = sub.add_parser("sd-vae", help="a Stable Diffusion AutoencoderKL (diffusers)")
    p.add_argument("--code")
    p.add_argument("--pipeline", required=True, help="diffusers pipeline directory (vae/)")
    p.add_argument("--image-size", type=int, help="default: the VAE config's sample_size")
    p.add_argument("--random-init", action="store_true")
    p.add_argument("--out", required=True)
    p.add_argument("--name")
    p.add_argument("--no-check", action="store_true", help="skip the eager comparison")
    p = sub.add_parser("check", help="load a file back and run it")
    p.add_argument("file")
    p = sub.add_parser("meta", help="print a file's record")
    p.add_argument("file")
    a = ap.parse_args(list(argv) if argv is not None else None)

    try:
        if a.cmd in ("adm", "sd-unet", "sd-vae"):
            return _frontend(a)
        if a.cmd in ("check", "meta"):
            meta = check_file(a.file) if a.cmd == "check" else read_meta(a.file)
            for k, v in meta.items():
                print(f"{k} = {v}")
            if a.cmd == "check":
                print(f"{a.file}: OK")
            return 0
        if a.cmd in ("unet", "diffusers-unet"):
            model, how = _model_and_how(a, "unet", "UNet2DModel", wrap_diffusers_unet,
                                        _check_unconditional)
            export_unet(model, a.out, sample_shape=_shape(a.sample_shape, "sample_shape"),
                        prediction=a.prediction, schedule=a.schedule, beta_start=a.beta_start,
                        beta_end=a.beta_end, cosine_s=a.cosine_s, timesteps=a.timesteps,
                        space=a.space, pairs_with=a.pairs_with, name=a.name, how=how)
            print(f"wrote {a.out}")
            return 0
        # autoencoders
        model, how = _model_and_how(a, "autoencoder", "AutoencoderKL", wrap_diffusers_vae)
        common = dict(image_shape=_shape(a.image_shape, "image_shape"),
                      latent_shape=_shape(a.latent_shape, "latent_shape"),
                      latent_scale=a.latent_scale, name=a.name, how=how,
                      value_range=a.value_range)
        if a.out:
            export_autoencoder(model, a.out, **common)
            print(f"wrote {a.out}")
        if a.encoder_out or a.decoder_out:
            if not (a.encoder_out and a.decoder_out):
                raise ExportError("--encoder-out and --decoder-out go together")
            export_encoder_decoder(model, a.encoder_out, a.decoder_out, **common)
            print(f"wrote {a.encoder_out} and {a.decoder_out}")
        if not (a.out or a.encoder_out):
            raise ExportError("give --out, or --encoder-out and --decoder-out")
        return 0
    except (RecordError, frontends.FrontendError) as e:
        print(f"export_torchscript: {e}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
