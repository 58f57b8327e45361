/* The image container (float32 planar CHW on the [-1, 1] scale) and the row converters shared
 * by the PNG and JPEG codecs. */
#include "io/io_internal.h"

#include <math.h>
#include <string.h>

stsl_status stsl__image_check_size(stsl_context *ctx, const char *what, int64_t channels,
                                   int64_t height, int64_t width)
{
    /* 64-bit arguments so that a caller can pass a file's 32-bit unsigned fields unchanged */
    if (channels < 1 || channels > STSL_MAX_CHANNELS)
        return stsl__ctx_fail(ctx, STSL_ERR_INVALID_ARG, "%s: %lld channels, must be 1..%d", what,
                              (long long)channels, STSL_MAX_CHANNELS);
    if (height < 1 || width < 1)
        return stsl__ctx_fail(ctx, STSL_ERR_INVALID_ARG,
                              "%s: size %lld x %lld (width x height), both must be >= 1", what,
                              (long long)width, (long long)height);
    if (height > STSL_MAX_IMAGE_DIM || width > STSL_MAX_IMAGE_DIM)
        return stsl__ctx_fail(ctx, STSL_ERR_LIMIT,
                              "%s: size %lld x %lld (width x height) exceeds the limit of %d per side",
                              what, (long long)width, (long long)height, STSL_MAX_IMAGE_DIM);
    /* both <= 2^14 here, so the product fits easily in 64 bits */
    if (height * width > (int64_t)STSL_MAX_IMAGE_PIXELS)
        return stsl__ctx_fail(ctx, STSL_ERR_LIMIT,
                              "%s: size %lld x %lld (width x height) = %lld pixels exceeds the limit "
                              "of %d pixels",
                              what, (long long)width, (long long)height,
                              (long long)(height * width), STSL_MAX_IMAGE_PIXELS);
    return STSL_OK;
}

stsl_status stsl__image_create_ctx(stsl_context *ctx, int channels, int height, int width,
                                   stsl_image **out)
{
    if (!out) return stsl__ctx_fail(ctx, STSL_ERR_INVALID_ARG, "image: out is NULL");
    *out = NULL;
    stsl_status st = stsl__image_check_size(ctx, "image", channels, height, width);
    if (st != STSL_OK) return st;
    size_t plane, count;
    if (!stsl__mul_size((size_t)height, (size_t)width, &plane) ||
        !stsl__mul_size(plane, (size_t)channels, &count))
        return stsl__ctx_fail(ctx, STSL_ERR_LIMIT, "image: size arithmetic overflows");
    stsl_image *img = stsl__calloc(1, sizeof *img);
    if (!img) return stsl__ctx_fail(ctx, STSL_ERR_NOMEM, "image: out of memory");
    size_t bytes;
    if (!stsl__mul_size(count, sizeof(float), &bytes)) {
        stsl__free(img);
        return stsl__ctx_fail(ctx, STSL_ERR_LIMIT, "image: size arithmetic overflows");
    }
    img->data = stsl__calloc(count, sizeof(float));
    if (!img->data) {
        stsl__free(img);
        return stsl__ctx_fail(ctx, STSL_ERR_NOMEM,
                              "image: out of memory for %d x %d x %d floats (%zu bytes)", channels,
                              height, width, bytes);
    }
    img->struct_size = sizeof *img;
    img->channels = channels;
    img->height = height;
    img->width = width;
    *out = img;
    return STSL_OK;
}

STSL_API stsl_status stsl_image_create(int channels, int height, int width, stsl_image **out)
{
    return stsl__image_create_ctx(NULL, channels, height, width, out);
}

STSL_API void stsl_image_destroy(stsl_image *img)
{
    if (!img) return;
    stsl__free(img->data);
    stsl__free(img);
}

int stsl__io_target_channels(int file_channels, int requested)
{
    if (requested != 0) return requested;
    return file_channels == 2 ? 4 : file_channels;
}

/* Rec. 601 luma weights; they sum to 1, so the affine map to [-1, 1] commutes with them. */
#define LUMA_R 0.299
#define LUMA_G 0.587
#define LUMA_B 0.114

void stsl__io_store_row(stsl_image *img, int y, const unsigned char *row, int fc, int depth)
{
    const size_t w = (size_t)img->width;
    const size_t plane = (size_t)img->height * w;
    float *dst = img->data + (size_t)y * w;
    const int tc = img->channels;
    const double scale = 2.0 / (depth == 16 ? 65535.0 : 255.0);
    for (size_t x = 0; x < w; x++) {
        double s[4] = {0, 0, 0, 0};
        for (int c = 0; c < fc; c++) {
            size_t k = x * (size_t)fc + (size_t)c;
            unsigned v = depth == 16 ? ((unsigned)row[2 * k] << 8) | row[2 * k + 1] : row[k];
            s[c] = v * scale - 1.0;
        }
        double grey, r, g, b, a;
        if (fc <= 2) {
            grey = r = g = b = s[0];
            a = fc == 2 ? s[1] : 1.0;
        } else {
            r = s[0];
            g = s[1];
            b = s[2];
            grey = LUMA_R * r + LUMA_G * g + LUMA_B * b;
            a = fc == 4 ? s[3] : 1.0;
        }
        switch (tc) {
        case 1:
            dst[x] = (float)grey;
            break;
        case 2: /* grey + alpha (only reachable for images created by the caller) */
            dst[x] = (float)grey;
            dst[plane + x] = (float)a;
            break;
        default:
            dst[x] = (float)r;
            dst[plane + x] = (float)g;
            dst[2 * plane + x] = (float)b;
            if (tc == 4) dst[3 * plane + x] = (float)a;
            break;
        }
    }
}

void stsl__io_fetch_row(const stsl_image *img, int y, unsigned char *row, int depth)
{
    const size_t w = (size_t)img->width;
    const size_t plane = (size_t)img->height * w;
    const int ch = img->channels;
    const double maxv = depth == 16 ? 65535.0 : 255.0;
    const float *src = img->data + (size_t)y * w;
    for (size_t x = 0; x < w; x++) {
        for (int c = 0; c < ch; c++) {
            double v = src[(size_t)c * plane + x];
            if (!(v >= -1.0)) v = -1.0; /* NaN maps to -1 */
            if (v > 1.0) v = 1.0;
            unsigned q = (unsigned)floor((v + 1.0) * 0.5 * maxv + 0.5);
            if (q > (unsigned)maxv) q = (unsigned)maxv;
            size_t k = x * (size_t)ch + (size_t)c;
            if (depth == 16) {
                row[2 * k] = (unsigned char)(q >> 8);
                row[2 * k + 1] = (unsigned char)(q & 0xff);
            } else {
                row[k] = (unsigned char)q;
            }
        }
    }
}
