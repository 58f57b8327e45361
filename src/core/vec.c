/* Reductions over float arrays in a fixed order.  A sum carried in one double waits on each
 * add (some 0.3 ms per 3x256x256 image, every time a solver takes a norm); eight running sums,
 * element k into sum k mod 8, combined pairwise, vectorise and give the same bits on every
 * machine and vector width (the order is the code's, not the compiler's). */
#include "core/internal.h"

double stsl__dot(const float *a, const float *b, size_t n)
{
    double acc[8] = {0, 0, 0, 0, 0, 0, 0, 0};
    size_t k = 0;
    for (; k + 8 <= n; k += 8)
        for (int j = 0; j < 8; j++) acc[j] += (double)a[k + j] * (double)b[k + j];
    for (int j = 0; k < n; k++, j++) acc[j] += (double)a[k] * (double)b[k];
    return ((acc[0] + acc[1]) + (acc[2] + acc[3])) + ((acc[4] + acc[5]) + (acc[6] + acc[7]));
}
