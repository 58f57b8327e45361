/*
 * shim_internal.h -- what the shim's C++ files share (torchscript_shim.cpp: models; ops.cpp: the
 * measurement operators on a device).  C++ only, never seen by C code: shim.h is the interface.
 */
#ifndef STSL_SHIM_INTERNAL_H
#define STSL_SHIM_INTERNAL_H

#ifndef __cplusplus
#error "shim/shim_internal.h is the shim's C++ files' alone"
#endif

#include "shim.h"

#include <c10/core/Device.h>
#include <c10/util/Exception.h>

#include <new>
#include <stdexcept>
#include <string>

namespace stsl_shim_detail {

/* An error we raise ourselves, with the status it maps to. */
struct ShimError {
    stsl_status status;
    std::string msg;
};

/* msg into err (err_size bytes, NUL-terminated, truncated); nothing when err is NULL. */
void put_err(char *err, size_t err_size, const std::string &msg);
/* The first useful line of a libtorch message (tracebacks and backtraces dropped). */
std::string useful_line(const std::string &full);
/* CUDA device `cuda_index`, or the CPU (-1); ShimError STSL_ERR_BACKEND when CUDA or that GPU is
 * not there. */
c10::Device cuda_or_cpu(int cuda_index);
/* libtorch's intra-op thread count (process-wide), set when threads > 0 and it differs. */
void set_threads(int threads);

/* Runs `body`; maps every exception to a status and a one-line message prefixed by `what`. */
template <typename F>
stsl_status guarded(const char *what, stsl_status lib_status, char *err, size_t err_size, F &&body)
{
    try {
        return body();
    } catch (const ShimError &e) {
        put_err(err, err_size, e.msg);
        return e.status;
    } catch (const c10::OutOfMemoryError &e) {
        put_err(err, err_size, std::string(what) + ": out of memory: " +
                                   useful_line(e.what_without_backtrace()));
        return STSL_ERR_NOMEM;
    } catch (const c10::Error &e) {
        put_err(err, err_size, std::string(what) + ": " + useful_line(e.what_without_backtrace()));
        return lib_status;
    } catch (const std::bad_alloc &) {
        put_err(err, err_size, std::string(what) + ": out of memory");
        return STSL_ERR_NOMEM;
    } catch (const std::exception &e) {
        put_err(err, err_size, std::string(what) + ": " + useful_line(e.what()));
        return lib_status;
    } catch (...) {
        put_err(err, err_size, std::string(what) + ": unknown C++ exception");
        return STSL_ERR_INTERNAL;
    }
}

}  // namespace stsl_shim_detail

#endif
