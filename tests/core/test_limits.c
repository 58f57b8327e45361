/* Documented size limits (STSL_MAX_IMAGE_DIM, STSL_MAX_IMAGE_PIXELS, STSL_MAX_CHANNELS) at their
 * edges, and the integer-overflow guards of the size arithmetic.  Decoder limits are checked with
 * crafted headers: a header at the limit gets past the size check (and then fails for lack of
 * image data), one past it is refused with STSL_ERR_LIMIT -- no image-sized allocation either
 * way. */
#include "common/testutil.h"
#include "core/internal.h"
#include "io/io_internal.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* ---- crafted PNG headers (tu_craft_png: signature + IHDR + IEND, correct CRCs) ---- */

/* A crafted header's decode: refused with `expected`, no image, and a message saying why (the
 * status and the message on stderr when it is not the expected one). */
static void expect_refused(const stsl_context *ctx, const char *format, unsigned w, unsigned h,
                           stsl_status st, stsl_status expected, const stsl_image *img)
{
    if (st != expected)
        fprintf(stderr, "\n  %s %u x %u: %d, expected %d: %s\n", format, w, h, (int)st, (int)expected,
                stsl_context_last_error(ctx));
    CU_ASSERT_EQUAL(st, expected);
    CU_ASSERT(img == NULL);
    CU_ASSERT(stsl_context_last_error(ctx)[0] != '\0');
}

/* Same with a (too short) IDAT chunk before IEND, so that png_read_info() returns and the
 * decoder's own size check after it is reached: 59 bytes. */
static size_t craft_png_idat(unsigned char *buf, uint32_t w, uint32_t h, int depth, int ctype)
{
    tu_craft_png(buf, w, h, depth, ctype);
    tu_put_be32(buf + 33, 2);
    memcpy(buf + 37, "IDAT", 4);
    buf[41] = 0x78; /* zlib header */
    buf[42] = 0x9c;
    tu_put_be32(buf + 43, tu_png_crc(buf + 37, 6));
    tu_put_be32(buf + 47, 0);
    memcpy(buf + 51, "IEND", 4);
    tu_put_be32(buf + 55, tu_png_crc(buf + 51, 4));
    return 59;
}

/* ---- stsl__image_check_size: the one place the image limits are decided ---- */

static void test_check_size_edges(void)
{
    const int64_t D = STSL_MAX_IMAGE_DIM, P = STSL_MAX_IMAGE_PIXELS;
    CU_ASSERT_EQUAL(D * (P / D), P); /* 16384 x 4096 is exactly the pixel limit */
    struct {
        int64_t c, h, w;
        stsl_status st;
    } cases[] = {
        {1, 1, 1, STSL_OK},
        {STSL_MAX_CHANNELS, 1, 1, STSL_OK},
        {1, D, P / D, STSL_OK},        /* exactly 2^26 pixels */
        {1, P / D, D, STSL_OK},
        {4, 8192, 8192, STSL_OK},      /* 2^26 pixels, square */
        {1, D, 1, STSL_OK},
        {1, 1, D, STSL_OK},
        {1, D, P / D + 1, STSL_ERR_LIMIT},
        {1, P / D + 1, D, STSL_ERR_LIMIT},
        {1, 8193, 8192, STSL_ERR_LIMIT},
        {1, D, D, STSL_ERR_LIMIT},
        {1, D + 1, 1, STSL_ERR_LIMIT},
        {1, 1, D + 1, STSL_ERR_LIMIT},
        {1, INT32_MAX, INT32_MAX, STSL_ERR_LIMIT},
        {1, (int64_t)1 << 40, (int64_t)1 << 40, STSL_ERR_LIMIT}, /* product overflows 64 bits */
        {1, INT64_MAX, INT64_MAX, STSL_ERR_LIMIT},
        {1, 0xffffffffLL, 1, STSL_ERR_LIMIT},                     /* a PNG's largest field */
        {0, 1, 1, STSL_ERR_INVALID_ARG},
        {STSL_MAX_CHANNELS + 1, 1, 1, STSL_ERR_INVALID_ARG},
        {-1, 1, 1, STSL_ERR_INVALID_ARG},
        {1, 0, 1, STSL_ERR_INVALID_ARG},
        {1, 1, 0, STSL_ERR_INVALID_ARG},
        {1, -1, -1, STSL_ERR_INVALID_ARG}, /* negative product would be "small" */
        {1, INT64_MIN, 2, STSL_ERR_INVALID_ARG},
    };
    stsl_context *ctx = NULL;
    TU_ASSERT_OK(stsl_context_create(&ctx));
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        stsl_status st = stsl__image_check_size(ctx, "test", cases[i].c, cases[i].h, cases[i].w);
        if (st != cases[i].st)
            fprintf(stderr, "\n  case %zu (%lld %lld %lld): %d, expected %d: %s\n", i,
                    (long long)cases[i].c, (long long)cases[i].h, (long long)cases[i].w, (int)st,
                    (int)cases[i].st, stsl_context_last_error(ctx));
        CU_ASSERT_EQUAL(st, cases[i].st);
        if (st != STSL_OK) CU_ASSERT(stsl_context_last_error(ctx)[0] != '\0');
    }
    stsl_context_destroy(ctx);
}

