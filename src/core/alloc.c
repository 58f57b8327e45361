/* Allocation wrappers.  Every allocation of the library goes through here so that the
 * fault-injection build (-DSTSL_FAULT_INJECTION) can fail the n-th one (issue 9), the way
 * SQLite tests itself. */
#include "core/internal.h"

#include <stdlib.h>
#include <string.h>

#ifdef STSL_FAULT_INJECTION
#include <stdatomic.h>
static atomic_long fault_counter;   /* allocations since the last stsl__fault_set */
static atomic_long fault_target;    /* fail this allocation number (1-based); 0 = never */

void stsl__fault_set(long n)
{
    atomic_store(&fault_counter, 0);
    atomic_store(&fault_target, n);
}

long stsl__fault_count(void) { return atomic_load(&fault_counter); }

static bool fault_now(void)
{
    long n = atomic_fetch_add(&fault_counter, 1) + 1;
    long target = atomic_load(&fault_target);
    return target > 0 && n == target;
}
#else
void stsl__fault_set(long n) { (void)n; }
long stsl__fault_count(void) { return 0; }
static inline bool fault_now(void) { return false; }
#endif

void *stsl__malloc(size_t size)
{
    if (fault_now()) return NULL;
    return malloc(size ? size : 1);
}

void *stsl__calloc(size_t count, size_t size)
{
    if (fault_now()) return NULL;
    if (count == 0 || size == 0) return calloc(1, 1);
    return calloc(count, size);
}

void *stsl__realloc(void *ptr, size_t size)
{
    if (fault_now()) return NULL;
    return realloc(ptr, size ? size : 1);
}

void stsl__free(void *ptr) { free(ptr); }

char *stsl__strdup(const char *s)
{
    if (!s) return NULL;
    size_t n = strlen(s) + 1;
    char *d = stsl__malloc(n);
    if (d) memcpy(d, s, n);
    return d;
}

float *stsl__alloc_floats(size_t count)
{
    size_t bytes;
    if (!stsl__mul_size(count, sizeof(float), &bytes)) return NULL;
    return stsl__malloc(bytes);
}

double *stsl__alloc_doubles(size_t count)
{
    size_t bytes;
    if (!stsl__mul_size(count, sizeof(double), &bytes)) return NULL;
    return stsl__malloc(bytes);
}
