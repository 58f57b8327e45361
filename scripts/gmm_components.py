"""Where the samples of a GMM-testbed dump lie: per solver, how many samples sit in each mixture
component (the nearest prior mean) beside the exact posterior's component weights, the share in
components the posterior gives (almost) no weight, and the data fit.

    stsl-bench --prior gmm --dx 800 --dy 4 --seed 1 --n 200 --solvers dps,stsl --dump D
    /usr/bin/python3 scripts/gmm_components.py D [--below 0.01]

Reads the dump's means.csv, posterior_weights.csv, A.csv, y.csv, sigma_y.csv and every other
CSV as one solver's samples (exact.csv: exact posterior samples).  The residual is the root mean
square of y - A x per measurement coordinate, in units of sigma_y (about 1 for exact samples when
the posterior is tight, more where the prior keeps part of the noise in).

With --prior it measures how well each solver samples the PRIOR instead (run with guidance off,
e.g. `--solvers ddim,dps-mo:zeta=0:inner=0 --n 2000`): the within-component spread (root mean
square distance to the nearest prior mean per coordinate, 1 for exact draws: unit covariances)
and the total variation between the share of samples per component and weights.csv, as
tests/solvers/test_solvers_exact.c's prior_fit computes them.
"""
import argparse
import os

import numpy as np

DUMP_FILES = {"means", "posterior_means", "posterior_weights", "weights", "A", "y", "sigma_y"}


def load(d, name):
    return np.atleast_2d(np.loadtxt(os.path.join(d, name + ".csv"), delimiter=",", ndmin=2))


def nearest(x, means):
    """Each sample's nearest prior mean and its squared distance."""
    d2 = ((x[:, None, :] - means[None, :, :]) ** 2).sum(axis=2)
    comp = d2.argmin(axis=1)
    return comp, d2[np.arange(len(x)), comp]


def prior_fit(dump, means, solvers):
    w = load(dump, "weights").ravel()
    print("%-24s %7s %10s %10s" % ("samples", "n", "spread", "weight TV"))
    for s in solvers:
        if s == "exact":   # posterior samples: nothing to compare with the prior
            continue
        x = load(dump, s)
        comp, d2 = nearest(x, means)
        spread = np.sqrt(d2.mean() / x.shape[1])
        tv = 0.5 * np.abs(np.bincount(comp, minlength=len(means)) / len(x) - w).sum()
        print("%-24s %7d %10.3f %10.3f" % (s, len(x), spread, tv))


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("dump", help="directory written by stsl-bench --dump")
    ap.add_argument("--below", type=float, default=0.01,
                    help="posterior weight under which a component counts as astray (default 0.01)")
    ap.add_argument("--prior", action="store_true",
                    help="spread and weight TV against the prior (guidance-off runs)")
    a = ap.parse_args()
    means = load(a.dump, "means")
    post_w = load(a.dump, "posterior_weights").ravel()
    A = load(a.dump, "A")
    y = load(a.dump, "y").ravel()
    sigma_y = float(load(a.dump, "sigma_y").ravel()[0])
    solvers = sorted(f[:-4] for f in os.listdir(a.dump)
                     if f.endswith(".csv") and f[:-4] not in DUMP_FILES)
    if a.prior:
        prior_fit(a.dump, means, solvers)
        return
    top = np.argsort(-post_w)[:3]
    print("posterior weights, largest: " +
          ", ".join("component %d %.3g" % (k, post_w[k]) for k in top))
    print("%-12s %7s %10s %18s %12s  %s" % ("samples", "n", "astray[%]", "max astray weight",
                                           "resid/sig_y", "samples per component (weight)"))
    for s in solvers:
        x = load(a.dump, s)
        comp, _ = nearest(x, means)
        counts = np.bincount(comp, minlength=len(means))
        astray = post_w[comp] < a.below
        worst = post_w[comp[astray]].max() if astray.any() else float("nan")
        r = x @ A.T - y[None, :]
        resid = np.sqrt((r ** 2).mean()) / sigma_y
        held = ", ".join("%d: %d (%.2g)" % (k, counts[k], post_w[k])
                         for k in np.argsort(-counts) if counts[k] > 0)
        print("%-12s %7d %10.1f %18.3g %12.2f  %s" % (s, len(x), 100 * astray.mean(), worst, resid,
                                                     held))


if __name__ == "__main__":
    main()
