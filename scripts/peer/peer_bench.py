#!/usr/bin/python3
"""make bench-peer: libstsl against the same algorithms in PyTorch eager, interleaved.

For every configuration (solver x task x threads x batch) and every pair p = 1..PEER_PAIRS, runs
the library's tool (bin/stsl-bench, image mode) and the eager peer (scripts/peer/peer_eager.py run)
on the same images and the same measurements, the library first in odd pairs and the peer first
in even ones.  Both report the wall time of the solver call per restoration (process start and
model loading excluded); the ratio library/eager is taken per pair, and the table gives its median
and minimum over the pairs, the median times, the mean PSNR of each side and the network passes.
Results: the block between the peer-results markers of PEER_REPORT (docs/peer-bench.md), and every
run in PEER_DIR/runs.csv.  Parameters come from the environment (mk/peer.mk sets them):

  PEER_PAIRS     pairs per configuration (default 3)
  PEER_STEPS     "dps=100 stsl=20", or one number for every solver
  PEER_SOLVERS   "dps stsl"          PEER_TASKS    "sr4 gaussian-blur"
  PEER_THREADS   "1 2"               PEER_BATCHES  "1 8"
  PEER_N1        images of a batch-1 run (default 2; a batch-B run restores B images at once)
  PEER_SEED      operator and sampler seed (default 0)
  PEER_VERIFY_STEPS  steps of the untimed check that the eager solvers, fed the library's random
                 draws, reproduce the library's restorations ("dps=20 stsl=5")
  PEER_DIR       work directory (default build/peer)   PEER_REPORT   (default docs/peer-bench.md)
  BINOUT, LIBOUT where the tools and the library are (default bin, lib)
"""
import csv
import datetime
import json
import os
import statistics
import subprocess
import sys
import time

# The eager STSL is Algorithm 1 as written (Adam reset per reverse step, noise-free line 14); the
# library's default since issue 14 is the scaled step with DDPM noise at line 14, which makes the
# same network passes.  Time the library on the reading the eager side implements.
LIB_OPTS = {"dps": [], "stsl": ["--step-rule", "adam", "--step-noise", "0"]}

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))
sys.path.insert(0, os.path.join(ROOT, "scripts"))
from bench_report import machine  # noqa: E402  (host, CPU model, CPUs, RAM, kernel)
from bench_common import replace_block  # noqa: E402
PY = "/usr/bin/python3"
BEGIN, END = "<!-- peer-results:begin -->", "<!-- peer-results:end -->"


def log(msg):
    print("bench-peer: " + msg, file=sys.stderr, flush=True)


def parse_steps(spec, solvers):
    spec = spec.strip()
    if spec.isdigit():
        return {s: int(spec) for s in solvers}
    out = {}
    for tok in spec.replace(",", " ").split():
        k, _, v = tok.partition("=")
        if not v.isdigit() or int(v) < 1:
            sys.exit("bench-peer: bad PEER_STEPS entry '%s' (want solver=steps or one number)" % tok)
        out[k] = int(v)
    for s in solvers:
        if s not in out:
            sys.exit("bench-peer: PEER_STEPS gives no steps for %s" % s)
    return out


def loadavg():
    try:
        return " ".join(open("/proc/loadavg").read().split()[:3])
    except OSError:
        return "unknown"


def git_rev():
    try:
        rev = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True,
                             text=True).stdout.strip()
        # what the timed code is built from (docs, this report included, do not count)
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no", "--", "src",
                                "shim", "include", "examples", "scripts", "models", "mk", "Makefile"],
                               cwd=ROOT, capture_output=True, text=True).stdout.strip()
        return rev + (" + uncommitted changes to the code" if dirty else "")
    except OSError:
        return "unknown"


