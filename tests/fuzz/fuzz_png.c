/* libFuzzer target: the PNG decoder only (every input starts with the PNG signature). */
#define STSL_FUZZ_MAGIC "\x89PNG\r\n\x1a\n"
#include "image_target.c"
