/* JPEG through the libjpeg API of libjpeg-turbo (2.1.5 on Debian 12: no tj3* functions).
 *
 * libjpeg's default error handler prints to stderr and calls exit(); ours formats the message,
 * longjmp()s back to the entry point, which frees what it allocated and destroys the codec
 * object.  Warnings go to the context's log.  While decoding, warnings that mean the data is
 * truncated or corrupt ("Premature end of JPEG file", "Corrupt JPEG data: ...") are errors: a
 * truncated file is STSL_ERR_FORMAT, not a grey-padded image.  A progress monitor refuses
 * progressive files with an absurd number of scans (a CPU-time bomb). */
#include "io/io_internal.h"

#include <errno.h>
#include <setjmp.h>
#include <stdio.h>
#include <string.h>

#include <jpeglib.h>
#include <jerror.h>

#define STSL_JPEG_MAX_SCANS 500

typedef struct jpeg_err {
    struct jpeg_error_mgr pub;
    jmp_buf jb;
    stsl_context *ctx;
    const char *name;
    int strict;                 /* decoding: data-corruption warnings are fatal */
    char msg[JMSG_LENGTH_MAX];  /* text of the fatal error */
} jpeg_err;

typedef struct jpeg_prog {
    struct jpeg_progress_mgr pub;
    jpeg_err *err;
} jpeg_prog;

static void on_error_exit(j_common_ptr cinfo)
{
    jpeg_err *e = (jpeg_err *)cinfo->err;
    if (!e->msg[0]) (*cinfo->err->format_message)(cinfo, e->msg);
    longjmp(e->jb, 1);
}

static void on_output_message(j_common_ptr cinfo)
{
    jpeg_err *e = (jpeg_err *)cinfo->err;
    char buf[JMSG_LENGTH_MAX];
    (*cinfo->err->format_message)(cinfo, buf);
    stsl__log(e->ctx, STSL_LOG_WARN, "JPEG %s: %s", e->name, buf);
}

static int warning_is_corruption(int code)
{
    switch (code) {
    case JWRN_JPEG_EOF:
    case JWRN_HIT_MARKER:
    case JWRN_HUFF_BAD_CODE:
    case JWRN_ARITH_BAD_CODE:
    case JWRN_MUST_RESYNC:
    case JWRN_NOT_SEQUENTIAL:
    case JWRN_BOGUS_PROGRESSION:
        return 1;
    default:
        return 0;
    }
}

static void on_emit_message(j_common_ptr cinfo, int level)
{
    jpeg_err *e = (jpeg_err *)cinfo->err;
    if (level < 0) {
        cinfo->err->num_warnings++;
        if (e->strict && warning_is_corruption(cinfo->err->msg_code)) {
            (*cinfo->err->format_message)(cinfo, e->msg);
            longjmp(e->jb, 1);
        }
        (*cinfo->err->output_message)(cinfo);
    } else if (cinfo->err->trace_level >= level) {
        char buf[JMSG_LENGTH_MAX];
        (*cinfo->err->format_message)(cinfo, buf);
        stsl__log(e->ctx, STSL_LOG_DEBUG, "JPEG %s: %s", e->name, buf);
    }
}

static void on_progress(j_common_ptr cinfo)
{
    jpeg_prog *p = (jpeg_prog *)cinfo->progress;
    if (!cinfo->is_decompressor) return;
    j_decompress_ptr d = (j_decompress_ptr)cinfo;
    if (d->input_scan_number > STSL_JPEG_MAX_SCANS) {
        snprintf(p->err->msg, sizeof p->err->msg, "more than %d progressive scans",
                 STSL_JPEG_MAX_SCANS);
        longjmp(p->err->jb, 1);
    }
}

static void init_err(jpeg_err *e, stsl_context *ctx, const char *name, int strict)
{
    memset(e, 0, sizeof *e);
    jpeg_std_error(&e->pub);
    e->pub.error_exit = on_error_exit;
    e->pub.output_message = on_output_message;
    e->pub.emit_message = on_emit_message;
    e->ctx = ctx;
    e->name = name;
    e->strict = strict;
}

