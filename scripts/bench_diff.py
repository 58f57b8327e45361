#!/usr/bin/python3
"""New-minus-old table of two image-benchmark reports (scripts/bench_report.py's Markdown).

  /usr/bin/python3 scripts/bench_diff.py NEW.md OLD.md [OLDER.md ...]

For every task section (`## TASK`) and configuration row of NEW.md, the same configuration is
looked up in the OLD reports in the order given (the first that has it is the baseline: a partial
rerun such as docs/benchmarks-dps-mo.md supersedes docs/benchmarks.md for its rows).  Printed:
PSNR old and new with new - old and its 95 % interval from the two standard errors as if the runs
were independent (the images and measurements are the same, so the paired interval is narrower:
this one is conservative), SSIM, UNet NFEs per image and seconds per image.
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
    if len(sys.argv) < 3:
        sys.exit(__doc__)
    new = read_report(sys.argv[1])
    olds = [(p, read_report(p)) for p in sys.argv[2:]]
    print("| task | config | PSNR old | PSNR new | new - old (95 %) | SSIM old / new | UNet NFE old / new | s/image old / new | baseline |")
    print("|---|---|---|---|---|---|---|---|---|")
    for (task, config), r in new.items():
        base = next(((p, o[(task, config)]) for p, o in olds if (task, config) in o), None)
        if base is None:
            continue
        path, o = base
        d = num(r, "PSNR") - num(o, "PSNR")
        ci = 1.96 * math.hypot(num(r, "+-SE"), num(o, "+-SE"))
        nfe = lambda row: num(row, "UNet fwd") + num(row, "UNet VJP")
        print("| %s | %s | %.2f | %.2f | %+.2f +- %.2f | %s / %s | %.0f / %.0f | %s / %s | %s |" % (
            task, config, num(o, "PSNR"), num(r, "PSNR"), d, ci, o.get("SSIM", "?"), r.get("SSIM", "?"),
            nfe(o), nfe(r), o.get("s/image", "?"), r.get("s/image", "?"), path.split("/")[-1]))


if __name__ == "__main__":
    main()
