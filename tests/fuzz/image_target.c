/* libFuzzer target: PNG and JPEG decoding through the library's loader (stsl_image_decode),
 * with every channel conversion.  Any input must give a status, never a crash or a leak.
 *
 * Included by fuzz_png.c and fuzz_jpeg.c (one target per format, so each gets its own count);
 * they define STSL_FUZZ_MAGIC so that every input starts with that format's
 * signature: a mutation that breaks the first bytes still reaches the format's parser. */
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "stsl.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static const int channels[4] = {0, 1, 3, 4};
    uint8_t *copy = NULL;
#ifdef STSL_FUZZ_MAGIC
    static const char magic[] = STSL_FUZZ_MAGIC;
    const size_t nm = sizeof magic - 1;
    if (size < nm || memcmp(data, magic, nm) != 0) {
        if (!(copy = malloc(size + nm))) return 0;
        memcpy(copy, magic, nm);
        if (size) memcpy(copy + nm, data, size);
        data = copy;
        size += nm;
    }
#endif
    stsl_context *ctx = NULL;
    if (stsl_context_create(&ctx) != STSL_OK) {
        free(copy);
        return 0;
    }
    int want = size ? channels[data[size - 1] & 3] : 0;
    stsl_image *img = NULL;
    if (stsl_image_decode(ctx, data, size, want, &img) == STSL_OK) {
        /* touch every pixel so ASan sees any short allocation */
        volatile float sum = 0;
        size_t n = (size_t)img->channels * img->height * img->width;
        for (size_t i = 0; i < n; i++) sum += img->data[i];
        (void)sum;
    }
    stsl_image_destroy(img);
    stsl_context_destroy(ctx);
    free(copy);
    return 0;
}
