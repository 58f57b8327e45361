#!/usr/bin/python3
"""New-minus-old table of two image-benchmark reports (scripts/bench_report.py's Markdown).

  /usr/bin/python3 scripts/bench_diff.py [--as NEWCONFIG=OLDCONFIG ...] NEW.md OLD.md [OLDER.md ...]

For every task section (`## TASK`) and configuration row of NEW.md, the same configuration is
looked up in the OLD reports in the order given (the first that has it is the baseline: a partial
rerun such as docs/benchmarks-dps-mo.md supersedes docs/benchmarks.md for its rows).  Printed:
PSNR old and new with new - old and its 95 % interval from the two standard errors as if the runs
were independent (the images and measurements are the same, so the paired interval is narrower:
this one is conservative), SSIM, UNet NFEs per image and seconds per image.  --as compares a
configuration with an old one of another label (a default whose step count changed: the old
default ran as dps-mo@100, the new one as dps-mo@50).
"""
import math
import sys


def read_report(path):
    """{(task, config): row dict} from a report's task tables."""
    rows, task, head = {}, None, None
    for line in open(path):
        line = line.rstrip("\n")
        if line.startswith("## "):
            task, head = line[3:].strip(), None
            continue
        if not line.startswith("|") or task is None:
            continue
        cells = [c.strip() for c in line.strip("|").split("|")]
        if cells and cells[0] == "config":
            head = cells
            continue
        if head is None or set(line) <= set("|-: "):
            continue
        if len(cells) == len(head):
            rows[(task, cells[0])] = dict(zip(head, cells))
    return rows


def num(row, key):
    try:
        return float(row[key])
    except (KeyError, ValueError):
        return float("nan")


def main():
    args, alias = sys.argv[1:], {}
    while args and args[0] == "--as":
        if len(args) < 2 or "=" not in args[1]:
            sys.exit(__doc__)
        k, v = args[1].split("=", 1)
        alias[k] = v
        args = args[2:]
    if len(args) < 2:
        sys.exit(__doc__)
    new = read_report(args[0])
    olds = [(p, read_report(p)) for p in args[1:]]
    print("| task | config | PSNR old | PSNR new | new - old (95 %) | SSIM old / new | UNet NFE old / new | s/image old / new | baseline |")
    print("|---|---|---|---|---|---|---|---|---|")
    for (task, config), r in new.items():
        key = (task, alias.get(config, config))
        base = next(((p, o[key]) for p, o in olds if key in o), None)
        if base is None:
            continue
        path, o = base
        d = num(r, "PSNR") - num(o, "PSNR")
        ci = 1.96 * math.hypot(num(r, "+-SE"), num(o, "+-SE"))
        nfe = lambda row: num(row, "UNet fwd") + num(row, "UNet VJP")
        print("| %s | %s | %.2f | %.2f | %+.2f +- %.2f | %s / %s | %.0f / %.0f | %s / %s | %s |" % (
            task, config if key[1] == config else "%s (old: %s)" % (config, key[1]), num(o, "PSNR"), num(r, "PSNR"), d, ci, o.get("SSIM", "?"), r.get("SSIM", "?"),
            nfe(o), nfe(r), o.get("s/image", "?"), r.get("s/image", "?"), path.split("/")[-1]))


if __name__ == "__main__":
    main()
