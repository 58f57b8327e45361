"""Build eager PyTorch modules with libstsl's contract forward(x, t) -> eps from the user's own copy of
the upstream model code and their checkpoint.  The upstream code is never shipped with libstsl: the
user passes it with --code DIR (or has it importable).

guided-diffusion / ADM (github.com/openai/guided-diffusion, and forks such as DPS's):
    the UNet is built by the code's create_model(**config) (guided_diffusion.script_util, else
    guided_diffusion.unet); the attention blocks' custom autograd checkpoint function is bypassed
    (it cannot be traced and only saves training memory); fp16 weights are converted to float32;
    with learn_sigma the net's 2C output channels are cut to the first C (eps): the learned
    variance is dropped, and the record says so (learned_sigma = dropped); a class-conditional
    net gets a fixed class label stored in the file.

Stable Diffusion / latent diffusion through diffusers (verified with diffusers 0.19.0 on Debian's
torch 1.13): UNet2DConditionModel with a fixed conditioning embedding (a tensor file; optionally
classifier-free guidance with an unconditional embedding and a scale), AutoencoderKL with its
scaling_factor; schedule and prediction type from the pipeline's scheduler_config.json.
"""
from __future__ import annotations

import contextlib
import hashlib
import importlib
import inspect
import io
import json
import os
import sys
from typing import Dict, Optional, Tuple

import torch
import torch.nn as nn

from .safetensors_lite import SafetensorsError, load_file


class FrontendError(RuntimeError):
    """A user-facing problem with the code, the checkpoint or the options (one line)."""


# ------------------------------------------------------------------------------------------
# Checkpoints
# ------------------------------------------------------------------------------------------

def load_state_dict(path: str) -> Dict[str, torch.Tensor]:
    """A state dict from a .safetensors, .pt, .pth, .bin or .ckpt file (unwrapping the usual
    'state_dict' / 'model' / 'ema' containers)."""
    if not os.path.isfile(path):
        raise FrontendError(f"checkpoint {path} does not exist")
    try:
        if path.endswith(".safetensors"):
            sd = load_file(path)
        else:
            try:
                sd = torch.load(path, map_location="cpu")
            except Exception as e:  # torch's message is one line for these
                raise FrontendError(f"cannot read checkpoint {path}: {first_line(e)}") from None
    except SafetensorsError as e:
        raise FrontendError(str(e)) from None
    for key in ("state_dict", "model", "ema", "params_ema"):
        if isinstance(sd, dict) and key in sd and isinstance(sd[key], dict):
            sd = sd[key]
            break
    if isinstance(sd, nn.Module):
        sd = sd.state_dict()
    if not isinstance(sd, dict) or not all(isinstance(v, torch.Tensor) for v in sd.values()):
        raise FrontendError(f"checkpoint {path} is not a state dict of tensors")
    return sd


def apply_state_dict(model: nn.Module, sd: Dict[str, torch.Tensor], path: str) -> None:
    """Load every weight (floats converted to float32) or fail naming what does not fit: a
    checkpoint that does not load is an error, never a silently random-initialised export."""
    own = model.state_dict()
    missing = [k for k in own if k not in sd]
    unexpected = [k for k in sd if k not in own]
    wrong = [f"{k} {tuple(sd[k].shape)} vs {tuple(own[k].shape)}" for k in own
             if k in sd and tuple(sd[k].shape) != tuple(own[k].shape)]
    if missing or unexpected or wrong:
        parts = []
        if missing:
            parts.append(f"{len(missing)} weight(s) missing (e.g. {', '.join(missing[:3])})")
        if unexpected:
            parts.append(f"{len(unexpected)} unexpected (e.g. {', '.join(unexpected[:3])})")
        if wrong:
            parts.append(f"{len(wrong)} of another shape (e.g. {wrong[0]})")
        raise FrontendError(f"checkpoint {path} does not fit the model built from the config: "
                            + "; ".join(parts) + " -- check the config (image size, channels, "
                            "learn_sigma, class_cond, ...)")
    sd = {k: (v.float() if v.is_floating_point() else v) for k, v in sd.items()}
    model.load_state_dict(sd, strict=True)


