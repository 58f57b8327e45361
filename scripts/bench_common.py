"""What the benchmark scripts share: the CPU's name for their reports, and reading the two small
text formats the benchmark programs write ("key = value" run files, "key value" output lines)."""
import os


def cpu_model(default="?"):
    """The CPU's model name from /proc/cpuinfo, or `default`."""
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return default


def read_kv(path):
    """The "key = value" lines of a file (e.g. stsl-bench's run.txt); {} when it does not exist."""
    out = {}
    if os.path.exists(path):
        with open(path) as f:
            for line in f:
                if "=" in line:
                    k, v = line.split("=", 1)
                    out[k.strip()] = v.strip()
    return out


def parse_key_values(text):
    """The "key value" lines a benchmark program prints (bench-torchscript, cuda_probe), each value
    a float where it reads as one, else the text."""
    out = {}
    for line in text.splitlines():
        k, _, v = line.partition(" ")
        try:
            out[k] = float(v)
        except ValueError:
            out[k] = v
    return out


def replace_block(path, begin, end, block, new_file_heading=""):
    """Write `block` between the marker lines `begin` and `end` of the markdown file `path`,
    keeping everything outside them (the page's hand-written text).  A file without the markers
    gets them, with the block, at its end; a missing file is made from `new_file_heading`."""
    text = open(path).read() if os.path.exists(path) else new_file_heading
    body = begin + "\n" + block.strip("\n") + "\n" + end
    if begin in text and end in text[text.index(begin):]:
        i = text.index(begin)
        j = text.index(end, i) + len(end)
        text = text[:i] + body + text[j:]
    else:
        text = (text.rstrip("\n") + "\n\n" if text.strip() else "") + body + "\n"
    with open(path, "w") as f:
        f.write(text)