static stsl_status decode_failure(stsl_context *ctx, const jpeg_err *e, const stsl__io_src *src)
{
    int code = e->pub.msg_code;
    if (code == JERR_OUT_OF_MEMORY)
        return stsl__ctx_fail(ctx, STSL_ERR_NOMEM, "JPEG %s: out of memory", e->name);
    if (src->fp && ferror(src->fp))
        return stsl__ctx_fail(ctx, STSL_ERR_IO, "JPEG %s: read error: %s", e->name,
                              strerror(errno));
    if (code == JERR_IMAGE_TOO_BIG || code == JERR_WIDTH_OVERFLOW)
        return stsl__ctx_fail(ctx, STSL_ERR_LIMIT, "JPEG %s: %s", e->name, e->msg);
    return stsl__ctx_fail(ctx, STSL_ERR_FORMAT, "JPEG %s: %s", e->name,
                          e->msg[0] ? e->msg : "corrupt file");
}

/* Adobe (Photoshop) CMYK JPEGs store inverted samples (255 = no ink); others store ink. */
static void cmyk_to_rgb(const JSAMPLE *in, unsigned char *out, size_t width, int inverted)
{
    for (size_t x = 0; x < width; x++) {
        unsigned c = in[4 * x], m = in[4 * x + 1], y = in[4 * x + 2], k = in[4 * x + 3];
        if (!inverted) {
            c = 255 - c;
            m = 255 - m;
            y = 255 - y;
            k = 255 - k;
        }
        out[3 * x] = (unsigned char)((c * k + 127) / 255);
        out[3 * x + 1] = (unsigned char)((m * k + 127) / 255);
        out[3 * x + 2] = (unsigned char)((y * k + 127) / 255);
    }
}

stsl_status stsl__jpeg_decode(stsl_context *ctx, const stsl__io_src *src, int requested,
                              stsl_image **out)
{
    *out = NULL;
    struct jpeg_decompress_struct cinfo;
    jpeg_err e;
    jpeg_prog prog;
    memset(&cinfo, 0, sizeof cinfo); /* jpeg_destroy_* is safe on a zeroed object */
    init_err(&e, ctx, src->name, 1);
    memset(&prog, 0, sizeof prog);
    prog.pub.progress_monitor = on_progress;
    prog.err = &e;
    cinfo.err = &e.pub;

    stsl_image *volatile img = NULL;
    unsigned char *volatile row = NULL;
    unsigned char *volatile rgb = NULL;
    volatile stsl_status st = STSL_OK;

    if (setjmp(e.jb)) {
        st = decode_failure(ctx, &e, src);
        goto done;
    }
    jpeg_create_decompress(&cinfo);
    cinfo.progress = &prog.pub;
    if (src->mem)
        jpeg_mem_src(&cinfo, src->mem, (unsigned long)src->size);
    else
        jpeg_stdio_src(&cinfo, src->fp);
    jpeg_read_header(&cinfo, TRUE);
    {
        char what[64];
        snprintf(what, sizeof what, "JPEG %.50s", e.name);
        st = stsl__image_check_size(ctx, what, 1, (int64_t)cinfo.image_height,
                                    (int64_t)cinfo.image_width);
        if (st != STSL_OK) goto done;
    }
    int fc, cmyk = 0;
    switch (cinfo.jpeg_color_space) {
    case JCS_GRAYSCALE:
        cinfo.out_color_space = JCS_GRAYSCALE;
        fc = 1;
        break;
    case JCS_CMYK:
    case JCS_YCCK:
        cinfo.out_color_space = JCS_CMYK; /* converted to RGB below */
        fc = 3;
        cmyk = 1;
        break;
    default:
        cinfo.out_color_space = JCS_RGB;
        fc = 3;
        break;
    }
    jpeg_start_decompress(&cinfo);
    int comps = cmyk ? 4 : fc;
    if (cinfo.output_components != comps || cinfo.output_width != cinfo.image_width ||
        cinfo.output_height != cinfo.image_height) {
        st = stsl__ctx_fail(ctx, STSL_ERR_FORMAT, "JPEG %s: unsupported layout (%d components)",
                            e.name, cinfo.output_components);
        goto done;
    }
    {
        stsl_image *tmp = NULL;
        st = stsl__image_create_ctx(ctx, stsl__io_target_channels(fc, requested),
                                    (int)cinfo.output_height, (int)cinfo.output_width, &tmp);
        img = tmp;
        if (st != STSL_OK) goto done;
    }
    size_t width = cinfo.output_width;
    row = stsl__malloc(width * (size_t)comps);
    if (cmyk) rgb = stsl__malloc(width * 3);
    if (!row || (cmyk && !rgb)) {
        st = stsl__ctx_fail(ctx, STSL_ERR_NOMEM, "JPEG %s: out of memory", e.name);
        goto done;
    }
    while (cinfo.output_scanline < cinfo.output_height) {
        JSAMPROW rp = row;
        int y = (int)cinfo.output_scanline;
        if (jpeg_read_scanlines(&cinfo, &rp, 1) != 1) {
            st = stsl__ctx_fail(ctx, STSL_ERR_FORMAT, "JPEG %s: decoder stopped at row %d",
                                e.name, y);
            goto done;
        }
        if (cmyk) {
            cmyk_to_rgb(row, rgb, width, cinfo.saw_Adobe_marker);
            stsl__io_store_row(img, y, rgb, 3, 8);
        } else {
            stsl__io_store_row(img, y, row, fc, 8);
        }
    }
    jpeg_finish_decompress(&cinfo);
    *out = img;
    img = NULL;
    st = STSL_OK;

done:
    stsl_image_destroy(img);
    stsl__free(row);
    stsl__free(rgb);
    jpeg_destroy_decompress(&cinfo);
    return st;
}