class upstream_output_to_stderr(contextlib.ContextDecorator):
    """Sends what the upstream code prints to stdout (DPS's create_model prints "Got exception:
    ... / Randomly initialize" whenever its own model_path is empty, which it always is here:
    the weights are loaded afterwards, from --checkpoint) to stderr, each line prefixed, so that
    the exporter's stdout carries only its own report."""

    def __enter__(self):
        self._buf = io.StringIO()
        self._redirect = contextlib.redirect_stdout(self._buf)
        self._redirect.__enter__()
        return self

    def __exit__(self, *exc):
        self._redirect.__exit__(*exc)
        for line in self._buf.getvalue().splitlines():
            if line.strip():
                sys.stderr.write(f"export_torchscript: the upstream code printed: {line}\n")
        return False


def first_line(e: BaseException) -> str:
    """The first non-empty line of an exception's text (TorchScript errors start with a blank
    line and run over many), with the exception type when the text is empty."""
    for line in str(e).splitlines():
        if line.strip():
            return line.strip()
    return type(e).__name__


def _add_code_path(code: Optional[str], package: str) -> None:
    """Make `package` importable from the user's code directory (the repository root, or a
    directory holding the package, or src/ of it)."""
    if not code:
        return
    code = os.path.abspath(code)
    for cand in (code, os.path.join(code, "src"), os.path.dirname(code)):
        if os.path.isdir(os.path.join(cand, package)):
            if cand not in sys.path:
                sys.path.insert(0, cand)
            return
    raise FrontendError(f"--code {code}: no '{package}' package there (give the repository root "
                        f"or the directory that holds {package}/)")


def _import(name: str, code: Optional[str]):
    try:
        return importlib.import_module(name)
    except ImportError as e:
        where = f" from --code {code}" if code else " (pass the upstream code with --code DIR)"
        raise FrontendError(f"cannot import {name}{where}: {first_line(e)}") from None


# ------------------------------------------------------------------------------------------
# guided-diffusion (ADM)
# ------------------------------------------------------------------------------------------

ADM_KEYS = ("image_size", "num_channels", "num_res_blocks", "channel_mult", "learn_sigma",
            "class_cond", "use_checkpoint", "attention_resolutions", "num_heads",
            "num_head_channels", "num_heads_upsample", "use_scale_shift_norm", "dropout",
            "resblock_updown", "use_fp16", "use_new_attention_order")


def read_adm_config(path: Optional[str], overrides: Dict[str, str]) -> Dict[str, object]:
    """The create_model arguments from a YAML/JSON config (DPS's configs/model_config.yaml,
    or guided-diffusion's flags written as key: value) and key=value overrides."""
    cfg: Dict[str, object] = {}
    if path:
        with open(path, encoding="utf-8") as f:
            text = f.read()
        try:
            if path.endswith(".json"):
                cfg = json.loads(text)
            else:
                import yaml  # python3-yaml (Debian), a torch dependency
                cfg = yaml.safe_load(text)
        except Exception as e:
            raise FrontendError(f"cannot parse {path}: {first_line(e)}") from None
        if not isinstance(cfg, dict):
            raise FrontendError(f"{path} is not a key: value mapping")
    for k, v in overrides.items():
        cfg[k] = _config_value(v)
    return cfg


def _config_value(v: str) -> object:
    """A --set value as YAML would read it: bool, int, float, else the string (dropout=0.1 is a
    float: create_model compares it with numbers)."""
    low = v.lower()
    if low in ("true", "yes", "false", "no"):
        return low in ("true", "yes")
    for kind in (int, float):
        try:
            return kind(v)
        except ValueError:
            pass
    return v


