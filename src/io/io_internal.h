/*
 * io_internal.h -- private interface between the image container (image.c), the format sniffer
 * and dispatcher (load.c) and the codecs (png.c, jpeg.c).  Never installed.
 *
 * A codec decodes into 8- or 16-bit interleaved rows and hands each row to
 * stsl__io_store_row(), which maps it to float [-1, 1], converts channels and writes the planar
 * CHW image.  Saving goes the other way through stsl__io_fetch_row().
 */
#ifndef STSL_IO_INTERNAL_H
#define STSL_IO_INTERNAL_H

#include "core/internal.h"

#include <stdio.h>

/* Validate an image size against STSL_MAX_* without allocating: STSL_ERR_INVALID_ARG for
 * channels outside 1..STSL_MAX_CHANNELS or a dimension < 1, STSL_ERR_LIMIT beyond the limits.
 * `what` names the thing checked in the message ("image", "PNG", ...).  ctx may be NULL. */
stsl_status stsl__image_check_size(stsl_context *ctx, const char *what, int64_t channels,
                                   int64_t height, int64_t width);
/* stsl_image_create with the error detail written into ctx (may be NULL). */
stsl_status stsl__image_create_ctx(stsl_context *ctx, int channels, int height, int width,
                                   stsl_image **out);

/* Channels of the image produced from a file with `file_channels` interleaved samples per pixel
 * (1 grey, 2 grey+alpha, 3 RGB, 4 RGBA) when the caller asked for `requested` (0, 1, 3, 4). */
int stsl__io_target_channels(int file_channels, int requested);

/* Store decoded row y: `row` holds width * file_channels samples, 8-bit (depth 8) or 16-bit
 * big-endian (depth 16, as PNG stores them), mapped 0 -> -1 and max -> +1. */
void stsl__io_store_row(stsl_image *img, int y, const unsigned char *row, int file_channels,
                        int depth);
/* Fetch row y of img into `row` as width * img->channels samples of `depth` bits (16-bit
 * big-endian), clipped to [-1, 1] and rounded to nearest. */
void stsl__io_fetch_row(const stsl_image *img, int y, unsigned char *row, int depth);

/* Input for a decoder: a memory buffer (mem, size), or a stdio stream positioned at the start
 * of the file (fp; mem NULL).  `name` is used in messages ("<memory>" or the path). */
typedef struct stsl__io_src {
    const unsigned char *mem;
    size_t size;
    FILE *fp;
    const char *name;
} stsl__io_src;

/* Decoders.  `requested` is the channels argument (already validated).  On failure *out stays
 * NULL, nothing is leaked and the detail is in ctx. */
stsl_status stsl__png_decode(stsl_context *ctx, const stsl__io_src *src, int requested,
                             stsl_image **out);
stsl_status stsl__jpeg_decode(stsl_context *ctx, const stsl__io_src *src, int requested,
                              stsl_image **out);

/* Encoders into an open stream (the caller owns fp, its temporary file and the rename).
 * Arguments are validated by the caller: PNG channels 1..4 and depth 8/16; JPEG channels 1 or
 * 3 and quality 1..100. */
stsl_status stsl__png_encode(stsl_context *ctx, const stsl_image *img, FILE *fp, int depth,
                             const char *name);
stsl_status stsl__jpeg_encode(stsl_context *ctx, const stsl_image *img, FILE *fp, int quality,
                              const char *name);

/* PNG IHDR pre-check on the first bytes of a file (signature + IHDR): refuses a zero size
 * (STSL_ERR_FORMAT) or a size beyond the limits (STSL_ERR_LIMIT) before libpng allocates
 * anything.  Returns STSL_OK when the header is acceptable or too short to tell (libpng then
 * reports the truncation). */
stsl_status stsl__png_precheck(stsl_context *ctx, const unsigned char *head, size_t n,
                               const char *name);

#endif /* STSL_IO_INTERNAL_H */
