/* libFuzzer target: the TorchScript metadata parser (stsl_meta.txt record, docs/models.md §3)
 * and its validation for every role.  Any text must give a status, never a crash or a leak. */
#include <stddef.h>
#include <stdint.h>

#include "models/meta.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    stsl__meta_entry *entries = NULL;
    int count = 0;
    char err[STSL_ERRMSG_SIZE];
    if (stsl__meta_parse((const char *)data, size, &entries, &count, err) != STSL_OK) return 0;
    stsl__model_meta meta;
    for (unsigned role = 0; role < 4; role++)
        stsl__meta_validate(entries, count, 1u << role, &meta, err);
    stsl__meta_validate(entries, count, 0xFu, &meta, err);
    stsl__meta_free(entries, count);
    return 0;
}
