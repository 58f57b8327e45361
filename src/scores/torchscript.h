/*
 * torchscript.h -- what the TorchScript score and autoencoder loaders share (private).
 */
#ifndef STSL_TORCHSCRIPT_H
#define STSL_TORCHSCRIPT_H

#include "models/meta.h"
#include "scores/score_internal.h"

#ifdef STSL_WITH_TORCH
#include "../../shim/shim.h"

/* Open a model file: check it can be read, load it through the shim on the context's device
 * (with its half flag), parse and validate its stsl_meta.txt record for one of `allowed_roles`
 * (bit mask of 1 << STSL__ROLE_*).  On success the caller owns *mod and *entries (*count
 * entries; stsl__meta_free) and *meta points into the entries.  On failure nothing is held and
 * the context carries the message (prefixed with the path). */
stsl_status stsl__ts_open(stsl_context *ctx, const char *path, unsigned allowed_roles,
                          stsl_shim_module **mod, stsl__meta_entry **entries, int *count,
                          stsl__model_meta *meta);
#endif

#endif
