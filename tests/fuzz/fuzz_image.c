/* libFuzzer target: PNG and JPEG decoding through the library's loader (stsl_image_decode),
 * with every channel conversion.  Any input must give a status, never a crash or a leak. */
#include <stddef.h>
#include <stdint.h>

#include "stsl.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static const int channels[4] = {0, 1, 3, 4};
    stsl_context *ctx = NULL;
    if (stsl_context_create(&ctx) != STSL_OK) return 0;
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
    return 0;
}
