/* stsl_image_load / stsl_image_decode / stsl_image_save: format sniffing by magic bytes,
 * argument checks, and the write-to-temporary-then-rename() save. */
#include "io/io_internal.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <string.h>
#include <strings.h>
#include <time.h>
#include <unistd.h>

enum { FMT_UNKNOWN = 0, FMT_PNG = 1, FMT_JPEG = 2 };

#define HEAD_BYTES 32

static int sniff(const unsigned char *p, size_t n)
{
    static const unsigned char png_sig[8] = {0x89, 'P', 'N', 'G', '\r', '\n', 0x1a, '\n'};
    if (n >= 8 && memcmp(p, png_sig, 8) == 0) return FMT_PNG;
    if (n >= 3 && p[0] == 0xFF && p[1] == 0xD8 && p[2] == 0xFF) return FMT_JPEG;
    return FMT_UNKNOWN;
}

static stsl_status check_channels(stsl_context *ctx, int channels)
{
    if (channels == 0 || channels == 1 || channels == 3 || channels == 4) return STSL_OK;
    return stsl__ctx_fail(ctx, STSL_ERR_INVALID_ARG,
                          "image: channels %d invalid (0 = as in the file, 1, 3 or 4)", channels);
}

static stsl_status decode_src(stsl_context *ctx, const stsl__io_src *src,
                              const unsigned char *head, size_t nhead, int channels,
                              stsl_image **out)
{
    if (nhead == 0) return stsl__ctx_fail(ctx, STSL_ERR_FORMAT, "%s: empty file", src->name);
    switch (sniff(head, nhead)) {
    case FMT_PNG: {
        stsl_status st = stsl__png_precheck(ctx, head, nhead, src->name);
        if (st != STSL_OK) return st;
        return stsl__png_decode(ctx, src, channels, out);
    }
    case FMT_JPEG:
        return stsl__jpeg_decode(ctx, src, channels, out);
    default: {
        static const unsigned char png_sig[8] = {0x89, 'P', 'N', 'G', '\r', '\n', 0x1a, '\n'};
        if (nhead < 8 && memcmp(head, png_sig, nhead) == 0)
            return stsl__ctx_fail(ctx, STSL_ERR_FORMAT, "PNG %s: file is truncated (%zu bytes)",
                                  src->name, nhead);
        if (nhead < 3 && head[0] == 0xFF && (nhead == 1 || head[1] == 0xD8))
            return stsl__ctx_fail(ctx, STSL_ERR_FORMAT, "JPEG %s: file is truncated (%zu bytes)",
                                  src->name, nhead);
        char hex[3 * 8 + 1] = "";
        size_t k = nhead < 8 ? nhead : 8;
        for (size_t i = 0; i < k; i++) snprintf(hex + 3 * i, 4, " %02x", head[i]);
        return stsl__ctx_fail(ctx, STSL_ERR_FORMAT,
                              "%s: not a PNG or JPEG file (%zu byte%s, starts with%s)", src->name,
                              nhead, nhead == 1 ? "" : "s", hex);
    }
    }
}

STSL_API stsl_status stsl_image_decode(stsl_context *ctx, const void *data, size_t size,
                                       int channels, stsl_image **out)
{
    if (ctx) stsl__clear_error(ctx->err);
    if (!out) return stsl__ctx_fail(ctx, STSL_ERR_INVALID_ARG, "image_decode: out is NULL");
    *out = NULL;
    if (!data) return stsl__ctx_fail(ctx, STSL_ERR_INVALID_ARG, "image_decode: data is NULL");
    stsl_status st = check_channels(ctx, channels);
    if (st != STSL_OK) return st;
    stsl__io_src src = {data, size, NULL, "<memory>"};
    return decode_src(ctx, &src, data, size, channels, out);
}

