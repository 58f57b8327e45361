/* Counter-based random numbers: Philox4x32-10 (Salmon et al., SC'11, "Parallel random numbers:
 * as easy as 1, 2, 3").  Block `c` of (seed, stream) is philox(key = seed, counter = {c, stream}),
 * so draw i is a pure function of (seed, stream, i): results do not depend on how the work is
 * split over threads, batches or devices. */
#include "core/internal.h"

#include <math.h>
#include <string.h>

#define PHILOX_M0 0xD2511F53u
#define PHILOX_M1 0xCD9E8D57u
#define PHILOX_W0 0x9E3779B9u
#define PHILOX_W1 0xBB67AE85u

/* One Philox round on the counter words (c0, c1, c2, c3) with the round's key (k0, k1): the
 * scalar generator and the normals' lanes share it. */
static inline __attribute__((always_inline)) void philox_round(uint32_t *c0, uint32_t *c1,
                                                               uint32_t *c2, uint32_t *c3,
                                                               uint32_t k0, uint32_t k1)
{
    const uint64_t p0 = (uint64_t)PHILOX_M0 * *c0, p1 = (uint64_t)PHILOX_M1 * *c2;
    const uint32_t n0 = (uint32_t)(p1 >> 32) ^ *c1 ^ k0, n2 = (uint32_t)(p0 >> 32) ^ *c3 ^ k1;
    *c1 = (uint32_t)p1;
    *c3 = (uint32_t)p0;
    *c0 = n0;
    *c2 = n2;
}

/* key words: seed low, seed high; counter words: counter low, counter high, stream low,
 * stream high. */
void stsl__philox4x32(uint64_t seed, uint64_t stream, uint64_t counter, uint32_t out[4])
{
    uint32_t c0 = (uint32_t)counter, c1 = (uint32_t)(counter >> 32);
    uint32_t c2 = (uint32_t)stream, c3 = (uint32_t)(stream >> 32);
    uint32_t k0 = (uint32_t)seed, k1 = (uint32_t)(seed >> 32);
    for (int r = 0; r < 10; r++) {
        philox_round(&c0, &c1, &c2, &c3, k0, k1);
        k0 += PHILOX_W0;
        k1 += PHILOX_W1;
    }
    out[0] = c0; out[1] = c1; out[2] = c2; out[3] = c3;
}

/* ---- normals: Box-Muller in float, from the Philox words, with no libm ----
 * Each block's four words give two pairs: u = (w0 + 1) 2^-32 in (0, 1] (never 0, so the
 * logarithm is finite) and the angle 2 pi w1 2^-32, z0 = r cos(angle), z1 = r sin(angle),
 * r = sqrt(-2 ln u).  The logarithm and sine/cosine are this file's own polynomials in float,
 * evaluated without fused multiply-adds (the Makefile builds this file with -ffp-contract=off), so
 * a draw is the same bits on any IEEE machine, whatever its libm or vector width, and the loops
 * below vectorise (a normal costs some 3 ns instead of 20 with libm's double log and
 * sincos).  Against the same Box-Muller in double with libm: within 5e-7 (1 + |z|) (1.7e-7 the
 * largest over 2^24 draws; test_core holds it to that and to a known answer). */

/* ln u for u = (w + 1) 2^-32 in (0, 1], as fdlibm's logf: w + 1 = 2^k (1 + f), 1 + f in
 * [sqrt(2)/2, sqrt(2)), ln(1 + f) = f - f^2/2 + s (f^2/2 + R(s^2)), s = f / (2 + f).  k comes from
 * a float near w + 1 (its exponent is all it gives), f is rounded once, after an exact
 * subtraction, so u near 1 (k = 32, ln u = ln(1 + f)) keeps full relative accuracy. */
static inline __attribute__((always_inline)) float ln_unit(uint32_t w)
{
    const float ln2_hi = 6.9313812256e-01f, ln2_lo = 9.0580006145e-06f;
    const float Lg1 = 0.66666662693f, Lg2 = 0.40000972152f, Lg3 = 0.28498786688f,
                Lg4 = 0.24279078841f;
    float near = (float)(int32_t)(w >> 8) * 256.0f + ((float)(int32_t)(w & 255u) + 1.0f);
    uint32_t bits;
    memcpy(&bits, &near, sizeof bits);
    /* the exponent of near / (sqrt(2)/2): 1.0's distance from sqrt(2)/2 added to the bits */
    const int k = (int)((bits + (0x3f800000u - 0x3f3504f3u)) >> 23) - 0x7f;   /* 0 .. 32 */
    /* f = (w + 1) 2^-k - 1 = (hi 2^(8-k) - 1) + lo 2^-k, hi = w >> 8 (24 bits), lo = (w & 255) + 1:
     * hi 2^(8-k) is exact and within [1/2, 2] of 1 (or 0), so the subtraction is exact too */
    const uint32_t p8_bits = (uint32_t)(0x7f + 8 - k) << 23, p0_bits = (uint32_t)(0x7f - k) << 23;
    float p8, p0;
    memcpy(&p8, &p8_bits, sizeof p8);
    memcpy(&p0, &p0_bits, sizeof p0);
    const float f = ((float)(int32_t)(w >> 8) * p8 - 1.0f) + (float)(int32_t)((w & 255u) + 1u) * p0;
    const float s = f / (2.0f + f), z = s * s, q = z * z;
    const float R = z * (Lg1 + q * Lg3) + q * (Lg2 + q * Lg4);
    const float hfsq = 0.5f * f * f, dk = (float)(k - 32);
    return s * (hfsq + R) + dk * ln2_lo - hfsq + f + dk * ln2_hi;
}

