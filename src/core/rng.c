/* Counter-based random numbers: Philox4x32-10 (Salmon et al., SC'11, "Parallel random numbers:
 * as easy as 1, 2, 3").  Block `c` of (seed, stream) is philox(key = seed, counter = {c, stream}),
 * so draw i is a pure function of (seed, stream, i): results do not depend on how the work is
 * split over threads, batches or devices. */
#include "core/internal.h"

#include <math.h>

#define PHILOX_M0 0xD2511F53u
#define PHILOX_M1 0xCD9E8D57u
#define PHILOX_W0 0x9E3779B9u
#define PHILOX_W1 0xBB67AE85u

static inline void mulhilo(uint32_t a, uint32_t b, uint32_t *hi, uint32_t *lo)
{
    uint64_t p = (uint64_t)a * b;
    *hi = (uint32_t)(p >> 32);
    *lo = (uint32_t)p;
}

/* key words: seed low, seed high; counter words: counter low, counter high, stream low,
 * stream high. */
void stsl__philox4x32(uint64_t seed, uint64_t stream, uint64_t counter, uint32_t out[4])
{
    uint32_t c0 = (uint32_t)counter, c1 = (uint32_t)(counter >> 32);
    uint32_t c2 = (uint32_t)stream, c3 = (uint32_t)(stream >> 32);
    uint32_t k0 = (uint32_t)seed, k1 = (uint32_t)(seed >> 32);
    for (int r = 0; r < 10; r++) {
        uint32_t hi0, lo0, hi1, lo1;
        mulhilo(PHILOX_M0, c0, &hi0, &lo0);
        mulhilo(PHILOX_M1, c2, &hi1, &lo1);
        uint32_t n0 = hi1 ^ c1 ^ k0, n1 = lo1, n2 = hi0 ^ c3 ^ k1, n3 = lo0;
        c0 = n0; c1 = n1; c2 = n2; c3 = n3;
        k0 += PHILOX_W0;
        k1 += PHILOX_W1;
    }
    out[0] = c0; out[1] = c1; out[2] = c2; out[3] = c3;
}

/* (0, 1]: never 0, so the logarithm in Box-Muller is finite. */
static inline double u32_open0(uint32_t x) { return ((double)x + 1.0) * (1.0 / 4294967296.0); }
static inline double u32_closed0(uint32_t x) { return (double)x * (1.0 / 4294967296.0); }

/* Four normals from one block: two Box-Muller pairs, computed in double for accuracy. */
static void normal_block(uint64_t seed, uint64_t stream, uint64_t block, float z[4])
{
    uint32_t w[4];
    stsl__philox4x32(seed, stream, block, w);
    const double two_pi = 6.283185307179586476925286766559;
    for (int p = 0; p < 2; p++) {
        double r = sqrt(-2.0 * log(u32_open0(w[2 * p])));
        double a = two_pi * u32_closed0(w[2 * p + 1]);
        z[2 * p] = (float)(r * cos(a));
        z[2 * p + 1] = (float)(r * sin(a));
    }
}

void stsl__rng_normal(uint64_t seed, uint64_t stream, uint64_t offset, float *out, size_t n)
{
    size_t i = 0;
    while (i < n) {
        uint64_t idx = offset + i;
        uint64_t block = idx >> 2;
        unsigned lane = (unsigned)(idx & 3);
        float z[4];
        normal_block(seed, stream, block, z);
        for (; lane < 4 && i < n; lane++, i++) out[i] = z[lane];
    }
}

void stsl__rng_uniform(uint64_t seed, uint64_t stream, uint64_t offset, float *out, size_t n)
{
    size_t i = 0;
    while (i < n) {
        uint64_t idx = offset + i;
        unsigned lane = (unsigned)(idx & 3);
        uint32_t w[4];
        stsl__philox4x32(seed, stream, idx >> 2, w);
        /* 24 bits: exactly representable in float, strictly below 1 */
        for (; lane < 4 && i < n; lane++, i++) out[i] = (float)(w[lane] >> 8) * (1.0f / 16777216.0f);
    }
}

double stsl__rng_uniform_double(uint64_t seed, uint64_t stream, uint64_t i)
{
    uint32_t w[4];
    stsl__philox4x32(seed, stream, i, w);
    uint64_t bits = ((uint64_t)(w[0] >> 5) << 26) | (w[1] >> 6); /* 53 bits */
    return (double)bits * (1.0 / 9007199254740992.0);
}

static inline uint64_t splitmix64(uint64_t x)
{
    x += 0x9E3779B97F4A7C15ull;
    x = (x ^ (x >> 30)) * 0xBF58476D1CE4E5B9ull;
    x = (x ^ (x >> 27)) * 0x94D049BB133111EBull;
    return x ^ (x >> 31);
}

uint64_t stsl__stream(uint32_t tag, uint64_t a, uint64_t b, uint64_t c)
{
    uint64_t h = splitmix64((uint64_t)tag);
    h = splitmix64(h ^ a);
    h = splitmix64(h ^ b);
    return splitmix64(h ^ c);
}

/* ---- public: parallel over 4-draw blocks; block boundaries make the split invisible ---- */

typedef struct fill_job {
    uint64_t seed, stream, offset;
    float *out;
    size_t n;
    int normal;
} fill_job;

static void fill_range(void *p, size_t begin, size_t end)
{
    fill_job *j = p;
    /* ranges are in units of 4096 draws */
    size_t lo = begin * 4096, hi = end * 4096 < j->n ? end * 4096 : j->n;
    if (j->normal)
        stsl__rng_normal(j->seed, j->stream, j->offset + lo, j->out + lo, hi - lo);
    else
        stsl__rng_uniform(j->seed, j->stream, j->offset + lo, j->out + lo, hi - lo);
}

static stsl_status fill(const stsl_context *ctx, uint64_t seed, uint64_t stream, uint64_t offset,
                        float *out, size_t n, int normal)
{
    if (!out && n > 0) return STSL_ERR_INVALID_ARG;
    if (offset > UINT64_MAX - n) return STSL_ERR_INVALID_ARG;
    fill_job j = {seed, stream, offset, out, n, normal};
    return stsl__parallel_for(stsl__ctx_threads(ctx), (n + 4095) / 4096, 4, fill_range, &j);
}

STSL_API stsl_status stsl_random_normal(const stsl_context *ctx, uint64_t seed, uint64_t stream,
                                        uint64_t offset, float *out, size_t n)
{
    return fill(ctx, seed, stream, offset, out, n, 1);
}

STSL_API stsl_status stsl_random_uniform(const stsl_context *ctx, uint64_t seed, uint64_t stream,
                                         uint64_t offset, float *out, size_t n)
{
    return fill(ctx, seed, stream, offset, out, n, 0);
}
