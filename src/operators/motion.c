/*
 * motion.c -- random camera-shake kernels, a port of the `motionblur` package the DPS reference
 * uses (Kernel(size, intensity)): a random walk of steps ~ Beta(1, 30) with angles drawn around a
 * slowly turning direction, drawn as a line on a 2x canvas, blurred, downsampled and normalised.
 * Differences, documented in docs/operators.md: the counter RNG replaces numpy's, the 2x -> 1x
 * resize is a 2x2 box average instead of PIL's Lanczos, and the step length is kept above
 * 2% of the diagonal so intensity 1 terminates.
 */
#include "operators/operator_internal.h"

#include <math.h>
#include <string.h>

#define PI 3.14159265358979323846
#define MAX_DRAWS 200000
#define MAX_STEPS 4096

typedef struct rng {
    uint64_t seed, stream, i;
} rng;

static double uni(rng *g) { return stsl__rng_uniform_double(g->seed, g->stream, g->i++); }
static double uni_ab(rng *g, double a, double b) { return a + (b - a) * uni(g); }

/* Beta(1, b): inverse CDF 1 - (1-u)^(1/b). */
static double beta1(rng *g, double b) { return 1.0 - pow(1.0 - uni(g), 1.0 / b); }

/* Beta(a, b) for integer a, b via Gamma(a) / (Gamma(a) + Gamma(b)), Gamma(n) = -sum log u. */
static double beta_int(rng *g, int a, int b)
{
    double x = 0, y = 0;
    for (int i = 0; i < a; i++) x -= log(1.0 - uni(g));
    for (int i = 0; i < b; i++) y -= log(1.0 - uni(g));
    return x + y > 0 ? x / (x + y) : 0.0;
}

static double triangular(rng *g, double left, double mode, double right)
{
    double u = uni(g), w = right - left;
    if (w <= 0) return left;
    double fc = (mode - left) / w;
    if (u < fc) return left + sqrt(u * w * (mode - left));
    return right - sqrt((1.0 - u) * w * (right - mode));
}

static double sign(double v) { return v > 0 ? 1.0 : (v < 0 ? -1.0 : 0.0); }

