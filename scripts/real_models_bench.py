#!/usr/bin/python3
"""Measure libstsl on the real guided-diffusion and Stable Diffusion architectures, random-initialised
at full size (no weights are downloaded): export, load, forward and VJP in the library and in eager
PyTorch, and seconds per solver step with peak memory.  Writes docs/real-models.md's measured table.

    PYTHONPATH=HFHUB/src scripts/real_models_bench.py --guided-diffusion GD_REPO \\
        --diffusers DIFFUSERS_0.19.0/src --models adm-ffhq256,adm-imagenet256,sd15 \\
        [--threads 1,2] [--solvers dps,dps-mo,rmp,stsl] [--steps 1] [--only export,call,solve]

The upstream code is the user's copy (fetched from its public repository), never libstsl's.
Heavy: ADM-256 needs ~3 GB and ~20 s per DPS step on one thread; SD-512 ~11 GB and minutes per
step.  Run one at a time.  Results accumulate in docs/bench/real-models.json (one row per
measurement, with the command and date) and the table between the markers of
docs/real-models.md is regenerated from it.
"""
import argparse
import datetime
import functools
import json
import os
import platform
import re
import subprocess
import sys
import time

ROOT = os.path.normpath(os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
OUT = os.path.join(ROOT, "build", "real-models")
# committed beside the report: a fresh clone can add rows without losing the earlier ones
RESULTS = os.path.join(ROOT, "docs", "bench", "real-models.json")
DOC = os.path.join(ROOT, "docs", "real-models.md")
EXPORTER = os.path.join(ROOT, "scripts", "export_torchscript.py")

sys.path.insert(0, os.path.join(ROOT, "scripts"))
from bench_common import cpu_model, replace_block  # noqa: E402

# Architectures as published: DPS configs/model_config.yaml (FFHQ 256) and guided-diffusion's
# README flags for the unconditional ImageNet 256x256 model; Stable Diffusion v1.5's
# unet/vae/scheduler config.json.
ADM = {
    "adm-ffhq256": dict(image_size=256, num_channels=128, num_res_blocks=1, channel_mult="",
                        learn_sigma=True, class_cond=False, use_checkpoint=False,
                        attention_resolutions=16, num_heads=4, num_head_channels=64,
                        num_heads_upsample=-1, use_scale_shift_norm=True, dropout=0.0,
                        resblock_updown=True, use_fp16=False, use_new_attention_order=False),
    "adm-imagenet256": dict(image_size=256, num_channels=256, num_res_blocks=2, channel_mult="",
                            learn_sigma=True, class_cond=False, use_checkpoint=False,
                            attention_resolutions="32,16,8", num_heads=4, num_head_channels=64,
                            num_heads_upsample=-1, use_scale_shift_norm=True, dropout=0.0,
                            resblock_updown=True, use_fp16=True, use_new_attention_order=False),
}
SD15 = {
    "unet": {"_class_name": "UNet2DConditionModel", "_diffusers_version": "0.19.0",
             "act_fn": "silu", "attention_head_dim": 8, "block_out_channels": [320, 640, 1280, 1280],
             "center_input_sample": False, "cross_attention_dim": 768,
             "down_block_types": ["CrossAttnDownBlock2D", "CrossAttnDownBlock2D",
                                  "CrossAttnDownBlock2D", "DownBlock2D"],
             "downsample_padding": 1, "flip_sin_to_cos": True, "freq_shift": 0, "in_channels": 4,
             "layers_per_block": 2, "mid_block_scale_factor": 1, "norm_eps": 1e-05,
             "norm_num_groups": 32, "out_channels": 4, "sample_size": 64,
             "up_block_types": ["UpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D",
                                "CrossAttnUpBlock2D"]},
    "vae": {"_class_name": "AutoencoderKL", "_diffusers_version": "0.19.0", "act_fn": "silu",
            "block_out_channels": [128, 256, 512, 512],
            "down_block_types": ["DownEncoderBlock2D"] * 4, "in_channels": 3,
            "latent_channels": 4, "layers_per_block": 2, "norm_num_groups": 32,
            "out_channels": 3, "sample_size": 512, "up_block_types": ["UpDecoderBlock2D"] * 4,
            "scaling_factor": 0.18215},
    "scheduler": {"_class_name": "PNDMScheduler", "beta_end": 0.012,
                  "beta_schedule": "scaled_linear", "beta_start": 0.00085,
                  "num_train_timesteps": 1000, "skip_prk_steps": True, "steps_offset": 1},
}


def measured(cmd, env=None, cwd=None):
    """Run cmd under /usr/bin/time: (stdout, stderr, wall seconds, peak RSS GiB, rc)."""
    t0 = time.time()
    r = subprocess.run(["/usr/bin/time", "-f", "STSLTIME %e %M"] + cmd, capture_output=True,
                       text=True, env=env, cwd=cwd)
    wall = time.time() - t0
    m = re.search(r"STSLTIME ([\d.]+) (\d+)", r.stderr)
    rss = int(m.group(2)) / 1024 / 1024 if m else float("nan")
    err = re.sub(r"STSLTIME .*\n?", "", r.stderr)
    return r.stdout, err, wall, rss, r.returncode


def measured_timings(cmd, what):
    """Run a timing program under measured(): its 'key value' lines as a dict, and its peak RSS
    GiB; exits with `what` and the end of stderr when it fails."""
    out, err, _, rss, rc = measured(cmd)
    if rc:
        raise SystemExit(f"{what} failed: {err.strip()[-300:]}")
    return dict(line.split(" ", 1) for line in out.splitlines() if " " in line), rss


@functools.lru_cache(maxsize=None)
def machine():
    cpu = cpu_model()
    import torch
    return f"{cpu}, {os.cpu_count()} cores, torch {torch.__version__}, {platform.system()}"


def load_results():
    if os.path.exists(RESULTS):
        with open(RESULTS) as f:
            return json.load(f)
    return []


def record(rows, **row):
    row["date"] = datetime.datetime.utcnow().strftime("%Y-%m-%d %H:%M UTC")
    row["load"] = round(os.getloadavg()[1], 1)   # 5-minute load average (shared machine)
    row["machine"] = machine()
    rows.append(row)
    os.makedirs(OUT, exist_ok=True)
    with open(RESULTS, "w") as f:
        json.dump(rows, f, indent=1)
    print(json.dumps(row), flush=True)


def files(model):
    if model in ADM:
        return {"unet": os.path.join(OUT, f"{model}.pt")}
    return {"unet": os.path.join(OUT, "sd15-unet.pt"), "vae": os.path.join(OUT, "sd15-vae.pt")}


def export(a, model, rows):
    os.makedirs(OUT, exist_ok=True)
    f = files(model)
    if model in ADM:
        cfg = os.path.join(OUT, f"{model}.json")
        with open(cfg, "w") as fh:
            json.dump(ADM[model], fh)
        jobs = [("unet", ["adm", "--code", a.guided_diffusion, "--config", cfg, "--random-init",
                          "--out", f["unet"]])]
    else:
        pipe = os.path.join(OUT, "sd15")
        for sub, cfg in SD15.items():
            os.makedirs(os.path.join(pipe, sub), exist_ok=True)
            name = "scheduler_config.json" if sub == "scheduler" else "config.json"
            with open(os.path.join(pipe, sub, name), "w") as fh:
                json.dump(cfg, fh)
        jobs = [j for j in [("vae", ["sd-vae", "--code", a.diffusers, "--pipeline", pipe, "--random-init",
                         "--out", f["vae"]]),
                ("unet", ["sd-unet", "--code", a.diffusers, "--pipeline", pipe, "--random-init",
                          "--pairs-with", os.path.basename(f["vae"]), "--out", f["unet"]])]
                if j[0] in a.sd_parts.split(",")]
    for part, args in jobs:
        out, err, wall, rss, rc = measured([sys.executable, EXPORTER] + args)
        if rc:
            raise SystemExit(f"export {model} {part} failed: {err.strip().splitlines()[-1:]}")
        record(rows, model=model, part=part, what="export (trace + check vs eager)",
               seconds=round(wall, 1), peak_gib=round(rss, 2), file_mb=round(
                   os.path.getsize(f[part]) / 2**20), command=" ".join(["export_torchscript.py"] + args))


# Both eager snippets: one warm-up call, then the median of REPEATS timed calls (REPEATS is
# substituted by eager_script, like the library side's --repeats).
EAGER_TIMED = r"""
import sys, time, torch
def timed(name, fn):
    fn()  # warm-up
    ts = []
    for _ in range(REPEATS):
        a = time.time(); fn(); ts.append(time.time() - a)
    print(f"{name}_ms {sorted(ts)[len(ts) // 2] * 1e3:.1f}", flush=True)
"""


def eager_script(body, repeats):
    return EAGER_TIMED.replace("REPEATS", str(repeats)) + body


EAGER = r"""
sys.path.insert(0, sys.argv[1])
from stsl_export import frontends
kind, code, arg, threads = sys.argv[2], sys.argv[3], sys.argv[4], int(sys.argv[5])
torch.set_num_threads(threads)
torch.manual_seed(0)
if kind == "adm":
    import json
    m, _, size = frontends.build_adm(code, json.load(open(arg)), None, random_init=True)
    shape = (1, 3, size, size)
else:
    m, kw, _ = frontends.build_sd_unet(code, arg, None, random_init=True)
    shape = (1,) + tuple(kw["sample_shape"])
for p in m.parameters():
    p.requires_grad_(False)
x = torch.randn(shape); v = torch.randn(shape); t = torch.full((1,), 500.0)
def fwd():
    with torch.no_grad():
        m(x, t)
def vjp():
    xx = x.clone().requires_grad_(True)
    out = m(xx, t)
    torch.autograd.grad(out, xx, v)
for name, fn in (("forward", fwd), ("vjp", vjp)):
    timed(name, fn)
"""


EAGER_VAE = r"""
sys.path.insert(0, sys.argv[1])
from stsl_export import frontends
code, pipe, threads = sys.argv[2], sys.argv[3], int(sys.argv[4])
torch.set_num_threads(threads)
torch.manual_seed(0)
m, kw, _ = frontends.build_sd_vae(code, pipe, None, random_init=True)
for p in m.parameters():
    p.requires_grad_(False)
s = kw["latent_scale"]
x = torch.rand((1,) + tuple(kw["image_shape"])) * 2 - 1
z = torch.randn((1,) + tuple(kw["latent_shape"]))
u = torch.randn((1,) + tuple(kw["image_shape"]))
def encode():   # the library's z = latent_scale * encode(x)
    with torch.no_grad():
        s * m.encode(x)
def decode():   # x = decode(z / latent_scale)
    with torch.no_grad():
        m.decode(z / s)
def decode_vjp():
    zz = z.clone().requires_grad_(True)
    out = m.decode(zz / s)
    torch.autograd.grad(out, zz, u)
for name, fn in (("encode", encode), ("decode", decode), ("decode_vjp", decode_vjp)):
    timed(name, fn)
"""


def vae_calls(a, rows):
    """The SD autoencoder's three calls, library then eager, at each thread count."""
    f = files("sd15")
    reps = str(a.repeats)
    for th in a.thread_list:
        kv, rss = measured_timings([os.path.join(ROOT, "bin", "bench-torchscript"),
                                   f["vae"], "--autoencoder", "--threads", str(th),
                                   "--repeats", reps, "--warmup", "1"],
                                   "bench-torchscript --autoencoder")
        record(rows, model="sd15", part="vae", what=f"library calls, {th} thread(s)",
               load_s=round(float(kv["load_ms"]) / 1e3, 1),
               **{f"{k}_s": round(float(kv[f"{k}_median_ms"]) / 1e3, 2)
                  for k in ("encode", "decode", "decode_vjp")},
               repeats=a.repeats, peak_gib=round(rss, 2),
               command=f"bench-torchscript {os.path.basename(f['vae'])} --autoencoder --threads {th} "
                       f"--repeats {reps} --warmup 1")
        kv, rss = measured_timings([sys.executable, "-c", eager_script(EAGER_VAE, reps),
                                   os.path.join(ROOT, "scripts"), a.diffusers,
                                   os.path.join(OUT, "sd15"), str(th)],
                                   "eager VAE timing")
        record(rows, model="sd15", part="vae", what=f"eager PyTorch calls, {th} thread(s)",
               **{f"{k}_s": round(float(kv[f"{k}_ms"]) / 1e3, 2)
                  for k in ("encode", "decode", "decode_vjp")},
               repeats=a.repeats, peak_gib=round(rss, 2),
               command=f"real_models_bench.py eager VAE timing (same warm-up: 1 call, median of {reps})")


def calls(a, model, rows):
    f = files(model)
    if model == "sd15" and "vae" in a.sd_parts.split(","):
        vae_calls(a, rows)
    if model == "sd15" and "unet" not in a.sd_parts.split(","):
        return
    for th in a.thread_list:
        kv, rss = measured_timings([os.path.join(ROOT, "bin", "bench-torchscript"),
                                   f["unet"], "--threads", str(th), "--repeats",
                                   str(a.repeats), "--warmup", "1"],
                                   "bench-torchscript")
        record(rows, model=model, part="unet", what=f"library calls, {th} thread(s)",
               load_s=round(float(kv["load_ms"]) / 1e3, 1),
               forward_s=round(float(kv["forward_median_ms"]) / 1e3, 2),
               vjp_s=round(float(kv["vjp_median_ms"]) / 1e3, 2),
               **({"repeats": a.repeats} if a.repeats != 1 else {}), peak_gib=round(rss, 2),
               command=f"bench-torchscript {os.path.basename(f['unet'])} --threads {th} "
                       f"--repeats {a.repeats} --warmup 1")
        if model in ADM:
            args = ["adm", a.guided_diffusion, os.path.join(OUT, f"{model}.json")]
        else:
            args = ["sd", a.diffusers, os.path.join(OUT, "sd15")]
        kv, rss = measured_timings([sys.executable, "-c", eager_script(EAGER, a.repeats),
                                   os.path.join(ROOT, "scripts")] + args + [str(th)],
                                   "eager timing")
        record(rows, model=model, part="unet", what=f"eager PyTorch calls, {th} thread(s)",
               forward_s=round(float(kv["forward_ms"]) / 1e3, 2),
               vjp_s=round(float(kv["vjp_ms"]) / 1e3, 2),
               **({"repeats": a.repeats} if a.repeats != 1 else {}), peak_gib=round(rss, 2),
               command="real_models_bench.py eager timing (same warm-up: 1 call"
                       + (f", median of {a.repeats})" if a.repeats != 1 else ")"))


def solve(a, model, rows):
    f = files(model)
    img = os.path.join(ROOT, "data", "samples", "fmnist-test-0.png")
    for solver in a.solver_list:
        steps = max(a.steps, 2) if solver == "dps-mo" else a.steps   # dps-mo needs 2 levels
        cmd = [os.path.join(ROOT, "bin", "stsl-restore"), img, os.path.join(OUT, f"{model}-{solver}.png"),
               "--task", "gaussian-blur", "--solver", solver, "--steps", str(steps), "--threads",
               str(a.solve_threads), "--model", f["unet"], "--resize", "--verbose"]
        if "vae" in f:
            cmd += ["--vae", f["vae"]]
        if a.batch_limit:
            cmd += ["--batch-limit", str(a.batch_limit)]
        out, err, wall, rss, rc = measured(cmd)
        if rc:
            lines = [ln for ln in err.splitlines() if ln.startswith("stsl-restore:")]
            record(rows, model=model, part=solver, what="solver run FAILED",
                   error=(lines[-1] if lines else err.strip()[-300:])[:300], peak_gib=round(rss, 2))
            continue
        m = re.search(r"(\d+) forward \+ (\d+) vjp, decoder (\d+) forward \+ (\d+) vjp; ([\d.]+) s",
                      out + err)
        record(rows, model=model, part=solver,
               what=f"{steps} step(s), {a.solve_threads} thread(s)",
               solve_s=float(m.group(5)) if m else None,
               nfe=m.group(0).rsplit(";", 1)[0] if m else None,
               wall_s=round(wall, 1), peak_gib=round(rss, 2),
               command=" ".join(["stsl-restore", "IMG", "OUT"] + cmd[3:]).replace(OUT + "/", ""))


def render(rows):
    machines = []
    for r in rows:
        if r.get("machine", "?") not in machines:
            machines.append(r.get("machine", "?"))
    lines = ["Measured with `scripts/real_models_bench.py`; random-initialised weights (timings do not "
             "depend on them). Each row: what was run, its numbers, its date, and the machine (M1, "
             "M2, ... below; compare times only within one machine). Peak = peak resident memory of "
             "the process; load = the machine's 5-minute load average when the row was written (2 cores "
             "shared by several engineers: with load above 2 every time is inflated accordingly; rows "
             "without it were written before it was recorded). Call times are the median of `repeats` "
             "timed calls after one warm-up call (1 where not given).", ""]
    lines += [f"- M{i + 1}: {m}" for i, m in enumerate(machines)]
    lines += ["", "| model | part | measurement | numbers | peak GiB | load | machine | date |",
              "|---|---|---|---|---|---|---|---|"]
    for r in rows:
        nums = ", ".join(f"{k} {v}" for k, v in r.items()
                         if k not in ("model", "part", "what", "peak_gib", "date", "command", "load",
                                      "machine"))
        lines.append(f"| {r['model']} | {r['part']} | {r['what']} | {nums} | "
                     f"{r.get('peak_gib', '')} | {r.get('load', '?')} | "
                     f"M{machines.index(r.get('machine', '?')) + 1} | {r['date']} |")
    lines += ["", "Commands (`GD` = the guided-diffusion repository, `DIFFUSERS` = diffusers "
              "0.19.0's src/, files under build/real-models/):", ""]
    seen = set()
    for r in rows:
        cmd = r.get("command")
        if cmd and cmd not in seen:
            seen.add(cmd)
            cmd = cmd.replace(OUT + "/", "")
            cmd = re.sub(r"--code \S*guided-diffusion\S*", "--code GD", cmd)
            cmd = re.sub(r"--code \S*diffusers\S*", "--code DIFFUSERS", cmd)
            lines.append(f"- {r['model']} {r['part']}: `{cmd}`")
    table = "\n".join(lines) + "\n"
    replace_block(DOC, "<!-- measured:begin -->", "<!-- measured:end -->", table)
    return table


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--guided-diffusion", help="the guided-diffusion repository")
    ap.add_argument("--diffusers", help="diffusers 0.19.0 source (src/ of the repository)")
    ap.add_argument("--models", default="adm-ffhq256")
    ap.add_argument("--threads", default="1,2")
    ap.add_argument("--solvers", default="dps,dps-mo,rmp,stsl")
    ap.add_argument("--steps", type=int, default=1)
    ap.add_argument("--repeats", type=int, default=1, help="timed calls per measurement (median)")
    ap.add_argument("--solve-threads", type=int, default=1)
    ap.add_argument("--only", default="export,call,solve")
    ap.add_argument("--sd-parts", default="vae,unet", help="which SD files to export")
    ap.add_argument("--batch-limit", type=int, help="stsl-restore --batch-limit (memory bound)")
    ap.add_argument("--render", action="store_true", help="only rewrite the table")
    a = ap.parse_args()
    a.thread_list = [int(t) for t in a.threads.split(",")]
    a.solver_list = a.solvers.split(",")
    rows = load_results()
    if not a.render:
        for model in a.models.split(","):
            if model not in ADM and model != "sd15":
                raise SystemExit(f"unknown model {model}")
            steps = a.only.split(",")
            if "export" in steps:
                export(a, model, rows)
            if "call" in steps:
                calls(a, model, rows)
            if "solve" in steps:
                solve(a, model, rows)
    print(render(rows))


if __name__ == "__main__":
    main()
