"""A small reader (and writer, for tests) of the .safetensors checkpoint format.

Written for libstsl because Debian ships no safetensors package.  The format (as documented by its
authors): 8 bytes little-endian unsigned header length N, N bytes of UTF-8 JSON mapping each tensor
name to {"dtype", "shape", "data_offsets": [begin, end]} (offsets relative to the byte buffer that
follows the header) plus an optional "__metadata__" map of strings, then the byte buffer.  Tensors
are little-endian and C-contiguous.

Only what checkpoints use is supported: F64 F32 F16 BF16 I64 I32 I16 I8 U8 BOOL.  Every field is
checked (header size, offsets inside the buffer and consistent with dtype x shape, no overlap), so
a truncated or corrupted file is an error naming the tensor, never garbage weights.  Tested by
tests/exporters (files written by write_file below, round-tripped, and corrupted on purpose).
"""
from __future__ import annotations

import json
import struct
from typing import Dict, Optional, Tuple

import torch

_DTYPES = {
    "F64": (torch.float64, 8), "F32": (torch.float32, 4), "F16": (torch.float16, 2),
    "BF16": (torch.bfloat16, 2), "I64": (torch.int64, 8), "I32": (torch.int32, 4),
    "I16": (torch.int16, 2), "I8": (torch.int8, 1), "U8": (torch.uint8, 1), "BOOL": (torch.bool, 1),
}
_NAMES = {v[0]: k for k, v in _DTYPES.items()}
MAX_HEADER = 100 * 1024 * 1024


class SafetensorsError(ValueError):
    """The file is not a valid .safetensors file."""


def read_header(path: str) -> Tuple[Dict[str, dict], Dict[str, str], int]:
    """(tensors' header entries, __metadata__, byte offset of the data buffer)."""
    with open(path, "rb") as f:
        head = f.read(8)
        if len(head) != 8:
            raise SafetensorsError(f"{path}: too short for a .safetensors file")
        (n,) = struct.unpack("<Q", head)
        if n < 2 or n > MAX_HEADER:
            raise SafetensorsError(f"{path}: header length {n} is not plausible "
                                   "(not a .safetensors file?)")
        raw = f.read(n)
    if len(raw) != n:
        raise SafetensorsError(f"{path}: truncated header ({len(raw)} of {n} bytes)")
    try:
        header = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise SafetensorsError(f"{path}: header is not JSON: {e}") from None
    if not isinstance(header, dict):
        raise SafetensorsError(f"{path}: header is not a JSON object")
    meta = header.pop("__metadata__", None) or {}
    if not isinstance(meta, dict):
        raise SafetensorsError(f"{path}: __metadata__ is not an object")
    return header, meta, 8 + n


def load_file(path: str, device: str = "cpu") -> Dict[str, torch.Tensor]:
    """All tensors of a .safetensors file, by name (copies owned by the caller)."""
    header, _meta, start = read_header(path)
    with open(path, "rb") as f:
        f.seek(start)
        buf = f.read()
    spans = []
    out: Dict[str, torch.Tensor] = {}
    for name, info in header.items():
        if not isinstance(info, dict) or set(("dtype", "shape", "data_offsets")) - set(info):
            raise SafetensorsError(f"{path}: entry {name!r} lacks dtype, shape or data_offsets")
        if info["dtype"] not in _DTYPES:
            raise SafetensorsError(f"{path}: tensor {name!r} has unsupported dtype {info['dtype']!r}")
        dtype, size = _DTYPES[info["dtype"]]
        shape = info["shape"]
        if not isinstance(shape, list) or not all(isinstance(s, int) and s >= 0 for s in shape):
            raise SafetensorsError(f"{path}: tensor {name!r} has a bad shape {shape!r}")
        off = info["data_offsets"]
        if (not isinstance(off, list) or len(off) != 2 or not all(isinstance(o, int) for o in off)
                or not 0 <= off[0] <= off[1] <= len(buf)):
            raise SafetensorsError(f"{path}: tensor {name!r} has data_offsets {off!r} outside the "
                                   f"{len(buf)}-byte buffer (truncated file?)")
        count = 1
        for s in shape:
            count *= s
        if off[1] - off[0] != count * size:
            raise SafetensorsError(f"{path}: tensor {name!r}: {off[1] - off[0]} bytes for "
                                   f"{info['dtype']}{shape} ({count * size} expected)")
        spans.append((off[0], off[1], name))
        if count == 0:
            t = torch.empty(shape, dtype=dtype)
        else:
            t = torch.frombuffer(bytearray(buf[off[0]:off[1]]), dtype=dtype).reshape(shape)
        out[name] = t.to(device)
    spans.sort()
    for (a0, a1, an), (b0, _b1, bn) in zip(spans, spans[1:]):
        if b0 < a1:
            raise SafetensorsError(f"{path}: tensors {an!r} and {bn!r} overlap")
    return out


def write_file(tensors: Dict[str, torch.Tensor], path: str,
               metadata: Optional[Dict[str, str]] = None) -> None:
    """Write tensors (contiguous copies, CPU, little-endian) in the .safetensors layout."""
    header: Dict[str, object] = {}
    blobs = []
    pos = 0
    for name in sorted(tensors):
        t = tensors[name].detach().cpu().contiguous()
        if t.dtype not in _NAMES:
            raise SafetensorsError(f"tensor {name!r}: dtype {t.dtype} is not supported")
        data = t.view(torch.uint8).numpy().tobytes() if t.numel() else b""
        header[name] = {"dtype": _NAMES[t.dtype], "shape": list(t.shape),
                        "data_offsets": [pos, pos + len(data)]}
        blobs.append(data)
        pos += len(data)
    if metadata:
        header["__metadata__"] = {str(k): str(v) for k, v in metadata.items()}
    raw = json.dumps(header, separators=(",", ":")).encode("utf-8")
    raw += b" " * (-len(raw) % 8)  # the format pads the header to 8 bytes with spaces
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(raw)))
        f.write(raw)
        for b in blobs:
            f.write(b)
