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

#include <ATen/core/Tensor.h>
#include <c10/core/Device.h>
#include <c10/util/Exception.h>

#include <functional>
#include <memory>
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
/* useful_line of an exception's message (a c10::Error's without its C++ backtrace). */
std::string exception_line(const std::exception &e);
/* CUDA device `cuda_index`, or the CPU (-1); ShimError STSL_ERR_BACKEND when CUDA or that GPU is
 * not there. */
c10::Device cuda_or_cpu(int cuda_index);
/* libtorch's intra-op thread count (process-wide), set when threads > 0 and it differs. */
void set_threads(int threads);

/* CUDA graphs around a module's repeated calls (cuda_graphs.cpp, which says how).
 * cuda_graphs_setting: STSL_CUDA_GRAPHS read at load, 0 or unset off, 1 on; another value is a
 * ShimError STSL_ERR_INVALID_ARG (on any device).  cuda_graphs_new: the module's cache, NULL for a
 * module on the CPU; ShimError STSL_ERR_UNSUPPORTED on CUDA where the build has none. */
struct CudaGraphs;
struct CudaGraphEntry;
bool cuda_graphs_setting();
std::shared_ptr<CudaGraphs> cuda_graphs_new(c10::Device device, bool reduced_precision);
/* One method call, as the module makes it (autocast, inference or grad mode, the optimiser
 * switch): forward(x, t) on device tensors (t undefined when the method takes none), and
 * backward(out, x, v) = the VJP of out at x with cotangent v (undefined when out ignores x). */
struct GraphCalls {
    std::function<at::Tensor(const at::Tensor &x, const at::Tensor &t)> forward;
    std::function<at::Tensor(const at::Tensor &out, const at::Tensor &x, const at::Tensor &v)> backward;
};
/* A replayed forward whose backward may follow; cuda_graph_release ends it (backward or not). */
struct CudaGraphLease {
    std::shared_ptr<CudaGraphs> graphs;
    std::shared_ptr<CudaGraphEntry> entry;
};
/* The call on host tensors x_host, t_host (t_host undefined when none) served by a graph: the
 * device output, valid until the key's next replay; an undefined tensor when the call must run
 * as always (too early, not capturable, busy).  grad: the forward kept for a VJP, *lease set. */
at::Tensor cuda_graph_forward(const std::shared_ptr<CudaGraphs> &graphs, const std::string &method,
                              const at::Tensor &x_host, const at::Tensor &t_host, const GraphCalls &calls,
                              bool grad, CudaGraphLease *lease);
/* The VJP of a leased forward with the host cotangent v_host: the device gradient. */
at::Tensor cuda_graph_backward(CudaGraphLease &lease, const at::Tensor &v_host);
void cuda_graph_release(CudaGraphLease &lease);
/* "N captured, M replays, ..." (empty when the module has no cache). */
std::string cuda_graphs_report(const std::shared_ptr<CudaGraphs> &graphs);

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
    } catch (const std::bad_alloc &) {
        put_err(err, err_size, std::string(what) + ": out of memory");
        return STSL_ERR_NOMEM;
    } catch (const std::exception &e) {   /* c10::Error too */
        put_err(err, err_size, std::string(what) + ": " + exception_line(e));
        return lib_status;
    } catch (...) {
        put_err(err, err_size, std::string(what) + ": unknown C++ exception");
        return STSL_ERR_INTERNAL;
    }
}

}  // namespace stsl_shim_detail

#endif
