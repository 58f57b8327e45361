/* PNG through libpng 1.6.
 *
 * libpng reports errors by longjmp()ing out of the failing call.  Each entry point here sets its
 * jump buffer once, keeps every pointer it allocates after setjmp() in a volatile local, and frees
 * them all on the single way out.  libpng's own allocations go through stsl__malloc
 * (png_create_*_struct_2), so fault injection reaches them too, and an allocation failure inside
 * libpng is reported as STSL_ERR_NOMEM rather than as a corrupt file.  Sizes are checked against
 * the documented limits from the IHDR before anything image-sized is allocated, twice: by our
 * own check and by png_set_user_limits(). */
#include "io/io_internal.h"

#include <errno.h>
#include <png.h>
#include <setjmp.h>
#include <string.h>

typedef struct png_state {
    stsl_context *ctx;
    const stsl__io_src *src; /* decoding */
    FILE *out;               /* encoding */
    const char *name;
    size_t pos;              /* memory source: bytes consumed */
    char msg[256];           /* first error text from libpng or from our read/write callbacks */
    int limit_hit;           /* libpng warned that a user limit was exceeded */
    int oom;                 /* an allocation made for libpng failed */
    size_t refused;          /* an allocation libpng asked for over PNG_ALLOC_MAX (bytes), or 0 */
    int io_error;            /* a read or write on the stream failed (not a format problem) */
    int io_errno;
} png_state;

static void on_error(png_structp png, png_const_charp msg)
{
    png_state *s = png_get_error_ptr(png);
    if (s && !s->msg[0]) snprintf(s->msg, sizeof s->msg, "%s", msg ? msg : "unknown libpng error");
    png_longjmp(png, 1);
}

static void on_warning(png_structp png, png_const_charp msg)
{
    png_state *s = png_get_error_ptr(png);
    if (!s) return;
    if (msg && strstr(msg, "exceeds user limit")) {
        s->limit_hit = 1;
        if (!s->msg[0]) snprintf(s->msg, sizeof s->msg, "%s", msg);
    }
    stsl__log(s->ctx, STSL_LOG_WARN, "PNG %s: %s", s->name, msg ? msg : "");
}

/* The most libpng itself may allocate at once.  Its own buffers are small (a row of the widest
 * image the limits allow is 128 KiB, zlib's window 32 KiB); the image is allocated by us.  Only a
 * chunk buffer can be large, and png_set_chunk_malloc_max does not bound every chunk in Debian's
 * libpng 1.6.39: a 42-byte file declaring a 1 GiB sPLT chunk made it allocate 1 GiB before finding
 * the file truncated (found by fuzz_png; the input is in tests/fuzz/corpus/png/).  So the bound
 * is enforced here, where every libpng allocation passes. */
#define PNG_ALLOC_MAX ((size_t)16 * 1024 * 1024)

static png_voidp on_malloc(png_structp png, png_alloc_size_t size)
{
    png_state *s = png_get_mem_ptr(png);
    if (size > PNG_ALLOC_MAX) {
        if (s) s->refused = size;
        return NULL;
    }
    void *p = stsl__malloc(size);
    if (!p && s) s->oom = 1;
    return p;
}

static void on_free(png_structp png, png_voidp ptr)
{
    (void)png;
    stsl__free(ptr);
}

static void on_read(png_structp png, png_bytep data, size_t length)
{
    png_state *s = png_get_io_ptr(png);
    const stsl__io_src *src = s->src;
    if (src->mem) {
        if (length > src->size - s->pos) png_error(png, "file is truncated");
        memcpy(data, src->mem + s->pos, length);
        s->pos += length;
        return;
    }
    size_t got = fread(data, 1, length, src->fp);
    if (got != length) {
        if (ferror(src->fp)) {
            s->io_error = 1;
            s->io_errno = errno;
            png_error(png, "read error");
        }
        png_error(png, "file is truncated");
    }
}

static void on_write(png_structp png, png_bytep data, size_t length)
{
    png_state *s = png_get_io_ptr(png);
    if (fwrite(data, 1, length, s->out) != length) {
        s->io_error = 1;
        s->io_errno = errno;
        png_error(png, "write error");
    }
}

static void on_flush(png_structp png)
{
    png_state *s = png_get_io_ptr(png);
    if (fflush(s->out) != 0) {
        s->io_error = 1;
        s->io_errno = errno;
        png_error(png, "write error");
    }
}

static uint32_t be32(const unsigned char *p)
{
    return ((uint32_t)p[0] << 24) | ((uint32_t)p[1] << 16) | ((uint32_t)p[2] << 8) | p[3];
}

