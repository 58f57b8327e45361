/*
 * cuda_graphs.cpp -- CUDA graphs around a module's repeated calls (STSL_CUDA_GRAPHS=1; shim.h).
 *
 * A solver calls the network with one method on one input shape at every step.  On a GPU at batch
 * 1 a call is hundreds of short kernels, and the host's work to launch them (TorchScript's
 * interpreter, the dispatcher, autograd) is a share of the call that eager PyTorch pays too (the
 * first H200 run: the ADM-256 stand-in's VJP 26 ms in the library, 23 ms eager).  A CUDA graph
 * records the kernels of one call once and replays them with one launch.
 *
 * Per module and per (method, input shape, with t, forward alone or forward kept for a VJP): the
 * first kEagerCalls calls run as always (TorchScript's profiling executor optimises its graph on
 * them); the next one is captured -- warm-up runs on a side stream, the capture of the forward and
 * of the backward in the forward's memory pool (what torch.cuda.make_graphed_callables does), one
 * replay compared with the warm-up's result -- and served by that replay; every later call copies
 * its input into the graph's static input, replays, and copies the output out.  A key whose
 * capture fails (a model that waits on the host, an op CUDA cannot capture, out of memory) or
 * whose replay does not match the warm-up runs as before for the module's life, and the first
 * reason is kept for the report (stsl_shim_cuda_graphs_report); after kMaxFailures failed
 * captures (a model that cannot be captured fails on every key) nothing more is tried.  Each
 * captured key holds its activations for the module's life: at most kMaxGraphs keys per module
 * are captured.
 *
 * Built only where the Makefile found CUDA's runtime headers and libtorch is 2.x
 * (STSL_SHIM_CUDA_GRAPHS); elsewhere the switch is refused on a CUDA module.  Only c10's and
 * ATen's exported functions are called (no CUDA runtime symbol in this object: the static links
 * need no libcudart of their own).
 */
#include "shim_internal.h"

#include <torch/version.h>

#include <cstdlib>
#include <cstring>

#if defined(STSL_SHIM_CUDA_GRAPHS) && STSL_SHIM_CUDA_GRAPHS && TORCH_VERSION_MAJOR >= 2
#define HAVE_CUDA_GRAPHS 1
#include <ATen/autocast_mode.h>
#include <ATen/cuda/CUDAGraph.h>
#include <c10/core/DeviceGuard.h>
#include <c10/core/StreamGuard.h>
#include <c10/cuda/CUDAFunctions.h>
#include <c10/cuda/CUDAStream.h>
#include <torch/torch.h>

#include <map>
#include <memory>
#include <mutex>
#else
#define HAVE_CUDA_GRAPHS 0
#endif