static void test_image_create_at_limit(void)
{
    /* exactly the limit: 1 x 16384 x 4096 floats = 256 MiB (zero pages, not touched but the
     * last one) */
    stsl_image *img = NULL;
    const int h = STSL_MAX_IMAGE_DIM, w = STSL_MAX_IMAGE_PIXELS / STSL_MAX_IMAGE_DIM;
    stsl_status st = stsl_image_create(1, h, w, &img);
    CU_ASSERT(st == STSL_OK || st == STSL_ERR_NOMEM); /* a small machine may refuse */
    if (st == STSL_OK) {
        CU_ASSERT_EQUAL(img->data[(size_t)h * w - 1], 0.0f);
        img->data[(size_t)h * w - 1] = 1.0f;
    }
    stsl_image_destroy(img);
    img = (stsl_image *)(uintptr_t)1;
    TU_ASSERT_STATUS(stsl_image_create(1, h, w + 1, &img), STSL_ERR_LIMIT);
    CU_ASSERT(img == NULL);
    TU_ASSERT_STATUS(stsl_image_create(1, w + 1, h, &img), STSL_ERR_LIMIT);
    TU_ASSERT_STATUS(stsl_image_create(STSL_MAX_CHANNELS + 1, 1, 1, &img), STSL_ERR_INVALID_ARG);
    TU_ASSERT_STATUS(stsl_image_create(1, 2147483647, 2147483647, &img), STSL_ERR_LIMIT);
    TU_ASSERT_STATUS(stsl_image_create(1, -2147483647 - 1, -2147483647 - 1, &img),
                     STSL_ERR_INVALID_ARG);
}

/* ---- PNG: the limit decided from the header, before allocating ---- */

static void test_png_header_limits(void)
{
    stsl_context *ctx = NULL;
    TU_ASSERT_OK(stsl_context_create(&ctx));
    const uint32_t D = STSL_MAX_IMAGE_DIM, W = STSL_MAX_IMAGE_PIXELS / STSL_MAX_IMAGE_DIM;
    struct {
        uint32_t w, h;
        stsl_status st;
    } cases[] = {
        {W, D, STSL_ERR_FORMAT}, /* at the limit: accepted, then "no image data" */
        {D, W, STSL_ERR_FORMAT},
        {D, 1, STSL_ERR_FORMAT},
        {W + 1, D, STSL_ERR_LIMIT},
        {D, W + 1, STSL_ERR_LIMIT},
        {D + 1, 1, STSL_ERR_LIMIT},
        {1, D + 1, STSL_ERR_LIMIT},
        {D, D, STSL_ERR_LIMIT},
        {100000, 100000, STSL_ERR_LIMIT},
        {0x7fffffffu, 0x7fffffffu, STSL_ERR_LIMIT},
        {0x80000000u, 1, STSL_ERR_FORMAT}, /* beyond the PNG specification */
        {0xffffffffu, 0xffffffffu, STSL_ERR_FORMAT},
        {0, 1, STSL_ERR_FORMAT},
    };
    unsigned char buf[64];
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        /* 16-bit RGBA: the largest pixels, so an accidental allocation would be 512 MiB+ */
        size_t n = tu_craft_png(buf, cases[i].w, cases[i].h, 16, 6);
        stsl_image *img = NULL;
        stsl_status st = stsl_image_decode(ctx, buf, n, 0, &img);
        expect_refused(ctx, "PNG", cases[i].w, cases[i].h, st, cases[i].st, img);
        if (cases[i].st == STSL_ERR_FORMAT && cases[i].w == W)
            CU_ASSERT(strstr(stsl_context_last_error(ctx), "limit") == NULL);
    }
    stsl_context_destroy(ctx);
}