stsl_status stsl__png_precheck(stsl_context *ctx, const unsigned char *head, size_t n,
                               const char *name)
{
    /* signature (8), IHDR length (4), "IHDR" (4), width (4), height (4) */
    if (n < 24 || memcmp(head + 12, "IHDR", 4) != 0) return STSL_OK;
    uint32_t w = be32(head + 16), h = be32(head + 20);
    if (w == 0 || h == 0 || w > 0x7fffffffu || h > 0x7fffffffu)
        return stsl__ctx_fail(ctx, STSL_ERR_FORMAT,
                              "PNG %s: invalid image size %lu x %lu in the header", name,
                              (unsigned long)w, (unsigned long)h);
    char what[64];
    snprintf(what, sizeof what, "PNG %.50s", name);
    return stsl__image_check_size(ctx, what, 1, h, w);
}

static stsl_status read_failure(stsl_context *ctx, const png_state *s)
{
    if (s->refused)
        return stsl__ctx_fail(ctx, STSL_ERR_FORMAT,
                              "PNG %s: a chunk needs %zu bytes, over the %zu MiB limit (corrupt or hostile file)",
                              s->name, s->refused, PNG_ALLOC_MAX >> 20);
    if (s->oom) return stsl__ctx_fail(ctx, STSL_ERR_NOMEM, "PNG %s: out of memory", s->name);
    if (s->io_error)
        return stsl__ctx_fail(ctx, STSL_ERR_IO, "PNG %s: read error: %s", s->name,
                              strerror(s->io_errno));
    if (s->limit_hit)
        return stsl__ctx_fail(ctx, STSL_ERR_LIMIT, "PNG %s: %s (limit %d per side)", s->name,
                              s->msg, STSL_MAX_IMAGE_DIM);
    return stsl__ctx_fail(ctx, STSL_ERR_FORMAT, "PNG %s: %s", s->name,
                          s->msg[0] ? s->msg : "corrupt file");
}

stsl_status stsl__png_decode(stsl_context *ctx, const stsl__io_src *src, int requested,
                             stsl_image **out)
{
    *out = NULL;
    png_state s;
    memset(&s, 0, sizeof s);
    s.ctx = ctx;
    s.src = src;
    s.name = src->name;
    png_structp png = png_create_read_struct_2(PNG_LIBPNG_VER_STRING, &s, on_error, on_warning,
                                               &s, on_malloc, on_free);
    if (!png) return stsl__ctx_fail(ctx, STSL_ERR_NOMEM, "PNG %s: out of memory", s.name);
    png_infop info = png_create_info_struct(png);
    if (!info) {
        png_destroy_read_struct(&png, NULL, NULL);
        return stsl__ctx_fail(ctx, STSL_ERR_NOMEM, "PNG %s: out of memory", s.name);
    }

    /* everything allocated after setjmp lives in these, freed at `done` */
    stsl_image *volatile img = NULL;
    unsigned char *volatile pixels = NULL;
    png_bytep *volatile rows = NULL;
    volatile stsl_status st = STSL_OK;

    if (setjmp(png_jmpbuf(png))) {
        st = read_failure(ctx, &s);
        goto done;
    }
    png_set_user_limits(png, STSL_MAX_IMAGE_DIM, STSL_MAX_IMAGE_DIM);
    png_set_chunk_cache_max(png, 1000);               /* ancillary chunks kept */
    png_set_chunk_malloc_max(png, 8u * 1024u * 1024u); /* per chunk (iCCP, zTXt, ...) */
    png_set_read_fn(png, &s, on_read);
    png_read_info(png, info);

    png_uint_32 w, h;
    int depth, ctype, interlace;
    png_get_IHDR(png, info, &w, &h, &depth, &ctype, &interlace, NULL, NULL);
    {
        char what[64];
        snprintf(what, sizeof what, "PNG %.50s", s.name);
        st = stsl__image_check_size(ctx, what, 1, (int64_t)h, (int64_t)w);
        if (st != STSL_OK) goto done;
    }

    if (ctype == PNG_COLOR_TYPE_PALETTE) png_set_palette_to_rgb(png);
    if (ctype == PNG_COLOR_TYPE_GRAY && depth < 8) png_set_expand_gray_1_2_4_to_8(png);
    if (png_get_valid(png, info, PNG_INFO_tRNS)) png_set_tRNS_to_alpha(png);
    int passes = png_set_interlace_handling(png);
    png_read_update_info(png, info);

    int fc = png_get_channels(png, info);
    int rdepth = png_get_bit_depth(png, info);
    size_t rowbytes = png_get_rowbytes(png, info);
    if (fc < 1 || fc > 4 || (rdepth != 8 && rdepth != 16) ||
        rowbytes != (size_t)w * (size_t)fc * (size_t)(rdepth / 8)) {
        st = stsl__ctx_fail(ctx, STSL_ERR_FORMAT,
                            "PNG %s: unsupported layout (%d channels, %d bit, color type %d)",
                            s.name, fc, rdepth, ctype);
        goto done;
    }
    {
        stsl_image *tmp = NULL;
        st = stsl__image_create_ctx(ctx, stsl__io_target_channels(fc, requested), (int)h, (int)w,
                                    &tmp);
        img = tmp;
        if (st != STSL_OK) goto done;
    }

    if (passes > 1) {
        /* interlaced: the passes fill the whole image in place */
        size_t total;
        if (!stsl__mul_size(rowbytes, (size_t)h, &total)) {
            st = stsl__ctx_fail(ctx, STSL_ERR_LIMIT, "PNG %s: size arithmetic overflows", s.name);
            goto done;
        }
        pixels = stsl__malloc(total);
        rows = stsl__calloc((size_t)h, sizeof *rows);
        if (!pixels || !rows) {
            st = stsl__ctx_fail(ctx, STSL_ERR_NOMEM, "PNG %s: out of memory for %zu bytes",
                                s.name, total);
            goto done;
        }
        for (png_uint_32 y = 0; y < h; y++) rows[y] = pixels + (size_t)y * rowbytes;
        png_read_image(png, rows);
        for (png_uint_32 y = 0; y < h; y++) stsl__io_store_row(img, (int)y, rows[y], fc, rdepth);
    } else {
        pixels = stsl__malloc(rowbytes);
        if (!pixels) {
            st = stsl__ctx_fail(ctx, STSL_ERR_NOMEM, "PNG %s: out of memory", s.name);
            goto done;
        }
        for (png_uint_32 y = 0; y < h; y++) {
            png_read_row(png, pixels, NULL);
            stsl__io_store_row(img, (int)y, pixels, fc, rdepth);
        }
    }
    /* the rest of the file: checks the CRCs and that IEND is there (catches truncation) */
    png_read_end(png, NULL);
    *out = img;
    img = NULL;
    st = STSL_OK;

done:
    stsl_image_destroy(img);
    stsl__free(rows);
    stsl__free(pixels);
    png_destroy_read_struct(&png, &info, NULL);
    return st;
}

