"""The stsl_meta.txt record of a libstsl model file (docs/models.md section 3): the one Python
writer and reader of it, for every script (the exporter, the training scripts, the test fixture
makers).  The C reader is src/models/meta.c; tests/models/test_record_roundtrip.py and
test_meta.c's round trip hold the two to the same grammar.

    make_record(role, ...) -> text       a record, validated as the library validates it
    parse_record(text) -> {key: value}   the library's grammar (raises RecordError)
    read_record(path) -> {key: value}    the record of a model file, without torch
    read_record_text(path) -> str        its text, as written
    save_module(module, path, record)    torch.jit.save with the record
    load_module(path) -> (module, text)  torch.jit.load on the CPU with the record's text

Only save_module and load_module need torch, and import it when called.
"""
from __future__ import annotations

import re
import zipfile
from typing import Dict, Optional, Sequence, Tuple

META_NAME = "stsl_meta.txt"
FORMAT_VERSION = 1
ROLES = ("unet", "autoencoder", "encoder", "decoder")   # what the library loads
OTHER_ROLES = ("classifier",)                            # files the library does not run
PREDICTIONS = ("eps", "v", "x0")
SCHEDULES = ("linear", "scaled-linear", "cosine")
SPACES = ("pixel", "latent")
MAX_BYTES = 64 * 1024
MAX_LINES = 256
_KEY_RE = re.compile(r"^[a-z0-9_]{1,64}$")

Shape = Tuple[int, int, int]


class RecordError(RuntimeError):
    """A record, or the values asked of one, that does not fit the contract."""


def _shape(value, key: str) -> Shape:
    if isinstance(value, str):
        value = [v.strip() for v in value.split(",")]
    try:
        s = tuple(int(v) for v in value)
    except (TypeError, ValueError):
        raise RecordError(f"{key} must be C,H,W integers, got {value!r}") from None
    if len(s) != 3 or min(s) < 1:
        raise RecordError(f"{key} must be three positive integers C,H,W, got {value!r}")
    return s  # type: ignore[return-value]


def _num(x: float) -> str:
    return repr(float(x))


def make_record(role: str, *, name: Optional[str] = None, prediction: str = "eps",
              schedule: str = "linear", beta_start: float = 1e-4, beta_end: float = 0.02,
              cosine_s: float = 0.008, timesteps: int = 1000,
              sample_shape: Optional[Sequence[int]] = None, space: str = "pixel",
              pairs_with: Optional[str] = None, image_shape: Optional[Sequence[int]] = None,
              latent_shape: Optional[Sequence[int]] = None,
              latent_scale: Optional[float] = None, value_range=(-1, 1),
              extra: Optional[Dict[str, str]] = None, comment: Optional[str] = None) -> str:
    """The text of a stsl_meta.txt record, validated as strictly as the library does.  `comment`
    (one line) opens the record as a '#' line; `extra` keys follow the contract's, in order.
    Role "classifier" (OTHER_ROLES: a file the library does not run, the evaluation classifier)
    takes image_shape and extra keys only."""
    if role not in ROLES + OTHER_ROLES:
        raise RecordError(f"role must be one of {ROLES + OTHER_ROLES}, got {role!r}")
    lines = []
    if comment:
        if "\n" in comment or "\r" in comment:
            raise RecordError("comment must be one line")
        lines.append(f"# {comment}")
    lines += [f"stsl_model_format = {FORMAT_VERSION}", f"role = {role}"]
    if name is not None:
        if "\n" in name or "\r" in name:
            raise RecordError("name must be one line")
        lines.append(f"name = {name.strip()}")
    lo, hi = (float(v) for v in value_range)
    if (lo, hi) != (-1.0, 1.0):
        raise RecordError("value_range must be -1,1 (wrap the model: see --value-range)")
    if role == "unet":
        if prediction not in PREDICTIONS:
            raise RecordError(f"prediction must be one of {PREDICTIONS}, got {prediction!r}")
        if schedule not in SCHEDULES:
            raise RecordError(f"schedule must be one of {SCHEDULES}, got {schedule!r}")
        if not 1 <= int(timesteps) <= 100000:
            raise RecordError("timesteps must be in 1..100000")
        if sample_shape is None:
            raise RecordError("a unet needs sample_shape")
        if space not in SPACES:
            raise RecordError(f"space must be one of {SPACES}, got {space!r}")
        if space == "latent" and not pairs_with:
            raise RecordError("a latent unet needs pairs_with (the autoencoder file name)")
        lines += [f"prediction = {prediction}", f"schedule = {schedule}"]
        if schedule == "cosine":
            lines.append(f"cosine_s = {_num(cosine_s)}")
        else:
            if not 0 < beta_start <= beta_end < 1:
                raise RecordError("need 0 < beta_start <= beta_end < 1")
            lines += [f"beta_start = {_num(beta_start)}", f"beta_end = {_num(beta_end)}"]
        s = _shape(sample_shape, "sample_shape")
        lines += [f"timesteps = {int(timesteps)}", "sample_shape = %d,%d,%d" % s,
                  f"space = {space}"]
        if pairs_with:
            lines.append(f"pairs_with = {pairs_with}")
    elif role in OTHER_ROLES:
        if image_shape is None:
            raise RecordError(f"role {role} needs image_shape")
        lines.append("image_shape = %d,%d,%d" % _shape(image_shape, "image_shape"))
    else:
        if image_shape is None or latent_shape is None or latent_scale is None:
            raise RecordError(f"role {role} needs image_shape, latent_shape and latent_scale")
        if not 1e-6 <= float(latent_scale) <= 1e6:
            raise RecordError("latent_scale must be in [1e-6, 1e6]")
        lines += ["image_shape = %d,%d,%d" % _shape(image_shape, "image_shape"),
                  "latent_shape = %d,%d,%d" % _shape(latent_shape, "latent_shape"),
                  f"latent_scale = {_num(latent_scale)}"]
    lines.append("value_range = -1,1")
    for k, v in (extra or {}).items():
        if not _KEY_RE.match(k) or "\n" in str(v):
            raise RecordError(f"extra key {k!r} is not [a-z0-9_] or its value is not one line")
        lines.append(f"{k} = {v}")
    text = "\n".join(lines) + "\n"
    parse_record(text)  # same rules as the library
    return text