/* The decoder's own line of defence, without the loader's pre-check: libpng's user limits and
 * the check after png_read_info. */
static void test_png_decoder_limits_without_precheck(void)
{
    stsl_context *ctx = NULL;
    TU_ASSERT_OK(stsl_context_create(&ctx));
    unsigned char buf[80];
    struct {
        uint32_t w, h;
        stsl_status st;
    } cases[] = {
        {100000, 100000, STSL_ERR_LIMIT},                     /* png_set_user_limits */
        {STSL_MAX_IMAGE_DIM + 1, 1, STSL_ERR_LIMIT},
        {STSL_MAX_IMAGE_DIM, STSL_MAX_IMAGE_DIM, STSL_ERR_LIMIT}, /* pixel product */
        {STSL_MAX_IMAGE_PIXELS / STSL_MAX_IMAGE_DIM + 1, STSL_MAX_IMAGE_DIM, STSL_ERR_LIMIT},
        {64, 64, STSL_ERR_FORMAT}, /* accepted, then the image data is missing */
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        size_t n = craft_png_idat(buf, cases[i].w, cases[i].h, 8, 2);
        stsl__io_src src = {buf, n, NULL, "<crafted>"};
        stsl_image *img = NULL;
        stsl_status st = stsl__png_decode(ctx, &src, 0, &img);
        expect_refused(ctx, "PNG", cases[i].w, cases[i].h, st, cases[i].st, img);
    }
    stsl_context_destroy(ctx);
}

/* ---- JPEG: a small valid file with its SOF dimensions patched ---- */

static void test_jpeg_header_limits(void)
{
    stsl_context *ctx = NULL;
    TU_ASSERT_OK(stsl_context_create(&ctx));
    stsl_image *img = NULL;
    TU_ASSERT_OK(stsl_image_create(1, 16, 16, &img)); /* grey: at the limit that is 256 MiB */
    char path[600];
    snprintf(path, sizeof path, "%s/limits.jpg", tu_tmpdir());
    TU_ASSERT_OK(stsl_image_save(ctx, img, path, STSL_FORMAT_JPEG, 0, 90));
    stsl_image_destroy(img);
    FILE *fp = fopen(path, "rb");
    CU_ASSERT_FATAL(fp != NULL);
    unsigned char b[8192];
    size_t size = fread(b, 1, sizeof b, fp);
    fclose(fp);
    const unsigned D = STSL_MAX_IMAGE_DIM, W = STSL_MAX_IMAGE_PIXELS / STSL_MAX_IMAGE_DIM;
    struct {
        unsigned w, h;
        stsl_status st;
    } cases[] = {
        /* at the limit: accepted, the image allocated (untouched zero pages), then the data
         * runs out; a machine without that much memory says NOMEM, never LIMIT */
        {W, D, STSL_ERR_FORMAT},
        {D, W, STSL_ERR_FORMAT},
        {W + 1, D, STSL_ERR_LIMIT},
        {D + 1, 16, STSL_ERR_LIMIT},
        {16, D + 1, STSL_ERR_LIMIT},
        {D, D, STSL_ERR_LIMIT},
        {65535, 65535, STSL_ERR_LIMIT},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        CU_ASSERT_FATAL(tu_jpeg_patch_sof(b, size, cases[i].h, cases[i].w));
        img = NULL;
        stsl_status st = stsl_image_decode(ctx, b, size, 0, &img);
        if (cases[i].st == STSL_ERR_FORMAT && st == STSL_ERR_NOMEM) st = STSL_ERR_FORMAT;
        expect_refused(ctx, "JPEG", cases[i].w, cases[i].h, st, cases[i].st, img);
    }
    stsl_context_destroy(ctx);
}

