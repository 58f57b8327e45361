#!/usr/bin/python3
"""The benchmark scripts rewrite only their own block of a documentation page.

    /usr/bin/python3 tests/tools/check_bench_reports.py   (make check-bench-reports)

`make bench-torchscript` used to write its whole page, which dropped the page's hand-written
sections on every rerun.  Every report script now writes through bench_common.replace_block,
between two marker lines.  Checked here:
1. replace_block keeps the text outside the markers, replaces the text between them, writes the
   same page again when given the same block, appends the markers to a page without them and
   makes a missing page from its heading;
2. each report script names its markers, and its page in docs/ holds each of them once, in order
   (a page without them would get a second copy of the block at its end).
Prints "bench reports: N passed, M failed" like the shell checks (tests/common/checks.sh).
"""
import os
import sys
import tempfile

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, os.path.join(ROOT, "scripts"))
from bench_common import replace_block  # noqa: E402

# (script, page, begin marker, end marker)
REPORTS = [
    ("scripts/bench_torchscript.py", "docs/torchscript-bench.md",
     "<!-- bench-torchscript:begin -->", "<!-- bench-torchscript:end -->"),
    ("scripts/batch_bench.py", "docs/scaling.md", "<!-- batch-bench -->", "<!-- /batch-bench -->"),
    ("scripts/peer/peer_bench.py", "docs/peer-bench.md",
     "<!-- peer-results:begin -->", "<!-- peer-results:end -->"),
    ("scripts/real_models_bench.py", "docs/real-models.md",
     "<!-- measured:begin -->", "<!-- measured:end -->"),
]

passed = failed = 0


def check(cond, what):
    global passed, failed
    if cond:
        passed += 1
        print("  ok: " + what)
    else:
        failed += 1
        print("  FAIL: " + what)


def read(path):
    with open(path) as f:
        return f.read()


def write(path, text):
    with open(path, "w") as f:
        f.write(text)


def main():
    print("=== bench reports (scripts/bench_common.py replace_block)")
    b, e = "<!-- x:begin -->", "<!-- x:end -->"
    with tempfile.TemporaryDirectory() as d:
        page = os.path.join(d, "page.md")
        before, after = "# Title\n\nhand-written intro\n\n", "\n\n## Notes\n\nhand-written notes\n"
        write(page, before + b + "\nold table\n" + e + after)
        replace_block(page, b, e, "new table\n")
        text = read(page)
        check(text == before + b + "\nnew table\n" + e + after,
              "the block is replaced and the text around it kept")
        replace_block(page, b, e, "new table\n")
        check(read(page) == text, "the same block again writes the same page")
        write(page, "# Title\n\nno markers yet\n")
        replace_block(page, b, e, "table")
        check(read(page) == "# Title\n\nno markers yet\n\n" + b + "\ntable\n" + e + "\n",
              "a page without the markers gets them, with the block, at its end")
        write(page, e + "\n" + b + "\nold\n" + e + "\n")
        replace_block(page, b, e, "new")
        check(read(page) == e + "\n" + b + "\nnew\n" + e + "\n",
              "an end marker before the begin marker is left alone")
        missing = os.path.join(d, "missing.md")
        replace_block(missing, b, e, "table", new_file_heading="# Heading\n")
        check(read(missing) == "# Heading\n\n" + b + "\ntable\n" + e + "\n",
              "a missing page is made from its heading")
    for script, page, begin, end in REPORTS:
        src, doc = read(os.path.join(ROOT, script)), read(os.path.join(ROOT, page))
        check("replace_block" in src and begin in src and end in src,
              "%s writes through replace_block with its markers" % script)
        check(doc.count(begin) == 1 and doc.count(end) == 1 and doc.index(begin) < doc.index(end),
              "%s holds %s ... %s once, in order" % (page, begin, end))
    print("bench reports: %d passed, %d failed" % (passed, failed))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
