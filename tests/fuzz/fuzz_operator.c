/* libFuzzer target: operator construction from arbitrary parameters.  The input is read as a
 * kind, a small shape, a factor, and a list of (key, integer-or-real value) settings; the operator
 * is then prepared and applied.  Any combination must give a status, never a crash. */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "stsl.h"

typedef struct reader {
    const uint8_t *p;
    size_t n;
} reader;

static uint32_t take(reader *r, int bytes)
{
    uint32_t v = 0;
    for (int i = 0; i < bytes && r->n; i++, r->p++, r->n--) v = (v << 8) | *r->p;
    return v;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    reader r = {data, size};
    stsl_operator_kind kind = (stsl_operator_kind)(take(&r, 1) % 14);   /* includes one invalid */
    /* sides up to 24: every size rule (odd kernels up to 2 min(H,W) - 1, SR factors dividing the
     * side (24 = 3 * 8), FFT above the threshold) is reached at a fraction of the cost of 69 */
    stsl_shape shape = {(int32_t)(take(&r, 1) % 5), (int32_t)(take(&r, 1) % 25),
                        (int32_t)(take(&r, 1) % 25)};
    int factor = (int)(take(&r, 1) % 10);
    stsl_operator *op = NULL;
    if (kind == STSL_OP_MATRIX || kind == STSL_OP_CUSTOM) kind = STSL_OP_IDENTITY;
    if (stsl_operator_create(NULL, kind, shape, factor, &op) != STSL_OK) return 0;
    while (r.n >= 6) {
        stsl_param key = (stsl_param)(take(&r, 1) % 24);
        uint32_t raw = take(&r, 4);
        if (take(&r, 1) & 1) {
            stsl_operator_set_int(op, key, (int32_t)raw);
        } else {
            float f;
            memcpy(&f, &raw, sizeof f);
            stsl_operator_set_float(op, key, f);
        }
    }
    if (stsl_operator_prepare(op) == STSL_OK) {
        stsl_shape out;
        if (stsl_operator_output_shape(op, &out) == STSL_OK) {
            size_t nin = (size_t)shape.channels * shape.height * shape.width;
            size_t nout = (size_t)out.channels * out.height * out.width;
            float *x = calloc(nin, sizeof(float)), *y = calloc(nout, sizeof(float));
            if (x && y) {
                for (size_t i = 0; i < nin; i++) x[i] = (float)((i * 7) % 13) / 6.0f - 1.0f;
                stsl_operator_forward(op, x, y, 1);
                stsl_operator_vjp(op, x, y, x, 1);
                stsl_operator_measure(op, x, y, 1, 1);
                stsl_operator_backproject(op, y, x, 1);
                stsl_operator_data_fit(op, y, x, 1, NULL, x);
            }
            free(x);
            free(y);
        }
    }
    stsl_operator_destroy(op);
    return 0;
}