/* ---- save: the limits are checked before the pixels are touched ---- */

static void test_save_limits(void)
{
    stsl_context *ctx = NULL;
    TU_ASSERT_OK(stsl_context_create(&ctx));
    float px[4] = {0};
    char path[600];
    snprintf(path, sizeof path, "%s/never.png", tu_tmpdir());
    stsl_image fake = {sizeof(stsl_image), 1, STSL_MAX_IMAGE_DIM, STSL_MAX_IMAGE_DIM, px};
    TU_ASSERT_STATUS(stsl_image_save(ctx, &fake, path, STSL_FORMAT_AUTO, 0, 0), STSL_ERR_LIMIT);
    fake.height = 2147483647;
    fake.width = 2147483647;
    TU_ASSERT_STATUS(stsl_image_save(ctx, &fake, path, STSL_FORMAT_AUTO, 0, 0), STSL_ERR_LIMIT);
    fake.channels = 9;
    fake.height = fake.width = 1;
    TU_ASSERT_STATUS(stsl_image_save(ctx, &fake, path, STSL_FORMAT_AUTO, 0, 0),
                     STSL_ERR_INVALID_ARG);
    CU_ASSERT(fopen(path, "rb") == NULL);
    stsl_context_destroy(ctx);
}

/* ---- overflow-safe arithmetic of the core ---- */

static void test_overflow_helpers(void)
{
    size_t r = 0;
    CU_ASSERT(stsl__mul_size(0, SIZE_MAX, &r) && r == 0);
    CU_ASSERT(stsl__mul_size(SIZE_MAX, 0, &r) && r == 0);
    CU_ASSERT(stsl__mul_size(SIZE_MAX, 1, &r) && r == SIZE_MAX);
    CU_ASSERT(stsl__mul_size(SIZE_MAX / 3, 3, &r) && r == SIZE_MAX / 3 * 3);
    CU_ASSERT(!stsl__mul_size(SIZE_MAX, 2, &r));
    CU_ASSERT(!stsl__mul_size(SIZE_MAX / 2 + 1, 2, &r));
    CU_ASSERT(!stsl__mul_size((size_t)1 << (sizeof(size_t) * 4), (size_t)1 << (sizeof(size_t) * 4), &r));
    /* float/double allocations refuse counts whose byte size overflows */
    CU_ASSERT(stsl__alloc_floats(SIZE_MAX / sizeof(float) + 1) == NULL);
    CU_ASSERT(stsl__alloc_floats(SIZE_MAX) == NULL);
    CU_ASSERT(stsl__alloc_doubles(SIZE_MAX / sizeof(double) + 1) == NULL);
    float *f = stsl__alloc_floats(16);
    CU_ASSERT(f != NULL);
    stsl__free(f);
    /* the largest image's float count stays far from SIZE_MAX */
    CU_ASSERT(stsl__mul_size((size_t)STSL_MAX_IMAGE_PIXELS * STSL_MAX_CHANNELS, sizeof(float), &r));
}

