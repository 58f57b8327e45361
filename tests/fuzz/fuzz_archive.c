/* libFuzzer target: the model archive's CRC-32 check (src/models/archive.c), which every model
 * load runs on the file before libtorch reads it: zip end records, zip64 records, directory
 * entries, local headers, stored and deflated data.  Any bytes must give a status, never a
 * crash, a hang or a leak.  The function reads a path, so each input is written to one file of
 * this process (in $TMPDIR or /tmp), removed at exit. */
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <unistd.h>

#include "models/model.h"

static char path[4096];
static stsl_context *ctx;

static void remove_file(void) { unlink(path); }

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (!ctx) {
        const char *dir = getenv("TMPDIR");
        snprintf(path, sizeof path, "%s/stsl-fuzz-archive-%ld.pt", dir && *dir ? dir : "/tmp", (long)getpid());
        if (stsl_context_create(&ctx) != STSL_OK) abort();
        atexit(remove_file);
    }
    FILE *f = fopen(path, "wb");
    if (!f) abort();
    if (size && fwrite(data, 1, size, f) != size) abort();
    if (fclose(f) != 0) abort();
    const stsl_status st = stsl__model_verify_archive(ctx, path);
    if (st != STSL_OK && st != STSL_ERR_FORMAT && st != STSL_ERR_NOMEM) abort();   /* the documented ones */
    return 0;
}
