#!/usr/bin/python3
"""Write the demo / benchmark data derived from Debian's Fashion-MNIST test split:

- data/samples/fmnist-test-<index>.png: 8 test images (8-bit grey PNG, 28x28), the first test
  image of each of 8 classes;
- data/bench_indices.txt: 100 fixed test indices, the first 10 of each class in index order
  (benchmarks read the images from the Debian dataset at run time);
- data/README.md describing both.

  /usr/bin/python3 scripts/train/make_data.py
"""
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import numpy as np  # noqa: E402
from PIL import Image  # noqa: E402

from common import FMNIST_CLASSES, REPO, load_fmnist_uint8  # noqa: E402

DEMO_CLASSES = [0, 1, 2, 3, 5, 7, 8, 9]  # T-shirt, Trouser, Pullover, Dress, Sandal, Sneaker, Bag, Ankle boot


def main():
    x, y = load_fmnist_uint8("test")
    data = os.path.join(REPO, "data")
    os.makedirs(os.path.join(data, "samples"), exist_ok=True)
    demo = []
    for c in DEMO_CLASSES:
        i = int(np.nonzero(y == c)[0][0])
        Image.fromarray(np.ascontiguousarray(x[i]), "L").save(
            os.path.join(data, "samples", "fmnist-test-%d.png" % i))
        demo.append((i, c))
    bench = []
    for c in range(10):
        bench += [(int(i), c) for i in np.nonzero(y == c)[0][:10]]
    bench.sort()
    with open(os.path.join(data, "bench_indices.txt"), "w") as f:
        f.write("# libstsl benchmark subset of the Fashion-MNIST TEST split (t10k, 10000 images),\n")
        f.write("# read from Debian's dataset-fashion-mnist at run time.\n")
        f.write("# 100 zero-based image indices: the first 10 test images of each of the 10 classes,\n")
        f.write("# sorted ascending. Format: one decimal index per line; lines starting with '#' are comments.\n")
        f.write("# Written by scripts/train/make_data.py.\n")
        for i, _ in bench:
            f.write("%d\n" % i)
    rows = "\n".join("| `samples/fmnist-test-%d.png` | %d | %d | %s |" % (i, i, c, FMNIST_CLASSES[c])
                     for i, c in demo)
    brows = "\n".join("| %d %s | %s |" % (c, FMNIST_CLASSES[c], ", ".join(str(i) for i, cc in bench if cc == c))
                      for c in range(10))
    readme = """# Data

Everything here is derived from the Fashion-MNIST **test** split (`t10k-*`, 10 000 images, 28x28,
8-bit grey) as installed by Debian's `dataset-fashion-mnist` package
(`/usr/share/datasets/fashion-mnist/`). Fashion-MNIST is (c) Zalando SE, MIT licence.
The files are written by `/usr/bin/python3 scripts/train/make_data.py`.

Indices are zero-based positions in the test split. Images cross into the library as
float32 in `[-1, 1]` (0 -> -1, 255 -> 1), see `docs/models.md`.

## Demo images: `samples/`

Eight test images, 28x28 8-bit greyscale PNG, the first test image of each of eight classes:

| file | test index | class | class name |
|---|---|---|---|
%s

## Benchmark subset: `bench_indices.txt`

100 fixed test indices used by the benchmarks: the first 10 test images of each class, in index
order, listed one per line, sorted ascending (`#` lines are comments). The benchmark reads the images
from the Debian dataset at run time; no image is copied here.

| class | test indices |
|---|---|
%s
""" % (rows, brows)
    with open(os.path.join(data, "README.md"), "w") as f:
        f.write(readme)
    print("demo", demo)
    print("bench", len(bench))


if __name__ == "__main__":
    main()