def read_rows(path):
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def run_side(side, cfg, p, a, run_env):
    """One run; returns (seconds per restoration, mean PSNR, extra dict, process wall)."""
    solver, task, threads, batch = cfg
    n = batch if batch > 1 else a["n1"]
    out = os.path.join(a["dir"], "runs", "%s-%s-t%d-b%d-p%d-%s.csv" % (solver, task, threads, batch, p, side))
    if os.path.exists(out):
        os.remove(out)
    steps = a["steps"][solver]
    if side == "library":
        cmd = [os.path.join(a["binout"], "stsl-bench"), "--task", task, "--solver", solver,
               "--n", str(n), "--batch", str(batch), "--steps", str(steps), "--threads",
               str(threads), "--seed", str(a["seed"]), "--csv", out, "--quiet"] + LIB_OPTS[solver]
    else:
        cmd = [PY, os.path.join(HERE, "peer_eager.py"), "run", "--prep",
               os.path.join(a["dir"], "prep", task), "--solver", solver, "--steps", str(steps),
               "--batch", str(batch), "--n", str(n), "--threads", str(threads), "--seed",
               str(a["seed"]), "--csv", out, "--quiet"]
    t0 = time.perf_counter()
    r = subprocess.run(cmd, cwd=ROOT, env=side_env(run_env, side, a["malloc"]), capture_output=True,
                       text=True)
    wall = time.perf_counter() - t0
    if r.returncode != 0:
        sys.exit("bench-peer: %s run failed (%s):\n%s" % (side, " ".join(cmd), (r.stderr or r.stdout)[-2000:]))
    rows = read_rows(out)
    if len(rows) != n:
        sys.exit("bench-peer: %s wrote %d rows, %d expected (%s)" % (side, len(rows), n, out))
    secs = sum(float(x["seconds"]) for x in rows) / n
    ps = sum(float(x["psnr"]) for x in rows) / n
    if side == "library":
        extra = {k: float(rows[0][k]) for k in ("unet_forward", "unet_vjp", "decoder_forward",
                                                  "decoder_vjp") if k in rows[0]}
    else:
        extra = {k: float(rows[0][k]) for k in ("graph_forward", "backward", "plain_forward")}
        extra["network_share"] = sum(float(x["network_seconds"]) for x in rows) / n / secs
        extra["modules"] = rows[0]["modules"]
    return secs, ps, extra, wall


def fmt_ratio(x):
    return "%.2f" % x


def settings(environ):
    """The run's parameters from PEER_* (defaults where unset or empty) and the make command
    that gives them."""
    def get(name, default):
        v = environ.get(name, "")
        return v if v.strip() else default

    solvers = get("PEER_SOLVERS", "dps stsl").split()
    for s in solvers:
        if s not in ("dps", "stsl"):
            sys.exit("bench-peer: the peer implements dps and stsl, not %s" % s)
    a = {
        "solvers": solvers,
        "pairs": int(get("PEER_PAIRS", "3")),
        "steps": parse_steps(get("PEER_STEPS", "dps=100 stsl=20"), solvers),
        "tasks": get("PEER_TASKS", "sr4 gaussian-blur").split(),
        "threads": [int(x) for x in get("PEER_THREADS", "1 2").split()],
        "batches": [int(x) for x in get("PEER_BATCHES", "1 8").split()],
        "vsteps": parse_steps(get("PEER_VERIFY_STEPS", "dps=20 stsl=5"), solvers),
        "n1": int(get("PEER_N1", "2")),
        "malloc": get("PEER_MALLOC", "tuned"),
        "seed": int(get("PEER_SEED", "0")),
        "dir": get("PEER_DIR", os.path.join(ROOT, "build", "peer")),
        "report": get("PEER_REPORT", os.path.join(ROOT, "docs", "peer-bench.md")),
        "binout": get("BINOUT", "bin"),
        "libout": get("LIBOUT", "lib"),
    }
    if a["malloc"] not in ("tuned", "system"):
        sys.exit("bench-peer: PEER_MALLOC is tuned or system, not %s" % a["malloc"])
    if a["pairs"] < 1 or a["n1"] < 1 or min(a["batches"]) < 1 or min(a["threads"]) < 1:
        sys.exit("bench-peer: PEER_PAIRS, PEER_N1, PEER_BATCHES and PEER_THREADS must be >= 1")
    a["command"] = (
        "make bench-peer PEER_PAIRS=%d PEER_STEPS='%s' PEER_SOLVERS='%s' PEER_TASKS='%s' "
        "PEER_THREADS='%s' PEER_BATCHES='%s' PEER_N1=%d PEER_SEED=%d PEER_VERIFY_STEPS='%s' PEER_MALLOC=%s"
        % (a["pairs"], " ".join("%s=%d" % (s, a["steps"][s]) for s in solvers), " ".join(solvers),
           " ".join(a["tasks"]), " ".join(map(str, a["threads"])), " ".join(map(str, a["batches"])),
           a["n1"], a["seed"], " ".join("%s=%d" % (s, a["vsteps"][s]) for s in solvers), a["malloc"]))
    return a