static void test_check_shape(void)
{
    char err[STSL_ERRMSG_SIZE];
    const int D = STSL_MAX_IMAGE_DIM, P = STSL_MAX_IMAGE_PIXELS;
    struct {
        int c, h, w;
        stsl_status st;
    } cases[] = {
        {1, 1, 1, STSL_OK},
        {4, D, P / D, STSL_OK},
        {4096, 8, 8, STSL_OK},
        {4097, 8, 8, STSL_ERR_LIMIT},
        {1, D + 1, 1, STSL_ERR_LIMIT},
        {1, D, P / D + 1, STSL_ERR_LIMIT},
        {1, D, D, STSL_ERR_LIMIT},
        {1, 2147483647, 2147483647, STSL_ERR_LIMIT},
        {2147483647, 1, 1, STSL_ERR_LIMIT},
        {0, 1, 1, STSL_ERR_INVALID_ARG},
        {1, 0, 1, STSL_ERR_INVALID_ARG},
        {1, 1, -5, STSL_ERR_INVALID_ARG},
        {-2147483647 - 1, 1, 1, STSL_ERR_INVALID_ARG},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        stsl_shape s;
        memset(&s, 0, sizeof s);
        s.channels = cases[i].c;
        s.height = cases[i].h;
        s.width = cases[i].w;
        err[0] = 0;
        stsl_status st = stsl__check_shape(err, s);
        CU_ASSERT_EQUAL(st, cases[i].st);
        if (st != STSL_OK) CU_ASSERT(err[0] != '\0');
    }
}

static void test_rng_and_schedule_bounds(void)
{
    float v[4];
    /* offset + n must not wrap */
    TU_ASSERT_STATUS(stsl_random_normal(NULL, 0, 0, UINT64_MAX, v, 2), STSL_ERR_INVALID_ARG);
    TU_ASSERT_STATUS(stsl_random_uniform(NULL, 0, 0, UINT64_MAX - 1, v, 4), STSL_ERR_INVALID_ARG);
    TU_ASSERT_OK(stsl_random_uniform(NULL, 0, 0, UINT64_MAX - 4, v, 4));
    /* schedules: the timestep limit and the DDIM spacing at the largest T (no int overflow in
     * i * T) */
    stsl_schedule *s = NULL;
    TU_ASSERT_OK(stsl_schedule_create(NULL, STSL_SCHEDULE_LINEAR, 1e-5, 1e-3, 100000, &s));
    CU_ASSERT_PTR_NOT_NULL_FATAL(s);
    int *steps = malloc(100000 * sizeof *steps);
    CU_ASSERT_FATAL(steps != NULL);
    TU_ASSERT_OK(stsl_schedule_ddim_steps(s, 99999, steps));
    int ok = steps[0] == 0;
    for (int i = 1; i < 99999; i++) ok &= steps[i] > steps[i - 1] && steps[i] < 100000;
    CU_ASSERT(ok);
    free(steps);
    CU_ASSERT(isnan(stsl_schedule_alpha_bar(s, 100000)));
    CU_ASSERT(stsl_schedule_alpha_bar(s, 99999) > 0);
    stsl_schedule_destroy(s);
    stsl_schedule *t = (stsl_schedule *)(uintptr_t)1;
    TU_ASSERT_STATUS(stsl_schedule_create(NULL, STSL_SCHEDULE_LINEAR, 1e-5, 1e-3, 100001, &t),
                     STSL_ERR_INVALID_ARG);
    CU_ASSERT(t == NULL);
    TU_ASSERT_STATUS(stsl_schedule_create(NULL, STSL_SCHEDULE_LINEAR, 1e-5, 1e-3, 2147483647, &t),
                     STSL_ERR_INVALID_ARG);
}

int main(void)
{
    static const stsl_test tests[] = {
        {"check_size_edges", test_check_size_edges},
        {"image_create_at_limit", test_image_create_at_limit},
        {"png_header_limits", test_png_header_limits},
        {"png_decoder_limits_without_precheck", test_png_decoder_limits_without_precheck},
        {"jpeg_header_limits", test_jpeg_header_limits},
        {"save_limits", test_save_limits},
        {"overflow_helpers", test_overflow_helpers},
        {"check_shape", test_check_shape},
        {"rng_and_schedule_bounds", test_rng_and_schedule_bounds},
        {NULL, NULL},
    };
    return stsl_test_main("core/limits", tests);
}