/* Read the rest of a stream that cannot seek (a pipe) into memory, after `head`. */
static stsl_status slurp(stsl_context *ctx, FILE *fp, const char *path, const unsigned char *head,
                         size_t nhead, unsigned char **buf, size_t *size)
{
    size_t cap = 1 << 16, n = nhead;
    unsigned char *b = stsl__malloc(cap);
    if (!b) return stsl__ctx_fail(ctx, STSL_ERR_NOMEM, "%s: out of memory", path);
    memcpy(b, head, nhead);
    for (;;) {
        if (n == cap) {
            /* 4 bytes a pixel of 16-bit RGBA stored uncompressed is an upper bound of sorts;
             * refuse streams beyond 2 GiB rather than grow forever */
            if (cap >= ((size_t)1 << 31)) {
                stsl__free(b);
                return stsl__ctx_fail(ctx, STSL_ERR_LIMIT, "%s: stream larger than 2 GiB", path);
            }
            unsigned char *nb = stsl__realloc(b, cap * 2);
            if (!nb) {
                stsl__free(b);
                return stsl__ctx_fail(ctx, STSL_ERR_NOMEM, "%s: out of memory", path);
            }
            b = nb;
            cap *= 2;
        }
        size_t got = fread(b + n, 1, cap - n, fp);
        n += got;
        if (got == 0) break;
    }
    if (ferror(fp)) {
        int err = errno;
        stsl__free(b);
        return stsl__ctx_fail(ctx, STSL_ERR_IO, "cannot read '%s': %s", path, strerror(err));
    }
    *buf = b;
    *size = n;
    return STSL_OK;
}

STSL_API stsl_status stsl_image_load(stsl_context *ctx, const char *path, int channels,
                                     stsl_image **out)
{
    if (ctx) stsl__clear_error(ctx->err);
    if (!out) return stsl__ctx_fail(ctx, STSL_ERR_INVALID_ARG, "image_load: out is NULL");
    *out = NULL;
    if (!path) return stsl__ctx_fail(ctx, STSL_ERR_INVALID_ARG, "image_load: path is NULL");
    stsl_status st = check_channels(ctx, channels);
    if (st != STSL_OK) return st;
    FILE *fp = fopen(path, "rb");
    if (!fp) return stsl__ctx_fail(ctx, STSL_ERR_IO, "cannot open '%s': %s", path, strerror(errno));
    unsigned char head[HEAD_BYTES];
    size_t nhead = fread(head, 1, sizeof head, fp);
    if (ferror(fp)) {
        int err = errno;
        fclose(fp);
        return stsl__ctx_fail(ctx, STSL_ERR_IO, "cannot read '%s': %s", path, strerror(err));
    }
    if (fseek(fp, 0, SEEK_SET) == 0) {
        stsl__io_src src = {NULL, 0, fp, path};
        st = decode_src(ctx, &src, head, nhead, channels, out);
    } else {
        unsigned char *buf = NULL;
        size_t size = 0;
        st = slurp(ctx, fp, path, head, nhead, &buf, &size);
        if (st == STSL_OK) {
            stsl__io_src src = {buf, size, NULL, path};
            st = decode_src(ctx, &src, buf, size, channels, out);
            stsl__free(buf);
        }
    }
    fclose(fp);
    return st;
}

/* ---- save ---- */

static int format_from_name(const char *path)
{
    const char *slash = strrchr(path, '/');
    const char *base = slash ? slash + 1 : path;
    const char *dot = strrchr(base, '.');
    if (!dot) return FMT_UNKNOWN;
    if (!strcasecmp(dot, ".png")) return FMT_PNG;
    if (!strcasecmp(dot, ".jpg") || !strcasecmp(dot, ".jpeg")) return FMT_JPEG;
    return FMT_UNKNOWN;
}

/* Create "<dir>/.<base>.<random>.tmp" exclusively (mode 0666 & ~umask, as the final file). */
static int open_temp(const char *path, char *tmp, size_t cap)
{
    const char *slash = strrchr(path, '/');
    int dirlen = slash ? (int)(slash - path) + 1 : 0;
    const char *base = slash ? slash + 1 : path;
    for (int attempt = 0; attempt < 100; attempt++) {
        struct timespec ts;
        clock_gettime(CLOCK_REALTIME, &ts);
        unsigned long r = (unsigned long)ts.tv_nsec ^ ((unsigned long)getpid() << 16) ^
                          ((unsigned long)(uintptr_t)tmp >> 4) ^ (unsigned long)attempt * 2654435761u;
        int len = snprintf(tmp, cap, "%.*s.%s.%08lx.tmp", dirlen, path, base, r & 0xffffffffUL);
        if (len < 0 || (size_t)len >= cap) {
            errno = ENAMETOOLONG;
            return -1;
        }
        int fd = open(tmp, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0666);
        if (fd >= 0 || errno != EEXIST) return fd;
    }
    return -1;
}

