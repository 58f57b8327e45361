#!/usr/bin/python3
"""Batch-mode throughput of stsl-restore (issue 19): images per second against --batch and
--threads, for one solver of each kind on the shipped Fashion-MNIST priors.

  /usr/bin/python3 scripts/batch_bench.py [--bin bin/stsl-restore] [--out docs/scaling.md]
        [--batches 1,4,16,64] [--threads 1,2] [--solvers dps:50,...] [--task sr4] [--work DIR]

Inputs: the first max(batches) images of data/bench_indices.txt, read from Debian's
dataset-fashion-mnist and written as 8-bit PNGs into the work directory (no third-party Python
module: gzip, struct and zlib only).  Each configuration runs stsl-restore over max(16, B) of them
into a fresh output directory, in one process; images per second = images / (sum of the
`seconds` column of results.csv), i.e. degrade + solve, without the process start and the model
load (reported apart as the process's wall time).  For T > 1 threads the table also has T
one-thread workers in one process (`--jobs T --threads 1`, over T x max(16, B) images): their
runs overlap, so their rate is images / (wall time - the start-up, timed by running the same
command again once everything is done).  Configurations are interleaved (every solver
at every batch size for one thread count, then the next) so that a change in the machine's load
spreads over all of them; the machine and its load are printed with the table.

Also measured: how far the restorations of one image at another batch size are from batch 1's
(the calls then have other shapes, so libtorch's kernels round differently: see docs/scaling.md),
as the share of pixels whose 8-bit value differs and the largest difference in levels; and what
one image costs in a directory at the default --batch against single-file mode (issue 30: never
more than 1.2x), as the median of 3 interleaved wall times of each, one thread.

The table replaces the block between `<!-- batch-bench -->` and `<!-- /batch-bench -->` in --out.
"""
import argparse
import csv
import gzip
import os
import platform
import shutil
import struct
import subprocess
import sys
import time
import zlib

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(REPO, "scripts"))
from bench_common import replace_block  # noqa: E402
FMNIST = "/usr/share/datasets/fashion-mnist/t10k-images-idx3-ubyte.gz"
# one solver of each kind: pixel first-order, measurement optimisation, mean propagation,
# latent first-order, latent second-order.  Step counts are cut so that the whole table takes
# minutes (dps keeps the 200 steps of the issue-19 measurement): the per-image overhead (degrade,
# operator and solver set-up) weighs more at fewer steps, so the other rows understate the gain.
SOLVERS = "dps:200,dps-mo:20,rmp:50,psld:50,stsl:5"


def png_bytes(pixels, h, w):
    def chunk(tag, body):
        return struct.pack(">I", len(body)) + tag + body + struct.pack(">I", zlib.crc32(tag + body) & 0xFFFFFFFF)
    raw = b"".join(b"\0" + pixels[r * w:(r + 1) * w] for r in range(h))
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", w, h, 8, 0, 0, 0, 0))
            + chunk(b"IDAT", zlib.compress(raw)) + chunk(b"IEND", b""))


