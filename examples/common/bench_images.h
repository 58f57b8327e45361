/*
 * bench_images.h -- the image mode of stsl-bench:
 *
 *   stsl-bench --task TASK --solver SOLVER --n N [--steps T] [--csv FILE] [--out DIR] ...
 *
 * Restores the first N images of the fixed Fashion-MNIST test list (data/bench_indices.txt, read
 * from Debian's dataset-fashion-mnist with zlib) and reports PSNR, SSIM, NFEs and wall time per
 * image, as a table on stdout and CSV.  --out DIR receives the restorations (raw float32 and PNG)
 * for scripts/bench_eval.py (classifier accuracy, Frechet feature distance).
 */
#ifndef STSL_BENCH_IMAGES_H
#define STSL_BENCH_IMAGES_H

/* main() of the image mode: argv as given to stsl-bench.  Returns the exit status. */
int stsl_bench_images_main(int argc, char **argv);
/* The image mode's options, for --help (stdout). */
void stsl_bench_images_help(void);

#endif