STSL_API stsl_status stsl_image_save(stsl_context *ctx, const stsl_image *img, const char *path,
                                     stsl_image_format format, int bit_depth, int quality)
{
    if (ctx) stsl__clear_error(ctx->err);
    if (!img) return stsl__ctx_fail(ctx, STSL_ERR_INVALID_ARG, "image_save: image is NULL");
    if (!path || !path[0])
        return stsl__ctx_fail(ctx, STSL_ERR_INVALID_ARG, "image_save: path is NULL or empty");
    if (!img->data) return stsl__ctx_fail(ctx, STSL_ERR_INVALID_ARG, "image_save: data is NULL");
    stsl_status st = stsl__image_check_size(ctx, "image_save", img->channels, img->height,
                                            img->width);
    if (st != STSL_OK) return st;
    int fmt;
    switch (format) {
    case STSL_FORMAT_AUTO:
        fmt = format_from_name(path);
        if (fmt == FMT_UNKNOWN)
            return stsl__ctx_fail(ctx, STSL_ERR_INVALID_ARG,
                                  "image_save: cannot tell the format of '%s' from its name "
                                  "(use .png, .jpg or .jpeg, or pass a format)",
                                  path);
        break;
    case STSL_FORMAT_PNG: fmt = FMT_PNG; break;
    case STSL_FORMAT_JPEG: fmt = FMT_JPEG; break;
    default:
        return stsl__ctx_fail(ctx, STSL_ERR_INVALID_ARG, "image_save: unknown format %d",
                              (int)format);
    }
    if (bit_depth == 0) bit_depth = 8;
    if (bit_depth != 8 && bit_depth != 16)
        return stsl__ctx_fail(ctx, STSL_ERR_INVALID_ARG, "image_save: bit depth %d (8 or 16)",
                              bit_depth);
    if (quality == 0) quality = 90;
    if (quality < 1 || quality > 100)
        return stsl__ctx_fail(ctx, STSL_ERR_INVALID_ARG, "image_save: quality %d (1..100)",
                              quality);
    if (fmt == FMT_JPEG) {
        if (bit_depth != 8)
            return stsl__ctx_fail(ctx, STSL_ERR_INVALID_ARG,
                                  "image_save: JPEG is 8-bit only (bit depth %d asked)", bit_depth);
        if (img->channels != 1 && img->channels != 3)
            return stsl__ctx_fail(ctx, STSL_ERR_INVALID_ARG,
                                  "image_save: JPEG cannot store alpha (image has %d channels); "
                                  "save as PNG or convert to 1 or 3 channels",
                                  (int)img->channels);
    }

    size_t cap = strlen(path) + 32;
    char *tmp = stsl__malloc(cap);
    if (!tmp) return stsl__ctx_fail(ctx, STSL_ERR_NOMEM, "image_save: out of memory");
    int fd = open_temp(path, tmp, cap);
    if (fd < 0) {
        st = stsl__ctx_fail(ctx, STSL_ERR_IO, "cannot write '%s': %s", path, strerror(errno));
        stsl__free(tmp);
        return st;
    }
    FILE *fp = fdopen(fd, "wb");
    if (!fp) {
        st = stsl__ctx_fail(ctx, STSL_ERR_IO, "cannot write '%s': %s", path, strerror(errno));
        close(fd);
        unlink(tmp);
        stsl__free(tmp);
        return st;
    }
    if (fmt == FMT_PNG)
        st = stsl__png_encode(ctx, img, fp, bit_depth, path);
    else
        st = stsl__jpeg_encode(ctx, img, fp, quality, path);
    if (st == STSL_OK && fflush(fp) != 0)
        st = stsl__ctx_fail(ctx, STSL_ERR_IO, "cannot write '%s': %s", path, strerror(errno));
    if (fclose(fp) != 0 && st == STSL_OK)
        st = stsl__ctx_fail(ctx, STSL_ERR_IO, "cannot write '%s': %s", path, strerror(errno));
    if (st == STSL_OK && rename(tmp, path) != 0)
        st = stsl__ctx_fail(ctx, STSL_ERR_IO, "cannot write '%s': rename from '%s' failed: %s",
                            path, tmp, strerror(errno));
    if (st != STSL_OK) unlink(tmp);
    stsl__free(tmp);
    return st;
}
