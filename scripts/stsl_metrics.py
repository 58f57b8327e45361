"""PSNR and SSIM of images in [-1, 1], the one Python definition for every script (the C one is
examples/common/metrics.c; tests/tools/test_metrics.c checks that the two agree).

Both map the values to [0, 1] and clip them there first.  `a` and `b` are one image (C, H, W) or a
batch (N, C, H, W), as NumPy arrays or CPU/GPU torch tensors; a batch gives the mean over its images.
"""
import numpy as np

SSIM_WINDOW = 11      # Gaussian window side
SSIM_SIGMA = 1.5
SSIM_K1, SSIM_K2 = 0.01, 0.03


def _unit(x):
    if hasattr(x, "detach"):   # a torch tensor
        x = x.detach().cpu().numpy()
    x = np.asarray(x, dtype=np.float64)
    return np.clip(0.5 * (x + 1.0), 0.0, 1.0)


def _batch(a, b):
    a, b = _unit(a), _unit(b)
    if a.shape != b.shape or a.ndim not in (3, 4):
        raise ValueError("psnr/ssim: shapes %s and %s, expected equal (C, H, W) or (N, C, H, W)"
                         % (a.shape, b.shape))
    return (a[None], b[None]) if a.ndim == 3 else (a, b)


def psnr(a, b):
    """PSNR in dB with peak 1; 120 dB when the mean squared error is at most 1e-12."""
    a, b = _batch(a, b)
    mse = ((a - b) ** 2).reshape(a.shape[0], -1).mean(axis=1)
    return float(np.mean(10.0 * np.log10(1.0 / np.maximum(mse, 1e-12))))


def _window(side):
    """The centred part of the Gaussian window that fits `side`, renormalised."""
    k = SSIM_WINDOW
    g = np.exp(-(np.arange(k) - k // 2) ** 2 / (2.0 * SSIM_SIGMA ** 2))
    w = min(side, k)
    g = g[(k - w) // 2:(k - w) // 2 + w]
    return g / g.sum()


def _filter(x, gh, gw):
    """Separable weighted sums over the valid region of the last two axes."""
    h = x.shape[-2] - len(gh) + 1
    y = sum(gh[i] * x[..., i:i + h, :] for i in range(len(gh)))
    w = x.shape[-1] - len(gw) + 1
    return sum(gw[j] * y[..., :, j:j + w] for j in range(len(gw)))


def ssim(a, b):
    """SSIM (Wang et al. 2004): 11x11 Gaussian window (sigma 1.5), K1 0.01, K2 0.03, L 1, valid
    region, mean over windows and channels; a side shorter than 11 uses the part of the window
    that fits."""
    a, b = _batch(a, b)
    gh, gw = _window(a.shape[-2]), _window(a.shape[-1])
    f = lambda x: _filter(x, gh, gw)  # noqa: E731
    ma, mb = f(a), f(b)
    va = f(a * a) - ma * ma
    vb = f(b * b) - mb * mb
    cab = f(a * b) - ma * mb
    c1, c2 = SSIM_K1 ** 2, SSIM_K2 ** 2
    m = ((2 * ma * mb + c1) * (2 * cab + c2)) / ((ma * ma + mb * mb + c1) * (va + vb + c2))
    return float(m.reshape(m.shape[0], -1).mean(axis=1).mean())