namespace stsl_shim_detail {

bool cuda_graphs_setting()
{
    const char *v = std::getenv("STSL_CUDA_GRAPHS");
    if (v == nullptr || std::strcmp(v, "0") == 0) return false;
    if (std::strcmp(v, "1") == 0) return true;
    throw ShimError{STSL_ERR_INVALID_ARG,
                    std::string("STSL_CUDA_GRAPHS is '") + v + "': expected 0 or 1 (unset: 0)"};
}

#if HAVE_CUDA_GRAPHS

namespace {
constexpr int kEagerCalls = 2;   /* calls of a key before its capture */
constexpr int kWarmups = 2;      /* runs on the side stream before the capture */
constexpr int kMaxGraphs = 8;    /* captured keys per module */
constexpr int kMaxFailures = 2;  /* failed captures after which a module captures nothing more */
}  // namespace

struct CudaGraphEntry {
    enum State { COUNTING, READY, UNCAPTURED } state = COUNTING;
    int calls = 0;
    bool busy = false;   /* forward replayed, its backward not yet (forward-kept keys) */
    /* the graphs before the tensors: the tensors (blocks of the graphs' pool) go first */
    std::unique_ptr<at::cuda::CUDAGraph> fwd, bwd;
    at::Tensor x, t, v;   /* static inputs: the input, the timesteps, the VJP's cotangent */
    at::Tensor out, grad; /* static outputs, in the graphs' pool */
};

struct CudaGraphs {
    explicit CudaGraphs(c10::Device d, bool reduced) : device(d), reduced_precision(reduced) {}
    c10::Device device;
    bool reduced_precision;
    std::mutex mu;
    std::map<std::string, std::shared_ptr<CudaGraphEntry>> entries;
    int captured = 0, uncaptured = 0;
    long replays = 0, eager_calls = 0;
    std::string first_failure;
};

std::shared_ptr<CudaGraphs> cuda_graphs_new(c10::Device device, bool reduced_precision)
{
    if (!device.is_cuda()) return nullptr;
    return std::make_shared<CudaGraphs>(device, reduced_precision);
}

static std::string graph_key(const std::string &method, c10::IntArrayRef shape, bool with_t, bool grad)
{
    std::string k = method + (grad ? "|vjp|" : "|fwd|") + (with_t ? "t|" : "-|");
    for (int64_t d : shape) k += std::to_string(d) + ",";
    return k;
}

/* End a capture that an exception interrupted (the stream would stay in capture mode); the error
 * that ending it reports, if any, is libtorch's to clear and ours to ignore. */
static void end_broken_capture(std::unique_ptr<at::cuda::CUDAGraph> &g)
{
    try {
        g->capture_end();
    } catch (...) {
    }
    g.reset();
}

static void check_replay(const char *what, const at::Tensor &got, const at::Tensor &want, double tol)
{
    at::Tensor w = want.to(at::kFloat);
    const double scale = 1.0 + w.abs().max().item<double>();
    const double diff = (got.to(at::kFloat) - w).abs().max().item<double>();
    if (!(diff <= tol * scale))
        throw std::runtime_error(std::string("the replayed ") + what + " differs from the uncaptured one by " +
                                 std::to_string(diff) + " (max |value| " + std::to_string(scale - 1) + ")");
}

/* autocast's cache of cast weights off for the scope (PyTorch's rule for CUDA graphs, which asks
 * torch.autocast(cache_enabled=False) around graphed code: a cast cached during a capture lives in
 * the graph's pool, and the cache frees it when the autocast scope ends) */
class AutocastCacheOff {
  public:
    AutocastCacheOff() : was_(at::autocast::is_autocast_cache_enabled()) { at::autocast::set_autocast_cache_enabled(false); }
    ~AutocastCacheOff() { at::autocast::set_autocast_cache_enabled(was_); }
    AutocastCacheOff(const AutocastCacheOff &) = delete;
    AutocastCacheOff &operator=(const AutocastCacheOff &) = delete;

