/* A minimal parallel-for over contiguous chunks.  Only element-wise independent work uses it,
 * so results never depend on the number of threads. */
#include "core/internal.h"

typedef struct chunk {
    stsl__range_fn fn;
    void *arg;
    size_t begin, end;
} chunk;

static void *run_chunk(void *p)
{
    chunk *c = p;
    c->fn(c->arg, c->begin, c->end);
    return NULL;
}

stsl_status stsl__parallel_for(int threads, size_t n, size_t min_chunk, stsl__range_fn fn,
                               void *arg)
{
    if (n == 0) return STSL_OK;
    if (min_chunk == 0) min_chunk = 1;
    size_t parts = threads > 1 ? (size_t)threads : 1;
    if (parts > n / min_chunk) parts = n / min_chunk;
    if (parts > 256) parts = 256;
    if (parts <= 1) {
        fn(arg, 0, n);
        return STSL_OK;
    }
    chunk chunks[256];
    pthread_t tids[256];
    bool started[256];
    for (size_t i = 0; i < parts; i++) {
        chunks[i] = (chunk){fn, arg, n * i / parts, n * (i + 1) / parts};
        started[i] = false;
    }
    /* chunk 0 runs on the calling thread; a thread that cannot be created runs inline too */
    for (size_t i = 1; i < parts; i++)
        started[i] = pthread_create(&tids[i], NULL, run_chunk, &chunks[i]) == 0;
    run_chunk(&chunks[0]);
    for (size_t i = 1; i < parts; i++) {
        if (started[i])
            pthread_join(tids[i], NULL);
        else
            run_chunk(&chunks[i]);
    }
    return STSL_OK;
}