def parse_record(text) -> Dict[str, str]:
    """Parse a record with the library's grammar (docs/models.md §3); raises RecordError."""
    if isinstance(text, bytes):
        try:
            text = text.decode("utf-8")
        except UnicodeDecodeError as e:
            raise RecordError(f"stsl_meta.txt is not UTF-8: {e}") from None
    if not text:
        raise RecordError("stsl_meta.txt is empty")
    if len(text.encode("utf-8")) > MAX_BYTES:
        raise RecordError("stsl_meta.txt is over 64 KiB")
    if text.startswith("\ufeff"):
        text = text[1:]
    lines = text.split("\n")
    if lines and lines[-1] == "":
        lines.pop()
    if len(lines) > MAX_LINES:
        raise RecordError(f"stsl_meta.txt has more than {MAX_LINES} lines")
    out: Dict[str, str] = {}
    for i, raw in enumerate(lines, 1):
        line = raw[:-1] if raw.endswith("\r") else raw
        if any((ord(c) < 32 and c != "\t") or 0x7f <= ord(c) <= 0x9f for c in line):
            raise RecordError(f"line {i}: control character")
        s = line.strip(" \t")
        if not s or s.startswith("#"):
            continue
        if "=" not in s:
            raise RecordError(f"line {i}: expected 'key = value'")
        k, v = s.split("=", 1)
        k, v = k.strip(" \t"), v.strip(" \t")
        if not _KEY_RE.match(k):
            raise RecordError(f"line {i}: key {k!r} is not lower-case [a-z0-9_]{{1,64}}")
        if len(v.encode("utf-8")) > 1024:
            raise RecordError(f"line {i}: value longer than 1024 bytes")
        if k in out:
            raise RecordError(f"line {i}: key {k!r} given twice")
        out[k] = v
    if not out:
        raise RecordError("stsl_meta.txt has no 'key = value' line")
    return out


def read_record_text(path: str) -> str:
    """The record's text in a model file, read from the zip archive torch.jit.save writes
    (<archive>/extra/stsl_meta.txt, stored) without loading the module or importing torch."""
    try:
        with zipfile.ZipFile(path) as z:
            names = [i for i in z.infolist()
                     if i.filename.count("/") == 2 and i.filename.endswith("/extra/" + META_NAME)]
            if not names:
                raise RecordError(f"{path}: no {META_NAME} record")
            if len(names) > 1 or names[0].file_size > MAX_BYTES:
                raise RecordError(f"{path}: {META_NAME} is repeated or over 64 KiB")
            data = z.read(names[0])
    except (zipfile.BadZipFile, OSError) as e:
        raise RecordError(f"{path}: not a TorchScript file ({e})") from None
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as e:
        raise RecordError(f"{path}: {META_NAME} is not UTF-8: {e}") from None


def read_record(path: str) -> Dict[str, str]:
    """The parsed record of a model file (RecordError when absent or malformed)."""
    return parse_record(read_record_text(path))


def save_module(module, path: str, record: str) -> None:
    """torch.jit.save of a scripted or traced module with its record."""
    import torch
    parse_record(record)
    torch.jit.save(module, path, _extra_files={META_NAME: record})


def load_module(path: str, map_location="cpu"):
    """(module, record text) of a model file, the module loaded by torch.jit.load."""
    import torch
    extra = {META_NAME: ""}
    module = torch.jit.load(path, map_location=map_location, _extra_files=extra)
    text = extra[META_NAME]
    return module, text.decode("utf-8") if isinstance(text, bytes) else text