class _AdmEps(nn.Module):
    """forward(x, t) -> the eps channels of a guided-diffusion UNet (fixed class label)."""

    def __init__(self, net: nn.Module, channels: int, class_label: Optional[int]):
        super().__init__()
        self.net = net
        self.channels = channels
        if class_label is None:
            self.y = None
        else:
            self.register_buffer("y", torch.tensor([class_label], dtype=torch.long))

    def forward(self, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        if self.y is None:
            out = self.net(x, t)
        else:
            out = self.net(x, t, y=self.y.expand(x.shape[0]))
        return out[:, : self.channels]


def _bypass_checkpoints(package: str) -> list:
    """guided-diffusion wraps attention in a custom autograd Function (gradient checkpointing)
    that torch.jit.trace cannot record; it only saves training memory, so calling the function
    directly is the same computation.  Replaces `checkpoint` in every module of the package."""
    def direct(func, inputs, params, flag):  # guided_diffusion.nn.checkpoint's signature
        return func(*inputs)
    patched = []
    for name, mod in list(sys.modules.items()):
        if mod is None or not (name == package or name.startswith(package + ".")):
            continue
        if callable(getattr(mod, "checkpoint", None)) and not isinstance(mod.checkpoint, type):
            mod.checkpoint = direct
            patched.append(name)
    return patched


def build_adm(code: Optional[str], config: Dict[str, object], checkpoint: Optional[str],
              class_label: Optional[int] = None, random_init: bool = False,
              package: str = "guided_diffusion") -> Tuple[nn.Module, Dict[str, str], int]:
    """(eager forward(x, t) module, extra metadata, image size)."""
    _add_code_path(code, package)
    create = None
    for modname in (package + ".script_util", package + ".unet"):
        try:
            mod = importlib.import_module(modname)
        except ImportError:
            continue
        create = getattr(mod, "create_model", None)
        if create:
            break
    if create is None:
        _import(package + ".script_util", code)  # raises with the reason
        raise FrontendError(f"{package} has no create_model (guided-diffusion's script_util)")
    _import(package + ".unet", code)
    cfg = {k: v for k, v in config.items() if k in ADM_KEYS}
    accepted = inspect.signature(create).parameters
    cfg = {k: v for k, v in cfg.items() if k in accepted}
    for k in ("use_fp16", "use_checkpoint"):   # float32 weights below; no training memory saving
        if k in accepted:
            cfg[k] = False
    if "image_size" not in cfg or "num_channels" not in cfg or "num_res_blocks" not in cfg:
        raise FrontendError("the config needs at least image_size, num_channels and "
                            "num_res_blocks (DPS's configs/model_config.yaml has them)")
    if isinstance(cfg.get("channel_mult"), (list, tuple)):
        cfg["channel_mult"] = ",".join(str(c) for c in cfg["channel_mult"])
    for k in ("attention_resolutions", "channel_mult"):
        if k in cfg and not isinstance(cfg[k], str):
            cfg[k] = str(cfg[k])
    try:
        net = create(**cfg)
    except Exception as e:
        raise FrontendError(f"create_model failed: {first_line(e)}") from None
    if checkpoint:
        apply_state_dict(net, load_state_dict(checkpoint), checkpoint)
    elif not random_init:
        raise FrontendError("give --checkpoint FILE (--random-init only for measurements)")
    class_cond = bool(cfg.get("class_cond"))
    if class_cond and class_label is None:
        raise FrontendError("the model is class-conditional: give --class-label N (0..999)")
    if not class_cond and class_label is not None:
        raise FrontendError("--class-label given but the config has class_cond false")
    _bypass_checkpoints(package)
    out_ch = getattr(net, "out_channels", None)
    in_ch = getattr(net, "in_channels", 3)
    learn_sigma = bool(cfg.get("learn_sigma")) or (out_ch is not None and out_ch == 2 * in_ch)
    extra = {"source": "guided-diffusion",
             "learned_sigma": "dropped" if learn_sigma else "none"}
    if class_cond:
        extra["class_label"] = str(class_label)
    if checkpoint:
        extra["checkpoint"] = os.path.basename(checkpoint)
    else:
        extra["weights"] = "random-init (measurement only)"
    model = _AdmEps(net.float().eval(), in_ch, class_label).eval()
    return model, extra, int(cfg["image_size"])


# ------------------------------------------------------------------------------------------
# Stable Diffusion through diffusers
# ------------------------------------------------------------------------------------------

WEIGHT_NAMES = ("diffusion_pytorch_model.safetensors", "diffusion_pytorch_model.bin",
                "diffusion_pytorch_model.fp16.safetensors", "diffusion_pytorch_model.fp16.bin")


def _diffusers_model(code: Optional[str], cls_name: str, folder: str, random_init: bool):
    _add_code_path(code, "diffusers")
    diffusers = _import("diffusers", code)
    cls = getattr(diffusers, cls_name, None)
    if cls is None:
        raise FrontendError(f"diffusers has no {cls_name}")
    cfg_path = os.path.join(folder, "config.json")
    if not os.path.isfile(cfg_path):
        raise FrontendError(f"{folder} has no config.json (give the pipeline directory that "
                            f"holds unet/ and vae/)")
    with open(cfg_path, encoding="utf-8") as f:
        config = json.load(f)
    if config.get("_class_name", cls_name) != cls_name:
        raise FrontendError(f"{cfg_path} describes a {config['_class_name']}, not a {cls_name}")
    try:
        model = cls.from_config(config)
    except Exception as e:
        raise FrontendError(f"{cls_name}.from_config({cfg_path}) failed: {first_line(e)}") from None
    weights = next((os.path.join(folder, w) for w in WEIGHT_NAMES
                    if os.path.isfile(os.path.join(folder, w))), None)
    if weights:
        apply_state_dict(model, load_state_dict(weights), weights)
    elif not random_init:
        raise FrontendError(f"{folder} has none of {', '.join(WEIGHT_NAMES)}")
    return model.float().eval(), config, weights


def read_scheduler(pipeline: str) -> Dict[str, object]:
    """schedule keywords of export_unet from the pipeline's scheduler/scheduler_config.json
    (Stable Diffusion v1.x defaults when absent)."""
    path = os.path.join(pipeline, "scheduler", "scheduler_config.json")
    cfg = {}
    if os.path.isfile(path):
        with open(path, encoding="utf-8") as f:
            cfg = json.load(f)
    sched = {"scaled_linear": "scaled-linear", "linear": "linear",
             "squaredcos_cap_v2": "cosine"}.get(cfg.get("beta_schedule", "scaled_linear"))
    if sched is None:
        raise FrontendError(f"{path}: beta_schedule {cfg['beta_schedule']!r} is not supported")
    pred = {"epsilon": "eps", "v_prediction": "v", "sample": "x0"}.get(
        cfg.get("prediction_type", "epsilon"))
    if pred is None:
        raise FrontendError(f"{path}: prediction_type {cfg['prediction_type']!r} is not supported")
    return {"schedule": sched, "prediction": pred,
            "beta_start": float(cfg.get("beta_start", 0.00085)),
            "beta_end": float(cfg.get("beta_end", 0.012)),
            "timesteps": int(cfg.get("num_train_timesteps", 1000))}


def load_embedding(path: str, dim: int) -> torch.Tensor:
    """A conditioning embedding [L, D] or [1, L, D] from a .pt (a tensor, or a dict holding one)
    or .safetensors file, as float32 [1, L, D]."""
    if path.endswith(".safetensors"):
        try:
            d = load_file(path)
        except SafetensorsError as e:
            raise FrontendError(str(e)) from None
    else:
        if not os.path.isfile(path):
            raise FrontendError(f"embedding file {path} does not exist")
        try:
            d = torch.load(path, map_location="cpu")
        except Exception as e:
            raise FrontendError(f"cannot read embedding {path}: {first_line(e)}") from None
    if isinstance(d, dict):
        tensors = [v for v in d.values() if isinstance(v, torch.Tensor)]
        if len(tensors) != 1:
            raise FrontendError(f"{path} must hold one tensor, it holds {len(tensors)}")
        d = tensors[0]
    if not isinstance(d, torch.Tensor):
        raise FrontendError(f"{path} does not hold a tensor")
    e = d.detach().float()
    if e.dim() == 2:
        e = e[None]
    if e.dim() != 3 or e.shape[0] != 1 or e.shape[2] != dim:
        raise FrontendError(f"{path}: embedding of shape {tuple(d.shape)}; the UNet needs "
                            f"[L, {dim}] or [1, L, {dim}] (cross_attention_dim {dim})")
    if not torch.isfinite(e).all():
        raise FrontendError(f"{path}: the embedding holds NaN or Inf")
    return e.contiguous()


class _CondUNet(nn.Module):
    """forward(x, t) of a UNet2DConditionModel with a fixed text embedding, optionally with
    classifier-free guidance: eps = eps_u + s (eps_c - eps_u) (two evaluations per call)."""

    def __init__(self, unet: nn.Module, cond: torch.Tensor, uncond: Optional[torch.Tensor],
                 scale: float):
        super().__init__()
        self.unet = unet
        self.register_buffer("cond", cond)
        self.guided = uncond is not None
        self.register_buffer("uncond", uncond if uncond is not None else torch.zeros(0))
        self.scale = float(scale)

    def forward(self, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        n = x.shape[0]
        c = self.cond.expand(n, -1, -1)
        if not self.guided:
            return self.unet(x, t, encoder_hidden_states=c, return_dict=False)[0]
        u = self.uncond.expand(n, -1, -1)
        out = self.unet(torch.cat([x, x]), torch.cat([t, t]),
                        encoder_hidden_states=torch.cat([u, c]), return_dict=False)[0]
        eu, ec = out.chunk(2)
        return eu + self.scale * (ec - eu)


def build_sd_unet(code: Optional[str], pipeline: str, cond: Optional[str],
                  uncond: Optional[str] = None, guidance_scale: float = 1.0,
                  random_init: bool = False, random_cond_len: int = 77):
    """(eager forward(x, t) module, export_unet keywords, extra metadata)."""
    unet, config, weights = _diffusers_model(code, "UNet2DConditionModel",
                                             os.path.join(pipeline, "unet"), random_init)
    dim = config.get("cross_attention_dim")
    if isinstance(dim, (list, tuple)):
        dim = dim[0]
    if not isinstance(dim, int):
        raise FrontendError("the UNet config has no cross_attention_dim")
    if cond:
        c = load_embedding(cond, dim)
    elif random_init:
        c = torch.randn(1, random_cond_len, dim, generator=torch.Generator().manual_seed(7))
    else:
        raise FrontendError("give --cond EMB (the text embedding, e.g. of the empty prompt "
                            "\"\"; docs/real-models.md shows how to compute it)")
    u = load_embedding(uncond, dim) if uncond else None
    if u is None and guidance_scale != 1.0:
        raise FrontendError("--guidance-scale needs --uncond EMB (the empty-prompt embedding)")
    if u is not None and guidance_scale == 1.0:
        raise FrontendError("--uncond without --guidance-scale S (S != 1) has no effect")
    kw = read_scheduler(pipeline)
    size = int(config.get("sample_size", 64))
    ch = int(config.get("in_channels", 4))
    kw["sample_shape"] = (ch, size, size)
    extra = {"source": "diffusers UNet2DConditionModel",
             "conditioning": "fixed embedding sha256:" + hashlib.sha256(
                 c.numpy().tobytes()).hexdigest()[:16] + f" [{c.shape[1]}x{c.shape[2]}]"}
    if u is not None:
        extra["guidance_scale"] = repr(float(guidance_scale))
    extra["weights"] = os.path.basename(weights) if weights else "random-init (measurement only)"
    return _CondUNet(unet, c, u, guidance_scale).eval(), kw, extra


class DiffusersVAE(nn.Module):
    """AutoencoderKL as the library's autoencoder contract: encode (the posterior mean), decode."""

    def __init__(self, vae: nn.Module):
        super().__init__()
        self.vae = vae

    def encode(self, x):
        return self.vae.encode(x).latent_dist.mean

    def decode(self, z):
        return self.vae.decode(z).sample

    def forward(self, x):
        return self.decode(self.encode(x))


def build_sd_vae(code: Optional[str], pipeline: str, image_size: Optional[int] = None,
                 random_init: bool = False):
    """(eager module with encode/decode, export_autoencoder keywords, extra metadata)."""
    vae, config, weights = _diffusers_model(code, "AutoencoderKL",
                                            os.path.join(pipeline, "vae"), random_init)
    size = int(image_size or config.get("sample_size", 512))
    f = 2 ** (len(config.get("block_out_channels", [0, 0, 0, 0])) - 1)
    if size % f:
        raise FrontendError(f"image size {size} is not a multiple of the VAE's factor {f}")
    kw = {"image_shape": (int(config.get("in_channels", 3)), size, size),
          "latent_shape": (int(config.get("latent_channels", 4)), size // f, size // f),
          "latent_scale": float(config.get("scaling_factor", 0.18215))}
    extra = {"source": "diffusers AutoencoderKL",
             "weights": os.path.basename(weights) if weights else "random-init (measurement only)"}
    return DiffusersVAE(vae).eval(), kw, extra
