#!/usr/bin/env python3
"""The Python side of test_record_roundtrip.c (torch-free): scripts/stsl_export/meta.py writes
and reads records for the C test to compare with src/models/meta.c.

    record_tool.py write OUT ROLE JSON_KWARGS   make_record(ROLE, **kwargs) into OUT
    record_tool.py read FILE...                 per file, "ok N" then N lines "KEYHEX VALUEHEX"
                                                (UTF-8 bytes in hex), or "error MESSAGE"
    record_tool.py model FILE...                as read, from model files (read_record)
"""
import json
import os
import sys

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "scripts"))
from stsl_export import meta  # noqa: E402


def show(get):
    try:
        rec = get()
    except meta.RecordError as e:
        print("error", str(e).replace("\n", " "))
        return
    print("ok", len(rec))
    for k, v in rec.items():
        print(k.encode("utf-8").hex(), v.encode("utf-8").hex())


def main(argv):
    if argv[0] == "write":
        out, role, kwargs = argv[1], argv[2], json.loads(argv[3])
        for k in ("sample_shape", "image_shape", "latent_shape", "value_range"):
            if k in kwargs:
                kwargs[k] = tuple(kwargs[k])
        with open(out, "w", encoding="utf-8", newline="") as f:
            f.write(meta.make_record(role, **kwargs))
        return 0
    for path in argv[1:]:
        if argv[0] == "model":
            show(lambda: meta.read_record(path))
        else:
            with open(path, "rb") as f:
                data = f.read()
            show(lambda: meta.parse_record(data))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