/* sin and cos of x in [-pi/4, pi/4] (fdlibm's __sindf / __cosdf coefficients) */
static inline __attribute__((always_inline)) float sin_q(float x)
{
    const float S1 = -0.166666666416f, S2 = 0.0083333293859f, S3 = -0.000198393348361f,
                S4 = 0.0000027183114940f;
    float z = x * x;
    return x + x * z * (S1 + z * (S2 + z * (S3 + z * S4)));
}
static inline __attribute__((always_inline)) float cos_q(float x)
{
    const float C0 = -0.499999997251f, C1 = 0.0416666233237f, C2 = -0.00138867637746f,
                C3 = 0.0000243904487963f;
    float z = x * x;
    return 1.0f + z * (C0 + z * (C1 + z * (C2 + z * C3)));
}

/* One pair from the words (wu, wa).  The angle's range reduction is exact, in integers: the
 * quadrant nearest 2 pi wa 2^-32 is j, the rest x in [-pi/4, pi/4). */
static inline __attribute__((always_inline)) void box_muller(uint32_t wu, uint32_t wa, float *z0,
                                                             float *z1)
{
    const float half_pi_2m30 = 1.4629180792671596e-09f;   /* (pi/2) 2^-30 */
    float r2 = -2.0f * ln_unit(wu);
    float r = sqrtf(r2 > 0.0f ? r2 : 0.0f);
    uint32_t t = wa + 0x20000000u;                        /* round to the nearest quadrant */
    uint32_t j = t >> 30;
    float x = (float)((int32_t)(t & 0x3fffffffu) - 0x20000000) * half_pi_2m30;
    float s = sin_q(x), c = cos_q(x);
    float sa = (j & 1u) ? c : s, ca = (j & 1u) ? s : c;   /* angle = j pi/2 + x */
    *z0 = r * (((j + 1u) & 2u) ? -ca : ca);
    *z1 = r * ((j & 2u) ? -sa : sa);
}

/* Normals of blocks [b0, b0 + nb), nb <= RNG_LANES, into z[4 * nb]: the Philox rounds and the
 * transform each run as one loop over the lanes, which the compiler vectorises. */
enum { RNG_LANES = 32 };
static void normal_blocks(uint64_t seed, uint64_t stream, uint64_t b0, size_t nb, float *z)
{
    uint32_t c0[RNG_LANES], c1[RNG_LANES], c2[RNG_LANES], c3[RNG_LANES];
    const uint32_t s0 = (uint32_t)stream, s1 = (uint32_t)(stream >> 32);
    for (size_t l = 0; l < nb; l++) {
        uint64_t c = b0 + l;
        c0[l] = (uint32_t)c;
        c1[l] = (uint32_t)(c >> 32);
        c2[l] = s0;
        c3[l] = s1;
    }
    uint32_t k0 = (uint32_t)seed, k1 = (uint32_t)(seed >> 32);
    for (int r = 0; r < 10; r++) {
        for (size_t l = 0; l < nb; l++) philox_round(&c0[l], &c1[l], &c2[l], &c3[l], k0, k1);
        k0 += PHILOX_W0;
        k1 += PHILOX_W1;
    }
    float a0[RNG_LANES], a1[RNG_LANES], a2[RNG_LANES], a3[RNG_LANES];
    for (size_t l = 0; l < nb; l++) {
        box_muller(c0[l], c1[l], &a0[l], &a1[l]);
        box_muller(c2[l], c3[l], &a2[l], &a3[l]);
    }
    for (size_t l = 0; l < nb; l++) {
        z[4 * l] = a0[l];
        z[4 * l + 1] = a1[l];
        z[4 * l + 2] = a2[l];
        z[4 * l + 3] = a3[l];
    }
}

void stsl__normal_pair(uint32_t wu, uint32_t wa, float z[2]) { box_muller(wu, wa, &z[0], &z[1]); }

void stsl__normal_pair_reference(uint32_t wu, uint32_t wa, double z[2])
{
    const double r = sqrt(-2.0 * log(((double)wu + 1.0) * (1.0 / 4294967296.0)));
    const double a = 6.283185307179586476925286766559 * ((double)wa * (1.0 / 4294967296.0));
    z[0] = r * cos(a);
    z[1] = r * sin(a);
}

void stsl__rng_normal(uint64_t seed, uint64_t stream, uint64_t offset, float *out, size_t n)
{
    float z[4 * RNG_LANES];
    size_t i = 0;
    while (i < n) {
        const uint64_t idx = offset + i, block = idx >> 2;
        const unsigned lane = (unsigned)(idx & 3);
        /* the blocks holding draws idx .. offset + n - 1, at most RNG_LANES of them */
        const size_t want = n - i, nb0 = (lane + want + 3) / 4;
        const size_t nb = nb0 < RNG_LANES ? nb0 : RNG_LANES;
        normal_blocks(seed, stream, block, nb, z);
        size_t take = 4 * nb - lane;
        if (take > want) take = want;
        memcpy(out + i, z + lane, take * sizeof(float));
        i += take;
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