# The allocator policy the tools set for themselves (examples/common/cli.c, cli_tune_malloc), given
# to the eager process through glibc's tunables so that both sides run under the same policy.
TUNED_MALLOC = "glibc.malloc.mmap_threshold=33554432:glibc.malloc.trim_threshold=268435456"


def side_env(base, side, policy):
    env = dict(base)
    env.pop("GLIBC_TUNABLES", None)
    env.pop("STSL_TOOL_MALLOC", None)
    if policy == "system" and side == "library":
        env["STSL_TOOL_MALLOC"] = "system"
    elif policy == "tuned" and side == "eager":
        env["GLIBC_TUNABLES"] = TUNED_MALLOC
    return env


def main():
    a = settings(os.environ)
    solvers, command = a["solvers"], a["command"]
    default_command = settings({})["command"]
    a["binout"] = os.path.join(ROOT, a["binout"]) if not os.path.isabs(a["binout"]) else a["binout"]
    a["libout"] = os.path.join(ROOT, a["libout"]) if not os.path.isabs(a["libout"]) else a["libout"]
    lib = os.path.join(a["libout"], "libstsl.so")
    os.makedirs(os.path.join(a["dir"], "runs"), exist_ok=True)
    start = datetime.datetime.utcnow()
    load0 = loadavg()
    log("start %s UTC, load average %s; %s" % (start.strftime("%Y-%m-%d %H:%M"), load0, command))

    # untimed preparation per task: measurements and operator check through the library's API
    nmax = max(max(a["batches"]), a["n1"])
    prep = {}
    for task in a["tasks"]:
        pdir = os.path.join(a["dir"], "prep", task)
        r = subprocess.run([PY, os.path.join(HERE, "peer_eager.py"), "prepare", "--lib", lib,
                            "--task", task, "--n", str(nmax), "--seed", str(a["seed"]), "--out", pdir],
                           cwd=ROOT, capture_output=True, text=True)
        if r.returncode != 0:
            sys.exit("bench-peer: prepare %s failed:\n%s" % (task, r.stderr[-2000:]))
        with open(os.path.join(pdir, "prep.json")) as f:
            prep[task] = json.load(f)

    # untimed verification per solver and task: the eager solver with the library's own random
    # draws must reproduce the library's restorations (same mathematics, float rounding apart)
    verify = {}
    vb = max(a["batches"])
    for solver in solvers:
        for task in a["tasks"]:
            vdir = os.path.join(a["dir"], "verify", "%s-%s" % (solver, task))
            vsteps = a["vsteps"][solver]
            os.makedirs(os.path.dirname(vdir), exist_ok=True)
            run_env = dict(os.environ, OMP_NUM_THREADS="1")
            r = subprocess.run([os.path.join(a["binout"], "stsl-bench"), "--task", task, "--solver",
                                solver, "--n", str(vb), "--batch", str(vb), "--steps", str(vsteps),
                                "--seed", str(a["seed"]), "--out", vdir, "--quiet"] + LIB_OPTS[solver],
                               cwd=ROOT, env=run_env, capture_output=True, text=True)
            if r.returncode != 0:
                sys.exit("bench-peer: verification run of the library failed:\n%s" % r.stderr[-2000:])
            r = subprocess.run([PY, os.path.join(HERE, "peer_eager.py"), "run", "--prep",
                                os.path.join(a["dir"], "prep", task), "--solver", solver, "--steps",
                                str(vsteps), "--batch", str(vb), "--n", str(vb), "--seed",
                                str(a["seed"]), "--library-noise", lib, "--compare", vdir],
                               cwd=ROOT, env=run_env, capture_output=True, text=True)
            if r.returncode != 0:
                sys.exit("bench-peer: verification run of the peer failed:\n%s" % r.stderr[-2000:])
            v = json.loads(r.stdout.strip().splitlines()[-1])
            verify[(solver, task)] = v
            log("verify %s %s@%d, %d images, library's draws: max |eager - library| %.1e, PSNR %.3f / %.3f"
                % (task, solver, vsteps, vb, v["max_abs_diff"], v["psnr_library"], v["psnr_eager"]))
            if not v["max_abs_diff"] <= 1e-3:
                sys.exit("bench-peer: the eager %s does not reproduce the library's %s restorations "
                         "(max |difference| %.2e > 1e-3): the two sides do not compute the same thing"
                         % (solver, task, v["max_abs_diff"]))

    configs = [(s, t, th, b) for s in solvers for t in a["tasks"] for th in a["threads"]
               for b in a["batches"]]
    res = {c: {"lib": [], "eager": [], "ratio": [], "share": [], "lib_psnr": None, "eager_psnr": None}
           for c in configs}
    runs_csv = os.path.join(a["dir"], "runs.csv")
    with open(runs_csv, "w") as f:
        f.write("pair,order,solver,task,threads,batch,images,steps,side,seconds_per_image,psnr,process_wall\n")
    total = len(configs) * a["pairs"] * 2
    done = 0
    t_start = time.perf_counter()
    # pair-major: every configuration once per pair, so slow drifts of the machine's load hit
    # every configuration alike; inside a pair the order alternates
    for p in range(1, a["pairs"] + 1):
        for c in configs:
            solver, task, threads, batch = c
            run_env = dict(os.environ)
            for k in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
                run_env[k] = str(threads)
            order = ["library", "eager"] if p % 2 == 1 else ["eager", "library"]
            got = {}
            for side in order:
                got[side] = run_side(side, c, p, a, run_env)
                done += 1
                with open(runs_csv, "a") as f:
                    f.write("%d,%s,%s,%s,%d,%d,%d,%d,%s,%.5f,%.4f,%.2f\n"
                            % (p, "/".join(order), solver, task, threads, batch,
                               batch if batch > 1 else a["n1"], a["steps"][solver], side,
                               got[side][0], got[side][1], got[side][3]))
            R = res[c]
            R["lib"].append(got["library"][0])
            R["eager"].append(got["eager"][0])
            R["ratio"].append(got["library"][0] / got["eager"][0])
            R["share"].append(got["eager"][2]["network_share"])
            R["lib_psnr"], R["eager_psnr"] = got["library"][1], got["eager"][1]
            R["lib_nfe"], R["eager_nfe"] = got["library"][2], got["eager"][2]
            el = time.perf_counter() - t_start
            log("pair %d/%d %s %s threads %d batch %d: library %.4f s, eager %.4f s per image, "
                "ratio %.2f  [%d/%d runs, %.0f s, ~%.0f s left]"
                % (p, a["pairs"], solver, task, threads, batch, got["library"][0], got["eager"][0],
                   R["ratio"][-1], done, total, el, el / done * (total - done)))
    end = datetime.datetime.utcnow()
    load1 = loadavg()
    elapsed = time.perf_counter() - t_start

    # ---- the report block ----
    try:
        import torch
        torch_ver = torch.__version__
    except Exception:
        torch_ver = "unknown"
    lines = []
    lines.append("Run %s to %s UTC (%.0f s, preparation excluded), `%s`."
                 % (start.strftime("%Y-%m-%d %H:%M"), end.strftime("%H:%M"), elapsed, command))
    lines.append("")
    lines.append("Machine: %s; nproc %d; load average (1/5/15 min) %s at the start, %s at the end. "
                 "Library %s (git %s), %s; torch %s at %s."
                 % (machine(), os.cpu_count() or 0, load0, load1,
                    prep[a["tasks"][0]]["library_version"], git_rev(),
                    os.path.relpath(lib, ROOT), torch_ver, PY))
    lines.append("")
    try:
        busy0, busy1 = float(load0.split()[0]), float(load1.split()[0])
    except (ValueError, IndexError):
        busy0 = busy1 = 0.0
    ncpu = os.cpu_count() or 1
    if busy0 >= 1.0 or busy1 >= ncpu + 1.0:
        lines.append("**The machine was busy** (1-minute load %.1f at the start, %.1f at the end, on %d "
                     "CPUs; this harness alone adds at most 2 runnable threads): the times, the 2-thread "
                     "ones most, are not representative. Rerun on a quiet machine." % (busy0, busy1, ncpu))
        lines.append("")
    if command != default_command:
        lines.append("**Not the default configuration** (a smoke or partial run); the defaults are `%s`."
                     % default_command)
        lines.append("")
    lines.append("Torch operator vs the library's (max |difference| on the test images / their y): "
                 + "; ".join("%s forward %.1e, adjoint %.1e, back-projection %.1e"
                             % (t, prep[t]["operator_max_abs_diff"]["forward"],
                                prep[t]["operator_max_abs_diff"]["adjoint"],
                                prep[t]["operator_max_abs_diff"]["backproject"]) for t in a["tasks"])
                 + ". Eager modules: " + ", ".join(sorted({"%s: %s" % (c[0], res[c]["eager_nfe"]["modules"])
                                                           for c in configs})) + ".")
    lines.append("")
    lines.append("Same mathematics: with the library's own random draws (verification runs, %d images, "
                 "1 thread, untimed) the eager restorations equal the library's to max |difference| "
                 % vb + "; ".join("%s %s@%d %.1e (PSNR %.2f / %.2f)"
                                  % (k[0], k[1], a["vsteps"][k[0]], v["max_abs_diff"], v["psnr_library"],
                                     v["psnr_eager"]) for k, v in verify.items())
                 + ". The timed eager runs draw from torch.randn instead, so their PSNRs differ from the "
                 "library's by sampling noise only.")
    lines.append("")
    lines.append("Seconds = wall time of the solver call per restoration, median over the %d pair(s); "
                 "ratio = library / eager per pair (median, min); PSNR = mean over the images in dB. "
                 "Library NFE per image: UNet forwards / VJPs (+ decoder forwards / VJPs); eager "
                 "passes per image: network forwards under autograd / backwards / plain forwards. "
                 "Eager net share = the part of the eager solver call spent inside network forwards "
                 "and backward passes (median over the pairs): a library running the same passes on "
                 "the same kernels spends that too, less eager's Python dispatch inside the calls, so "
                 "at batch 8, where that dispatch is small, it bounds the ratio reachable without "
                 "changing the kernels."
                 % a["pairs"])
    lines.append("")
    lines.append("| solver | task | steps | threads | batch | images | library s | eager s | ratio median | ratio min | eager net share | PSNR library | PSNR eager | library NFE | eager passes |")
    lines.append("|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|---|")
    for c in configs:
        solver, task, threads, batch = c
        R = res[c]
        ln = R["lib_nfe"]
        nfe = "%.0f / %.0f" % (ln.get("unet_forward", 0), ln.get("unet_vjp", 0))
        if ln.get("decoder_forward", 0) or ln.get("decoder_vjp", 0):
            nfe += " (+ %.0f / %.0f)" % (ln["decoder_forward"], ln["decoder_vjp"])
        en = R["eager_nfe"]
        ep = "%.0f / %.0f / %.0f" % (en["graph_forward"], en["backward"], en["plain_forward"])
        lines.append("| %s | %s | %d | %d | %d | %d | %.4f | %.4f | %s | %s | %.2f | %.2f | %.2f | %s | %s |"
                     % (solver, task, a["steps"][solver], threads, batch,
                        batch if batch > 1 else a["n1"], statistics.median(R["lib"]),
                        statistics.median(R["eager"]), fmt_ratio(statistics.median(R["ratio"])),
                        fmt_ratio(min(R["ratio"])), statistics.median(R["share"]), R["lib_psnr"],
                        R["eager_psnr"], nfe, ep))
    lines.append("")
    # the targets, read off the table
    tg = []
    for c in configs:
        solver, task, threads, batch = c
        med = statistics.median(res[c]["ratio"])
        if threads == 1:
            tg.append(("%s %s 1 thread batch %d" % (solver, task, batch), med, 0.75))
        if threads == 2 and batch == 8:
            tg.append(("%s %s 2 threads batch 8" % (solver, task), med, 1.0))
    if tg:
        met = [x for x in tg if x[1] <= x[2]]
        lines.append("Issue 15's targets (median ratio <= 0.75 at 1 thread, <= 1.0 at 2 threads and "
                     "batch 8): %d of %d configurations met%s."
                     % (len(met), len(tg), "" if len(met) == len(tg) else "; not met: " + ", ".join(
                         "%s (%.2f)" % (x[0], x[1]) for x in tg if x[1] > x[2])))
        lines.append("")
    lines.append("Every run: `%s` (not committed)." % os.path.relpath(runs_csv, ROOT))
    block = "\n".join(lines)
    print(block)

    rep = a["report"]
    replace_block(rep, BEGIN, END, block, new_file_heading="# libstsl vs PyTorch eager\n")
    log("results written to %s (%.0f s)" % (os.path.relpath(rep, ROOT), elapsed))
    return 0


if __name__ == "__main__":
    sys.exit(main())
