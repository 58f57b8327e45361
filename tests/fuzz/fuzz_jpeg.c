/* libFuzzer target: the JPEG decoder only (every input starts with SOI and a marker byte). */
#define STSL_FUZZ_MAGIC "\xff\xd8\xff"
#include "image_target.c"