  private:
    bool was_;
};

/* Warm up, capture and verify one key on `x_host`/`t_host`; leaves e.out (and e.grad) holding the
 * call's result.  Throws what went wrong. */
static void capture(CudaGraphs &gs, CudaGraphEntry &e, const at::Tensor &x_host, const at::Tensor &t_host,
                    const GraphCalls &calls, bool grad)
{
    c10::DeviceGuard device_guard(gs.device);
    AutocastCacheOff no_cast_cache;   /* the warm-up runs the code the capture records */
    c10::cuda::device_synchronize();   /* the caller's stream's earlier work */
    c10::cuda::CUDAStream side = c10::cuda::getStreamFromPool(false, gs.device.index());
    c10::StreamGuard stream_guard(side.unwrap());
    {
        at::NoGradGuard no_grad;
        e.x = x_host.to(gs.device, /*non_blocking=*/false, /*copy=*/true);
        if (t_host.defined()) e.t = t_host.to(gs.device, false, true);
    }
    if (grad) e.x.requires_grad_(true);
    at::Tensor ref_out, ref_grad;
    for (int i = 0; i < kWarmups; ++i) {   /* on the side stream: its cuBLAS/cuDNN workspaces */
        at::Tensor o = calls.forward(e.x, e.t);
        if (grad) {
            if (!e.v.defined()) {
                at::NoGradGuard no_grad;
                e.v = at::ones_like(o);
            }
            ref_grad = calls.backward(o, e.x, e.v);
            if (!ref_grad.defined()) throw std::runtime_error("the output does not depend on the input");
        }
        ref_out = o.detach();
    }
    c10::cuda::device_synchronize();

    e.fwd = std::make_unique<at::cuda::CUDAGraph>();
    e.fwd->capture_begin();
    try {
        e.out = calls.forward(e.x, e.t);
        e.fwd->capture_end();
    } catch (...) {
        end_broken_capture(e.fwd);
        throw;
    }
    if (grad) {
        e.bwd = std::make_unique<at::cuda::CUDAGraph>();
        e.bwd->capture_begin(e.fwd->pool());   /* reads the forward's saved activations */
        try {
            e.grad = calls.backward(e.out, e.x, e.v);
            e.bwd->capture_end();
        } catch (...) {
            end_broken_capture(e.bwd);
            throw;
        }
        e.out = e.out.detach();
    }
    e.fwd->replay();
    if (grad) e.bwd->replay();
    c10::cuda::device_synchronize();
    const double tol = gs.reduced_precision ? 1e-2 : 1e-4;
    check_replay("output", e.out, ref_out, tol);
    if (grad) check_replay("VJP", e.grad, ref_grad, tol);
}

at::Tensor cuda_graph_forward(const std::shared_ptr<CudaGraphs> &gsp, const std::string &method,
                              const at::Tensor &x_host, const at::Tensor &t_host, const GraphCalls &calls,
                              bool grad, CudaGraphLease *lease)
{
    CudaGraphs &gs = *gsp;
    std::lock_guard<std::mutex> lock(gs.mu);
    std::shared_ptr<CudaGraphEntry> &slot = gs.entries[graph_key(method, x_host.sizes(), t_host.defined(), grad)];
    if (!slot) slot = std::make_shared<CudaGraphEntry>();
    CudaGraphEntry &e = *slot;
    if (e.state == CudaGraphEntry::UNCAPTURED || e.busy) {
        ++gs.eager_calls;
        return at::Tensor();
    }
    if (e.state == CudaGraphEntry::COUNTING) {
        if (++e.calls <= kEagerCalls) {
            ++gs.eager_calls;
            return at::Tensor();
        }
        if (gs.captured >= kMaxGraphs || gs.uncaptured >= kMaxFailures) {
            e.state = CudaGraphEntry::UNCAPTURED;
            ++gs.eager_calls;
            return at::Tensor();
        }
        try {
            capture(gs, e, x_host, t_host, calls, grad);
        } catch (const std::exception &ex) {
            const std::string why = method + " " + (grad ? "with its VJP" : "forward") + " on " +
                                    c10::str(x_host.sizes()) + ": " + exception_line(ex);
            e = CudaGraphEntry();
            e.state = CudaGraphEntry::UNCAPTURED;
            ++gs.uncaptured;
            ++gs.eager_calls;
            if (gs.first_failure.empty()) gs.first_failure = why;
            return at::Tensor();
        }
        e.state = CudaGraphEntry::READY;
        ++gs.captured;
    } else {
        at::NoGradGuard no_grad;
        e.x.detach().copy_(x_host);
        if (e.t.defined()) e.t.copy_(t_host);
        e.fwd->replay();
    }
    ++gs.replays;
    if (grad) {
        e.busy = true;
        lease->graphs = gsp;
        lease->entry = slot;
    }
    return e.out;
}

at::Tensor cuda_graph_backward(CudaGraphLease &lease, const at::Tensor &v_host)
{
    std::lock_guard<std::mutex> lock(lease.graphs->mu);
    CudaGraphEntry &e = *lease.entry;
    {
        at::NoGradGuard no_grad;
        e.v.copy_(v_host);
    }
    e.bwd->replay();
    ++lease.graphs->replays;
    return e.grad;
}

void cuda_graph_release(CudaGraphLease &lease)
{
    if (!lease.entry) return;
    {
        std::lock_guard<std::mutex> lock(lease.graphs->mu);
        lease.entry->busy = false;
    }
    lease.entry.reset();
    lease.graphs.reset();
}

std::string cuda_graphs_report(const std::shared_ptr<CudaGraphs> &gsp)
{
    if (!gsp) return std::string();
    std::lock_guard<std::mutex> lock(gsp->mu);
    std::string r = std::to_string(gsp->captured) + " captured, " + std::to_string(gsp->replays) +
                    " replays, " + std::to_string(gsp->eager_calls) + " calls uncaptured, " +
                    std::to_string(gsp->uncaptured) + " capture(s) failed";
    if (!gsp->first_failure.empty()) r += " (first: " + gsp->first_failure + ")";
    return r;
}

#else   /* !HAVE_CUDA_GRAPHS */

struct CudaGraphs {};
struct CudaGraphEntry {};

std::shared_ptr<CudaGraphs> cuda_graphs_new(c10::Device device, bool)
{
    if (!device.is_cuda()) return nullptr;
    throw ShimError{STSL_ERR_UNSUPPORTED,
                    "STSL_CUDA_GRAPHS=1: this build of libstsl has no CUDA graphs (it needs libtorch 2 "
                    "and CUDA's runtime headers when it is built; docs/cuda.md); unset it"};
}

at::Tensor cuda_graph_forward(const std::shared_ptr<CudaGraphs> &, const std::string &, const at::Tensor &,
                              const at::Tensor &, const GraphCalls &, bool, CudaGraphLease *)
{
    return at::Tensor();
}

at::Tensor cuda_graph_backward(CudaGraphLease &, const at::Tensor &) { return at::Tensor(); }

void cuda_graph_release(CudaGraphLease &lease)
{
    lease.entry.reset();
    lease.graphs.reset();
}

std::string cuda_graphs_report(const std::shared_ptr<CudaGraphs> &) { return std::string(); }

#endif

}  // namespace stsl_shim_detail