stsl_status stsl__jpeg_encode(stsl_context *ctx, const stsl_image *img, FILE *fp, int quality,
                              const char *name)
{
    struct jpeg_compress_struct cinfo;
    jpeg_err e;
    memset(&cinfo, 0, sizeof cinfo);
    init_err(&e, ctx, name, 0);
    cinfo.err = &e.pub;
    unsigned char *volatile row = NULL;
    volatile stsl_status st = STSL_OK;

    if (setjmp(e.jb)) {
        int code = e.pub.msg_code;
        if (code == JERR_OUT_OF_MEMORY)
            st = stsl__ctx_fail(ctx, STSL_ERR_NOMEM, "JPEG %s: out of memory", name);
        else if (code == JERR_FILE_WRITE || ferror(fp))
            st = stsl__ctx_fail(ctx, STSL_ERR_IO, "JPEG %s: write error: %s", name,
                                strerror(errno));
        else
            st = stsl__ctx_fail(ctx, STSL_ERR_INTERNAL, "JPEG %s: libjpeg: %s", name, e.msg);
        goto done;
    }
    jpeg_create_compress(&cinfo);
    jpeg_stdio_dest(&cinfo, fp);
    cinfo.image_width = (JDIMENSION)img->width;
    cinfo.image_height = (JDIMENSION)img->height;
    cinfo.input_components = img->channels;
    cinfo.in_color_space = img->channels == 1 ? JCS_GRAYSCALE : JCS_RGB;
    jpeg_set_defaults(&cinfo);
    jpeg_set_quality(&cinfo, quality, TRUE);
    jpeg_start_compress(&cinfo, TRUE);
    row = stsl__malloc((size_t)img->width * (size_t)img->channels);
    if (!row) {
        st = stsl__ctx_fail(ctx, STSL_ERR_NOMEM, "JPEG %s: out of memory", name);
        goto done;
    }
    for (int y = 0; y < img->height; y++) {
        JSAMPROW rp = row;
        stsl__io_fetch_row(img, y, row, 8);
        jpeg_write_scanlines(&cinfo, &rp, 1);
    }
    jpeg_finish_compress(&cinfo);
    st = STSL_OK;

done:
    stsl__free(row);
    jpeg_destroy_compress(&cinfo);
    return st;
}
