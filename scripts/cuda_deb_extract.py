#!/usr/bin/env python3
"""Unpack the files of a .deb into a folder, like `dpkg-deb -x DEB DIR`, for a machine without
dpkg (scripts/check-cuda.sh).  A .deb is an ar archive whose data.tar.{xz,gz,bz2} member holds
the files; Python's tarfile reads those compressions (not zstd).

    python3 scripts/cuda_deb_extract.py DEB DIR
"""
import io
import sys
import tarfile


def extract(deb, outdir):
    data = open(deb, "rb").read()
    if data[:8] != b"!<arch>\n":
        raise SystemExit(f"{deb}: not a .deb (no ar header)")
    pos = 8
    while pos + 60 <= len(data):
        name = data[pos:pos + 16].decode().strip().rstrip("/")
        size = int(data[pos + 48:pos + 58])
        if name.startswith("data.tar"):
            with tarfile.open(fileobj=io.BytesIO(data[pos + 60:pos + 60 + size]), mode="r:*") as t:
                # absolute symlinks (libz.so -> /lib/...) are kept; check-cuda.sh re-points them.
                # Python >= 3.12 takes a filter; 3.14's default ("data") would refuse them.
                if hasattr(tarfile, "tar_filter"):
                    t.extractall(outdir, filter="tar")
                else:
                    t.extractall(outdir)
            return
        pos += 60 + size + (size & 1)   # members are 2-byte aligned
    raise SystemExit(f"{deb}: no data.tar member")


if __name__ == "__main__":
    if len(sys.argv) != 3:
        raise SystemExit(__doc__)
    extract(sys.argv[1], sys.argv[2])
