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