def png_pixels(path):
    b = open(path, "rb").read()
    p, idat, w, h = 8, b"", 0, 0
    while p < len(b):
        n, t = struct.unpack(">I", b[p:p + 4])[0], b[p + 4:p + 8]
        body = b[p + 8:p + 8 + n]
        if t == b"IHDR":
            w, h, depth, ctype = struct.unpack(">IIBB", body[:10])
            if depth != 8 or ctype != 0:
                raise ValueError("%s: not an 8-bit grey PNG" % path)
        if t == b"IDAT":
            idat += body
        p += 12 + n
    raw = zlib.decompress(idat)
    out, prev = bytearray(), bytearray(w)
    for r in range(h):   # undo the PNG filters (libpng may choose any)
        f, line = raw[r * (w + 1)], bytearray(raw[r * (w + 1) + 1:(r + 1) * (w + 1)])
        for i in range(w):
            a = line[i - 1] if i else 0
            up, c = prev[i], prev[i - 1] if i else 0
            if f == 1: line[i] = (line[i] + a) & 255
            elif f == 2: line[i] = (line[i] + up) & 255
            elif f == 3: line[i] = (line[i] + (a + up) // 2) & 255
            elif f == 4:
                pa, pb, pc = abs(up - c), abs(a - c), abs(a + up - 2 * c)
                pr = a if pa <= pb and pa <= pc else (up if pb <= pc else c)
                line[i] = (line[i] + pr) & 255
        out += line
        prev = line
    return bytes(out)


def write_inputs(work, n):
    idx = [int(l) for l in open(os.path.join(REPO, "data", "bench_indices.txt"))
           if l.strip() and not l.startswith("#")]
    with gzip.open(FMNIST, "rb") as f:
        data = f.read()
    magic, count, h, w = struct.unpack(">IIII", data[:16])
    if magic != 2051:
        sys.exit("batch_bench: %s is not an idx3 image file" % FMNIST)
    d = os.path.join(work, "in")
    os.makedirs(d, exist_ok=True)
    names = []
    for k in range(n):   # past the list's end, the images again under other names (other seeds)
        i = idx[k % len(idx)]
        name = "fmnist-test-%05d%s.png" % (i, "" if k < len(idx) else "-%d" % (k // len(idx)))
        with open(os.path.join(d, name), "wb") as f:
            f.write(png_bytes(data[16 + i * h * w:16 + (i + 1) * h * w], h, w))
        names.append(name)
    return d, names


def run_config(args, indir, names, solver, steps, batch, threads, work, jobs=1):
    n = max(16, batch) * jobs   # every worker gets at least one full batch
    sub = os.path.join(work, "in-%d" % n)
    if not os.path.isdir(sub):
        os.makedirs(sub)
        for name in names[:n]:
            os.symlink(os.path.join(indir, name), os.path.join(sub, name))
    out = os.path.join(work, "out-%s-b%d-t%d-j%d" % (solver, batch, threads, jobs))
    shutil.rmtree(out, ignore_errors=True)
    cmd = [args.bin, sub, out, "--task", args.task, "--solver", solver, "--steps", str(steps),
           "--batch", str(batch), "--threads", str(threads), "--jobs", str(jobs), "--quiet"]
    def timed():
        t0 = time.monotonic()
        r = subprocess.run(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        if r.returncode != 0:
            sys.exit("batch_bench: %s failed (%d): %s" % (" ".join(cmd), r.returncode, r.stderr.strip()[-400:]))
        return time.monotonic() - t0
    wall = timed()
    # the same command again finds every output done: its time is the start-up (library, models
    # for every worker, listing), taken off the first
    startup = timed()
    with open(os.path.join(out, "results.csv"), newline="") as f:
        rows = [row for row in csv.DictReader(f) if row["status"] == "ok"]
    solve = sum(float(row["seconds"]) for row in rows)
    return {"images": len(rows), "solve": solve, "wall": wall, "startup": startup, "out": out}


def one_image(args, indir, name, solver, steps, work, repeats=3):
    """Median wall times of single-file mode and of a one-image directory at the default --batch."""
    d = os.path.join(work, "one-in")
    if not os.path.isdir(d):
        os.makedirs(d)
        os.symlink(os.path.join(indir, name), os.path.join(d, name))
    common = ["--task", args.task, "--solver", solver, "--steps", str(steps), "--threads", "1", "--quiet"]
    times = {"file": [], "dir": []}
    for k in range(repeats):   # interleaved, so a change of load hits both
        for mode in ("file", "dir"):
            out = os.path.join(work, "one-%s-%s-%d" % (mode, solver, k))
            shutil.rmtree(out, ignore_errors=True)
            src = os.path.join(d, name) if mode == "file" else d
            dst = out + ".png" if mode == "file" else out
            cmd = [args.bin, src, dst] + common
            t0 = time.monotonic()
            r = subprocess.run(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
            if r.returncode != 0:
                sys.exit("batch_bench: %s failed (%d): %s" % (" ".join(cmd), r.returncode, r.stderr.strip()[-400:]))
            times[mode].append(time.monotonic() - t0)
    med = lambda v: sorted(v)[len(v) // 2]
    return med(times["file"]), med(times["dir"])


def compare(a_dir, b_dir, names):
    differ = total = worst = 0
    for name in names:
        pa, pb = os.path.join(a_dir, name), os.path.join(b_dir, name)
        if not (os.path.exists(pa) and os.path.exists(pb)):
            continue
        a, b = png_pixels(pa), png_pixels(pb)
        total += len(a)
        for x, y in zip(a, b):
            if x != y:
                differ += 1
                worst = max(worst, abs(x - y))
    return differ, total, worst


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--bin", default=os.path.join(REPO, "bin", "stsl-restore"))
    ap.add_argument("--out", default=os.path.join(REPO, "docs", "scaling.md"))
    ap.add_argument("--batches", default="1,4,16,64")
    ap.add_argument("--threads", default="1,2",
                    help="threads per process; for each T > 1 also T workers of 1 thread (--jobs T)")
    ap.add_argument("--solvers", default=SOLVERS)
    ap.add_argument("--task", default="sr4")
    ap.add_argument("--work", default=os.path.join(REPO, "build", "batch-bench"))
    args = ap.parse_args()
    args.work = os.path.abspath(args.work)   # the inputs are symlinks into it
    batches = [int(b) for b in args.batches.split(",")]
    threads = [int(t) for t in args.threads.split(",")]
    # (jobs, threads per job): every thread count in one worker, and T > 1 as T 1-thread workers
    setups = [(1, t) for t in threads] + [(t, 1) for t in threads if t > 1]
    label = lambda j, t: "%d" % t if j == 1 else "%d = %d jobs x 1" % (j * t, j)
    solvers = [(s.split(":")[0], int(s.split(":")[1])) for s in args.solvers.split(",")]
    shutil.rmtree(args.work, ignore_errors=True)
    os.makedirs(args.work)
    indir, names = write_inputs(args.work, max(max(batches), 16) * max(threads))
    load = lambda: " ".join(open("/proc/loadavg").read().split()[:3])
    started = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())
    load_before = load()
    res = {}
    for j, t in setups:
        for b in batches:
            for solver, steps in solvers:
                r = run_config(args, indir, names, solver, steps, b, t, args.work, j)
                res[(solver, b, j, t)] = r
                # one worker: images / the CSV's seconds (degrade + solve); several: their runs
                # overlap, so images / (wall time - start-up)
                r["rate"] = r["images"] / (r["solve"] if j == 1 else r["wall"] - r["startup"])
                print("batch_bench: %-7s steps %3d  batch %3d  threads %-14s: %3d images, %.2f img/s "
                      "(solve %.1f s, process %.1f s)" % (solver, steps, b, label(j, t), r["images"],
                                                         r["rate"], r["solve"], r["wall"]),
                      flush=True)
    single = {}
    for solver, steps in solvers:
        single[solver] = one_image(args, indir, names[0], solver, steps, args.work)
        print("batch_bench: %-7s one image: file %.2f s, directory %.2f s" % ((solver,) + single[solver]),
              flush=True)
    load_after = load()
    cpu = next((l.split(":", 1)[1].strip() for l in open("/proc/cpuinfo") if l.startswith("model name")),
               platform.machine())
    lines = ["", "Measured %s by `make bench-batch` (`scripts/batch_bench.py`) on %s, %d cores, load "
             "%s before and %s after; task %s; images from `data/bench_indices.txt`; each cell one "
             "stsl-restore process over max(16, B) images (J x that with J jobs)." % (started, cpu, os.cpu_count(),
                                                                 load_before, load_after, args.task), ""]
    head = "| solver (steps) | threads | " + " | ".join("B = %d" % b for b in batches) + \
           " | best / (B = 1, one worker) |"
    lines += ["Images per second (degrade + solve; process start and model load not counted):", "",
              head, "|" + "---|" * (len(batches) + 3)]
    for j, t in setups:
        for solver, steps in solvers:
            rates = [res[(solver, b, j, t)]["rate"] for b in batches]
            base = res[(solver, batches[0], 1, j * t)]["rate"]   # one worker, same threads, B = 1
            lines.append("| %s (%d) | %s | " % (solver, steps, label(j, t)) +
                         " | ".join("%.2f" % r for r in rates) + " | %.2fx |" % (max(rates) / base))
    lines += ["", "One image, one thread: `stsl-restore in.png out.png` against `stsl-restore DIR OUT` "
              "with that one image in DIR at the default `--batch` (wall time of the process, median "
              "of 3 interleaved runs; issue 30's bound: 1.2x):", "",
              "| solver (steps) | single file, s | directory, s | directory / single |", "|---|---|---|---|"]
    for solver, steps in solvers:
        f, d = single[solver]
        lines.append("| %s (%d) | %.2f | %.2f | %.2fx |" % (solver, steps, f, d, d / f))
    lines += ["", "The same images at B > 1 against B = 1 (no padding by default, so the calls "
              "differ in shape): pixels whose 8-bit value differs, largest difference in levels.", "",
              "| solver | threads | " + " | ".join("B = %d" % b for b in batches[1:]) + " |",
              "|" + "---|" * (len(batches) + 1)]
    for t in threads:
        for solver, _ in solvers:
            cells = []
            for b in batches[1:]:
                d, n, w = compare(res[(solver, batches[0], 1, t)]["out"], res[(solver, b, 1, t)]["out"],
                                  names[:max(16, batches[0])])
                cells.append("%d of %d (max %d)" % (d, n, w))
            lines.append("| %s | %d | " % (solver, t) + " | ".join(cells) + " |")
    block = "\n".join(lines) + "\n"
    replace_block(args.out, "<!-- batch-bench -->", "<!-- /batch-bench -->", block)
    print(block)


if __name__ == "__main__":
    main()