stsl_status stsl__op_motion_kernel(int size, double intensity, uint64_t seed, float *kernel)
{
    const double eps = 2.220446049250313e-16;
    int n2 = 2 * size;   /* canvas */
    double diag = sqrt(2.0) * n2;
    rng g = {seed, stsl__stream(STSL_TAG_KERNEL, 0, 0, 0), 0};

    double *steps = stsl__alloc_doubles(MAX_STEPS);
    double *angles = stsl__alloc_doubles(MAX_STEPS);
    float *canvas = stsl__calloc((size_t)n2 * n2, sizeof(float));
    float *tmp = stsl__calloc((size_t)n2 * n2, sizeof(float));
    if (!steps || !angles || !canvas || !tmp) {
        stsl__free(steps);
        stsl__free(angles);
        stsl__free(canvas);
        stsl__free(tmp);
        return STSL_ERR_NOMEM;
    }

    /* steps */
    double max_len = 0.75 * diag * (uni(&g) + uni_ab(&g, 0, intensity * intensity));
    double factor = 1.0 - intensity + eps;
    if (factor < 0.02) factor = 0.02;
    int ns = 0;
    double total = 0;
    for (int d = 0; d < MAX_DRAWS && total < max_len && ns < MAX_STEPS; d++) {
        double st = beta1(&g, 30.0) * factor * diag;
        if (st < max_len) {
            steps[ns++] = st;
            total += st;
        }
    }
    /* angles */
    double max_angle = uni_ab(&g, 0, intensity * PI);
    double jitter = beta_int(&g, 2, 20);
    if (ns > 0) angles[0] = uni_ab(&g, -max_angle, max_angle);
    for (int i = 1; i < ns; i++) {
        double a = triangular(&g, 0, intensity * max_angle, max_angle + eps);
        a *= uni(&g) < jitter ? -sign(angles[i - 1]) : sign(angles[i - 1]);
        angles[i] = a;
    }
    /* path = cumsum of increments, centred on its mean, rotated, moved to the canvas centre */
    double rot = uni_ab(&g, 0, PI), cr = cos(rot), sr = sin(rot);
    double *px = steps, *py = angles;   /* reuse: converted in place below */
    double cx = 0, cy = 0, sx = 0, sy = 0;
    for (int i = 0; i < ns; i++) {
        double st = steps[i], an = angles[i];
        cx += st * cos(an);
        cy += st * sin(an);
        px[i] = cx;
        py[i] = cy;
        sx += cx;
        sy += cy;
    }
    if (ns > 0) {
        sx /= ns;
        sy /= ns;
    }
    for (int i = 0; i < ns; i++) {
        double x = px[i] - sx, y = py[i] - sy;
        px[i] = x * cr - y * sr + n2 / 2.0;
        py[i] = x * sr + y * cr + n2 / 2.0;
    }
    /* rasterise the polyline (line width int(diag/150), at least 1) */
    int width = (int)(diag / 150.0);
    if (width < 1) width = 1;
    int lo = -(width - 1) / 2, hi = width / 2;
    for (int i = 0; i < ns; i++) {
        double x0 = px[i], y0 = py[i];
        double x1 = i + 1 < ns ? px[i + 1] : x0, y1 = i + 1 < ns ? py[i + 1] : y0;
        double len = hypot(x1 - x0, y1 - y0);
        int nsub = (int)ceil(len * 4.0) + 1;
        for (int t = 0; t <= nsub; t++) {
            double f = (double)t / nsub;
            int cxp = (int)floor(x0 + f * (x1 - x0)), cyp = (int)floor(y0 + f * (y1 - y0));
            for (int dy = lo; dy <= hi; dy++)
                for (int dx = lo; dx <= hi; dx++) {
                    int xx = cxp + dx, yy = cyp + dy;
                    if (xx >= 0 && xx < n2 && yy >= 0 && yy < n2) canvas[(size_t)yy * n2 + xx] = 1.0f;
                }
        }
    }
    /* Gaussian blur, sigma int(diag * 0.01) (PIL's GaussianBlur radius) */
    int gs = (int)(diag * 0.01);
    if (gs > 0) {
        int r = 3 * gs;
        float w[3 * 64 + 1];
        if (r > 3 * 64) r = 3 * 64;
        double sum = 0;
        for (int a = -r; a <= r; a++) sum += exp(-0.5 * a * a / ((double)gs * gs));
        for (int a = -r; a <= r; a++) w[a + r] = (float)(exp(-0.5 * a * a / ((double)gs * gs)) / sum);
        for (int y = 0; y < n2; y++)
            for (int x = 0; x < n2; x++) {
                float acc = 0;
                for (int a = -r; a <= r; a++)
                    if (x + a >= 0 && x + a < n2) acc += w[a + r] * canvas[(size_t)y * n2 + x + a];
                tmp[(size_t)y * n2 + x] = acc;
            }
        for (int y = 0; y < n2; y++)
            for (int x = 0; x < n2; x++) {
                float acc = 0;
                for (int a = -r; a <= r; a++)
                    if (y + a >= 0 && y + a < n2) acc += w[a + r] * tmp[(size_t)(y + a) * n2 + x];
                canvas[(size_t)y * n2 + x] = acc;
            }
    }
    /* 2x2 box down to size x size, normalise; an empty path degenerates to a delta */
    double sum = 0;
    for (int y = 0; y < size; y++)
        for (int x = 0; x < size; x++) {
            const float *c = canvas + (size_t)(2 * y) * n2 + 2 * x;
            float v = 0.25f * (c[0] + c[1] + c[n2] + c[n2 + 1]);
            kernel[(size_t)y * size + x] = v;
            sum += v;
        }
    if (sum > 0) {
        for (size_t i = 0; i < (size_t)size * size; i++) kernel[i] = (float)(kernel[i] / sum);
    } else {
        memset(kernel, 0, (size_t)size * size * sizeof(float));
        kernel[(size_t)(size / 2) * size + size / 2] = 1.0f;
    }
    stsl__free(steps);
    stsl__free(angles);
    stsl__free(canvas);
    stsl__free(tmp);
    return STSL_OK;
}