stsl_status stsl__png_encode(stsl_context *ctx, const stsl_image *img, FILE *fp, int depth,
                             const char *name)
{
    png_state s;
    memset(&s, 0, sizeof s);
    s.ctx = ctx;
    s.out = fp;
    s.name = name;
    png_structp png = png_create_write_struct_2(PNG_LIBPNG_VER_STRING, &s, on_error, on_warning,
                                                &s, on_malloc, on_free);
    if (!png) return stsl__ctx_fail(ctx, STSL_ERR_NOMEM, "PNG %s: out of memory", name);
    png_infop info = png_create_info_struct(png);
    if (!info) {
        png_destroy_write_struct(&png, NULL);
        return stsl__ctx_fail(ctx, STSL_ERR_NOMEM, "PNG %s: out of memory", name);
    }
    unsigned char *volatile row = NULL;
    volatile stsl_status st = STSL_OK;

    if (setjmp(png_jmpbuf(png))) {
        if (s.oom)
            st = stsl__ctx_fail(ctx, STSL_ERR_NOMEM, "PNG %s: out of memory", name);
        else if (s.io_error)
            st = stsl__ctx_fail(ctx, STSL_ERR_IO, "PNG %s: write error: %s", name,
                                strerror(s.io_errno));
        else
            st = stsl__ctx_fail(ctx, STSL_ERR_INTERNAL, "PNG %s: libpng: %s", name, s.msg);
        goto done;
    }
    static const int types[5] = {0, PNG_COLOR_TYPE_GRAY, PNG_COLOR_TYPE_GRAY_ALPHA,
                                 PNG_COLOR_TYPE_RGB, PNG_COLOR_TYPE_RGB_ALPHA};
    png_set_write_fn(png, &s, on_write, on_flush);
    png_set_IHDR(png, info, (png_uint_32)img->width, (png_uint_32)img->height, depth,
                 types[img->channels], PNG_INTERLACE_NONE, PNG_COMPRESSION_TYPE_DEFAULT,
                 PNG_FILTER_TYPE_DEFAULT);
    png_write_info(png, info);
    /* width <= 2^14, channels <= 4, 2 bytes: no overflow */
    size_t rowbytes = (size_t)img->width * (size_t)img->channels * (size_t)(depth / 8);
    row = stsl__malloc(rowbytes);
    if (!row) {
        st = stsl__ctx_fail(ctx, STSL_ERR_NOMEM, "PNG %s: out of memory", name);
        goto done;
    }
    for (int y = 0; y < img->height; y++) {
        stsl__io_fetch_row(img, y, row, depth);
        png_write_row(png, row);
    }
    png_write_end(png, NULL);
    st = STSL_OK;

done:
    stsl__free(row);
    png_destroy_write_struct(&png, &info);
    return st;
}
