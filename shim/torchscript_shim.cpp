/*
 * torchscript_shim.cpp -- the libtorch side of libstsl's TorchScript backend (see shim.h).
 *
 * Thin on purpose: load a module with its stsl_meta.txt record, check method signatures, run a
 * method or its vector-Jacobian product on host float buffers.  Every extern "C" entry catches
 * c10::Error, std::exception and `...`; nothing throws across the C boundary.
 */
#include "shim.h"
#include "shim_internal.h"

#include <ATen/Context.h>
#include <ATen/Parallel.h>
#include <ATen/autocast_mode.h>
#include <torch/cuda.h>
#include <torch/csrc/autograd/autograd.h>
#include <torch/csrc/jit/passes/inliner.h>
#include <torch/csrc/jit/runtime/graph_executor.h>
#include <torch/script.h>
#include <torch/version.h>
#include <caffe2/serialize/inline_container.h>

#include <cctype>
#include <cstdlib>
#include <cstdio>
#include <cstring>
#include <fstream>
#include <memory>
#include <sstream>
#include <string>
#include <unordered_map>
#include <vector>

struct stsl_shim_module {
    torch::jit::Module module;
    std::string meta;
    std::string device_name;
    c10::Device device{c10::kCPU};
    stsl_precision precision = STSL_PRECISION_FLOAT32;
    bool frozen = false;
    bool jit_optimize = true;   /* STSL_JIT_OPTIMIZE at load (jit_optimize_setting) */
    /* STSL_CUDA_GRAPHS=1 on CUDA: the captured calls (cuda_graphs.cpp); NULL otherwise */
    std::shared_ptr<stsl_shim_detail::CudaGraphs> cuda_graphs;
};

namespace stsl_shim_detail {

void put_err(char *err, size_t err_size, const std::string &msg)
{
    if (err == nullptr || err_size == 0) return;
    size_t n = msg.size() < err_size - 1 ? msg.size() : err_size - 1;
    std::memcpy(err, msg.data(), n);
    err[n] = '\0';
}

std::string trim(const std::string &s)
{
    size_t b = s.find_first_not_of(" \t\r\n");
    if (b == std::string::npos) return std::string();
    size_t e = s.find_last_not_of(" \t\r\n");
    return s.substr(b, e - b + 1);
}

bool starts_with(const std::string &s, const char *p)
{
    return s.compare(0, std::strlen(p), p) == 0;
}

/* "RuntimeError: ...", "torch.jit.Error: ...", "ValueError: ..." */
bool is_error_line(const std::string &line)
{
    size_t colon = line.find(": ");
    if (colon == std::string::npos || colon == 0) return false;
    std::string head = line.substr(0, colon);
    for (char c : head)
        if (!(std::isalnum((unsigned char)c) || c == '_' || c == '.')) return false;
    return (head.size() >= 5 && head.compare(head.size() - 5, 5, "Error") == 0) ||
           (head.size() >= 9 && head.compare(head.size() - 9, 9, "Exception") == 0);
}

/* The first useful line of a libtorch message.  TorchScript interpreter errors look like
 *   The following operation failed in the TorchScript interpreter.
 *   Traceback of TorchScript, serialized code (most recent call last):
 *     File "code/__torch__.py", line 10, in forward
 *   ...
 *   RuntimeError: Given groups=1, weight of size [8, 1, 3, 3], expected input ... 3 channels
 * and c10::Error adds "Exception raised from ..." and a C++ backtrace: keep the line that says
 * what is wrong (the last "XxxError: ..." line when there is one, else the first line that is
 * not traceback furniture). */
std::string useful_line(const std::string &full)
{
    std::vector<std::string> lines;
    size_t pos = 0;
    while (pos <= full.size()) {
        size_t nl = full.find('\n', pos);
        if (nl == std::string::npos) nl = full.size();
        lines.push_back(full.substr(pos, nl - pos));
        pos = nl + 1;
    }
    std::string error_line, first;
    for (const std::string &raw : lines) {
        if (raw.empty() || raw[0] == ' ' || raw[0] == '\t') continue;   /* traceback body */
        std::string l = trim(raw);
        if (l.empty()) continue;
        if (starts_with(l, "Exception raised from") || starts_with(l, "frame #")) break;
        if (starts_with(l, "Traceback of TorchScript") ||
            starts_with(l, "The following operation failed in the TorchScript interpreter") ||
            starts_with(l, "The above operation failed"))
            continue;
        if (is_error_line(l)) error_line = l;
        else if (first.empty()) first = l;
    }
    std::string out = !error_line.empty() ? error_line : !first.empty() ? first : trim(full);
    size_t nl = out.find('\n');
    if (nl != std::string::npos) out.resize(nl);
    if (out.empty()) out = "unknown libtorch error";
    return out;
}

std::string exception_line(const std::exception &e)
{
    if (const auto *c10_error = dynamic_cast<const c10::Error *>(&e))
        return useful_line(c10_error->what_without_backtrace());
    return useful_line(e.what());
}

/* The device src/models chose: CUDA device `cuda_index`, or the CPU (-1).  Only what libtorch
 * alone knows is checked here: whether CUDA is there, and how many GPUs. */
c10::Device cuda_or_cpu(int cuda_index)
{
    if (cuda_index < 0) return c10::Device(c10::kCPU);
    const std::string name = "cuda:" + std::to_string(cuda_index);
    if (!torch::cuda::is_available())
        throw ShimError{STSL_ERR_BACKEND,
                        "device \"" + name + "\" requested but CUDA is not available (libtorch " +
                            "built without CUDA, or no GPU/driver present); use \"cpu\" or \"auto\""};
    long count = (long)torch::cuda::device_count();
    if (cuda_index >= count)
        throw ShimError{STSL_ERR_BACKEND, "device \"" + name + "\" requested but only " +
                                              std::to_string(count) + " CUDA device(s) present"};
    return c10::Device(c10::kCUDA, (c10::DeviceIndex)cuda_index);
}

void set_threads(int threads)
{
    if (threads > 0 && at::get_num_threads() != threads) at::set_num_threads(threads);
}

}  // namespace stsl_shim_detail

using namespace stsl_shim_detail;

/* Whether a graph (and its nested blocks) holds an op whose autograd meaning freezing would lose:
 * freezing drops aten::detach (it assumes inference), and a no_grad/enable_grad block (prim::Enter)
 * or a requires_grad_ call marks a model whose author steers autograd on purpose. */
static bool steers_autograd(const torch::jit::Block *block)
{
    for (const torch::jit::Node *node : block->nodes()) {
        const c10::Symbol kind = node->kind();
        if (kind == c10::aten::detach || kind == c10::aten::detach_ || kind == c10::prim::Enter ||
            kind == c10::aten::requires_grad_)
            return true;
        for (const torch::jit::Block *sub : node->blocks())
            if (steers_autograd(sub)) return true;
    }
    return false;
}

/* Device portability.  A trace records the device of every tensor the model makes itself as a
 * constant (guided-diffusion's timestep table, traced on the CPU, is `aten::arange(...,
 * device="cpu")`), and such a file fails on any other device with "Expected all tensors to be on
 * the same device".  Every Device constant of a method the library calls becomes the device of
 * that method's first tensor input (prim::device), which is what the model meant: the library
 * puts x and t on the module's device.  Run on the methods inlined in place, before freezing
 * (which would fold a constant-device arange into a tensor on that device).  Weights and tensor
 * constants need nothing: torch::jit::load maps them.  On the CPU the result is the same
 * computation; the pass runs there too, so that a file pinned to another device runs. */
static void collect_device_constants(torch::jit::Block *block, std::vector<torch::jit::Node *> &out)
{
    for (torch::jit::Node *node : block->nodes()) {
        if (node->kind() == c10::prim::Constant && node->output()->type()->kind() == c10::TypeKind::DeviceObjType)
            out.push_back(node);
        for (torch::jit::Block *sub : node->blocks()) collect_device_constants(sub, out);
    }
}

static void make_device_portable(torch::jit::Module &module)
{
    for (const torch::jit::Method &method : module.get_methods()) {
        std::shared_ptr<torch::jit::Graph> graph = method.graph();
        torch::jit::Inline(*graph);
        std::vector<torch::jit::Node *> pins;
        collect_device_constants(graph->block(), pins);
        torch::jit::Value *input = nullptr;
        for (torch::jit::Value *v : graph->inputs())
            if (v->type()->kind() == c10::TypeKind::TensorType) {
                input = v;
                break;
            }
        if (pins.empty() || input == nullptr) continue;
        torch::jit::Node *dev = graph->create(c10::prim::device, {input});
        dev->output()->setType(c10::DeviceObjType::get());
        dev->insertBefore(graph->block()->nodes().front());
        for (torch::jit::Node *pin : pins) {
            pin->output()->replaceAllUsesWith(dev->output());
            pin->destroy();
        }
    }
}

/* Reduced precision is autocast (mixed precision), not a cast of the module: a graph the
 * library did not write makes tensors of its own (timestep tables, masks) in float32, and a
 * module converted to float16 then fails with "mat1 and mat2 must have the same dtype".  Under
 * autocast the weights stay float32, matrix products and convolutions run in the reduced type,
 * reductions and normalisations in float32, and mixed inputs are promoted: libtorch's own lists
 * (those of torch.autocast).  Only the forward pass runs under it; the backward follows the
 * forward's types, as torch.autocast prescribes. */
static c10::ScalarType reduced_type(stsl_precision p)
{
    return p == STSL_PRECISION_BFLOAT16 ? at::kBFloat16 : at::kHalf;
}

static const char *precision_name(stsl_precision p)
{
    return p == STSL_PRECISION_FLOAT16 ? "float16" : p == STSL_PRECISION_BFLOAT16 ? "bfloat16" : "float32";
}

/* libtorch 2.4 replaced the per-device functions by ones that take the device type. */
#if TORCH_VERSION_MAJOR > 2 || (TORCH_VERSION_MAJOR == 2 && TORCH_VERSION_MINOR >= 4)
static bool autocast_enabled(c10::DeviceType t) { return at::autocast::is_autocast_enabled(t); }
static c10::ScalarType autocast_dtype(c10::DeviceType t) { return at::autocast::get_autocast_dtype(t); }
static void set_autocast(c10::DeviceType t, bool on, c10::ScalarType type)
{
    at::autocast::set_autocast_dtype(t, type);
    at::autocast::set_autocast_enabled(t, on);
}
#else
static bool autocast_enabled(c10::DeviceType t)
{
    return t == c10::kCPU ? at::autocast::is_cpu_enabled() : at::autocast::is_enabled();
}
static c10::ScalarType autocast_dtype(c10::DeviceType t)
{
    return t == c10::kCPU ? at::autocast::get_autocast_cpu_dtype() : at::autocast::get_autocast_gpu_dtype();
}
static void set_autocast(c10::DeviceType t, bool on, c10::ScalarType type)
{
    if (t == c10::kCPU) {
        at::autocast::set_autocast_cpu_dtype(type);
        at::autocast::set_cpu_enabled(on);
    } else {
        at::autocast::set_autocast_gpu_dtype(type);
        at::autocast::set_enabled(on);
    }
}
#endif

/* Autocast on the module's device type for the scope of one call (a no-op in float32); the
 * thread's previous state is restored, so a caller's own torch.autocast is left alone. */
class AutocastScope {
  public:
    AutocastScope(c10::Device device, stsl_precision precision)
        : on_(precision != STSL_PRECISION_FLOAT32), type_(device.type())
    {
        if (!on_) return;
        was_on_ = autocast_enabled(type_);
        was_type_ = autocast_dtype(type_);
        set_autocast(type_, true, reduced_type(precision));
        at::autocast::increment_nesting();
    }
    ~AutocastScope()
    {
        if (!on_) return;
        if (at::autocast::decrement_nesting() == 0) at::autocast::clear_cache();
        set_autocast(type_, was_on_, was_type_);
    }
    AutocastScope(const AutocastScope &) = delete;
    AutocastScope &operator=(const AutocastScope &) = delete;

  private:
    bool on_;
    c10::DeviceType type_;
    bool was_on_ = false;
    c10::ScalarType was_type_ = at::kFloat;
};

/* Whether `device` runs `precision`: one small matrix product and convolution under autocast
 * (libtorch 1.13's CPU autocast refuses float16; a GPU without bfloat16 fails here).  "" when
 * it does, else libtorch's reason. */
static std::string precision_unsupported(c10::Device device, stsl_precision precision)
{
    if (precision == STSL_PRECISION_FLOAT32) return std::string();
    try {
        c10::InferenceMode inference;
        AutocastScope scope(device, precision);
        at::Tensor a = torch::ones({2, 2}, torch::TensorOptions().device(device));
        at::Tensor r = at::matmul(a, a);
        at::Tensor c = at::conv2d(torch::ones({1, 1, 4, 4}, torch::TensorOptions().device(device)),
                                  torch::ones({1, 1, 3, 3}, torch::TensorOptions().device(device)));
        if (r.scalar_type() != reduced_type(precision) || c.scalar_type() != reduced_type(precision))
            return std::string("autocast did not reduce a matrix product's precision");
        return std::string();
    } catch (const std::exception &e) {
        return exception_line(e);
    }
}

/* torch.jit.freeze of the loaded module, every method kept: the weights become constants of the
 * graphs, which takes about 9% off a forward + VJP of the shipped pixel prior (1 thread, batch 1
 * and 8) with the same bits (optimize_numerics off: no conv/batch-norm folding).  Done after the
 * device and dtype moves, which do not reach constants.  A module whose methods steer autograd
 * (above), or that libtorch cannot freeze, is used as loaded: its VJPs must stay what they were. */
static torch::jit::Module frozen_or_same(torch::jit::Module module, bool *frozen)
{
    *frozen = false;
    try {
        std::vector<std::string> keep;
        for (const torch::jit::Method &method : module.get_methods()) {
            std::shared_ptr<torch::jit::Graph> graph = method.graph()->copy();
            torch::jit::Inline(*graph);
            if (steers_autograd(graph->block())) return module;
            keep.push_back(method.name());
        }
        torch::jit::Module out = torch::jit::freeze(module, keep, /*optimize_numerics=*/false);
        *frozen = true;
        return out;
    } catch (const std::exception &) {
        return module;
    }
}

/* A missing file is STSL_ERR_IO, one that is not a zip archive STSL_ERR_FORMAT (as a load says). */
static void check_archive(const char *path)
{
    std::ifstream f(path, std::ios::binary);
    if (!f) throw ShimError{STSL_ERR_IO, std::string("cannot open '") + path + "'"};
    char magic[4] = {0, 0, 0, 0};
    f.read(magic, 4);
    if (f.gcount() != 4 || std::memcmp(magic, "PK\x03\x04", 4) != 0)
        throw ShimError{STSL_ERR_FORMAT,
                        std::string("'") + path +
                            "' is not a TorchScript file (not a zip archive written by torch.jit.save)"};
}

static std::string no_record(const char *path)
{
    return std::string("'") + path +
           "' has no stsl_meta.txt metadata record (write it with "
           "scripts/export_torchscript.py; docs/models.md)";
}

/* STSL_JIT_OPTIMIZE, read at load: "1" (default) lets TorchScript's profiling executor profile
 * the first calls of each method and then optimise the graph (fusion, specialisation: compiled
 * kernels on CUDA); "0" runs the unoptimised graph from the first call on.  The trade: the first
 * calls of a process against the speed of every later one (docs/cuda.md, start-up).  The same
 * arithmetic either way, up to the fused kernels' float rounding.  Applied per call with libtorch's
 * thread-local guard, so the caller's own TorchScript code is not affected. */
static bool jit_optimize_setting()
{
    const char *v = std::getenv("STSL_JIT_OPTIMIZE");
    if (v == nullptr || std::strcmp(v, "1") == 0) return true;
    if (std::strcmp(v, "0") == 0) return false;
    throw ShimError{STSL_ERR_INVALID_ARG,
                    std::string("STSL_JIT_OPTIMIZE is '") + v + "': expected 0 or 1 (unset: 1)"};
}

/* STSL_CUDNN_BENCHMARK, read at load: "1" turns libtorch's cuDNN benchmark mode on for a module
 * loaded onto CUDA (the first call of each new convolution shape times cuDNN's algorithms and
 * keeps the fastest: slower first calls, possibly faster later ones; docs/cuda.md, start-up),
 * "0" turns it off, unset leaves the process's setting (libtorch's default: off).  libtorch has
 * one such switch per process: it applies to every convolution of the process from then on,
 * the device operators' and the caller's own included.  -1 unset, else 0 or 1; checked on
 * every load, so that a mistyped value fails on the CPU too. */
static int cudnn_benchmark_setting()
{
    const char *v = std::getenv("STSL_CUDNN_BENCHMARK");
    if (v == nullptr) return -1;
    if (std::strcmp(v, "0") == 0 || std::strcmp(v, "1") == 0) return v[0] - '0';
    throw ShimError{STSL_ERR_INVALID_ARG, std::string("STSL_CUDNN_BENCHMARK is '") + v +
                                              "': expected 0 or 1 (unset: libtorch's setting)"};
}

extern "C" stsl_status stsl_shim_load(const char *path, int cuda_index,
                                      stsl_precision precision, int float32_fallback,
                                      stsl_shim_module **out, char *err, size_t err_size)
{
    if (out) *out = nullptr;
    if (path == nullptr || out == nullptr) {
        put_err(err, err_size, "stsl_shim_load: NULL argument");
        return STSL_ERR_INVALID_ARG;
    }
    if (precision != STSL_PRECISION_FLOAT32 && precision != STSL_PRECISION_FLOAT16 &&
        precision != STSL_PRECISION_BFLOAT16) {
        put_err(err, err_size, "stsl_shim_load: unknown precision");
        return STSL_ERR_INVALID_ARG;
    }
    return guarded("not a TorchScript file", STSL_ERR_FORMAT, err, err_size, [&]() {
        const bool jit_optimize = jit_optimize_setting();
        const int cudnn_benchmark = cudnn_benchmark_setting();
        const bool cuda_graphs = cuda_graphs_setting();
        c10::Device dev = cuda_or_cpu(cuda_index);
        if (dev.is_cuda() && cudnn_benchmark >= 0)
            at::globalContext().setBenchmarkCuDNN(cudnn_benchmark == 1);
        std::string why = precision_unsupported(dev, precision);
        if (!why.empty()) {
            if (float32_fallback)
                precision = STSL_PRECISION_FLOAT32;
            else
                throw ShimError{STSL_ERR_BACKEND, std::string(precision_name(precision)) +
                                                      " is not supported on " + dev.str() +
                                                      " by this libtorch (" TORCH_VERSION "): " +
                                                      why + "; use float32" +
                                                      (precision == STSL_PRECISION_FLOAT16 && dev.is_cpu()
                                                           ? " or bfloat16"
                                                           : "")};
        }
#if TORCH_VERSION_MAJOR < 2
        /* 1.x's TorchScript interpreter runs autocast only through the optimiser's graph pass:
         * unoptimised, a reduced-precision graph mixes types ("expected scalar type BFloat16 but
         * found Float", measured with 1.13 on the CPU; 2.x runs it) */
        if (!jit_optimize && precision != STSL_PRECISION_FLOAT32)
            throw ShimError{STSL_ERR_BACKEND,
                            std::string("STSL_JIT_OPTIMIZE=0 with ") + precision_name(precision) +
                                " needs libtorch 2 or later (this one is " TORCH_VERSION
                                "): its interpreter applies autocast only to optimised graphs; "
                                "unset STSL_JIT_OPTIMIZE or use float32"};
#endif
        check_archive(path);
        std::unordered_map<std::string, std::string> extra{{STSL_SHIM_META_NAME, std::string()}};
        torch::jit::Module module;
        try {
            module = torch::jit::load(path, dev, extra);
        } catch (const c10::Error &e) {
            std::string why = useful_line(e.what_without_backtrace());
            std::string hint;
            if (why.find("constants.pkl") != std::string::npos || why.find("code/") != std::string::npos)
                hint = " (a torch.save checkpoint? export with torch.jit.save, see scripts/export_torchscript.py)";
            throw ShimError{STSL_ERR_FORMAT, std::string("'") + path +
                                                 "' is not a loadable TorchScript file: " + why + hint};
        }
        const std::string &meta = extra[STSL_SHIM_META_NAME];
        if (meta.empty()) throw ShimError{STSL_ERR_MODEL, no_record(path)};
        if (meta.size() > STSL_SHIM_META_MAX)
            throw ShimError{STSL_ERR_MODEL, "stsl_meta.txt record is " + std::to_string(meta.size()) +
                                                " bytes, over the 65536-byte limit"};
        module.eval();
        /* The library only ever differentiates with respect to inputs: freezing the parameters
         * keeps autograd from recording weight-gradient paths. */
        for (at::Tensor p : module.parameters()) p.requires_grad_(false);
        make_device_portable(module);
        bool frozen = false;
        module = frozen_or_same(std::move(module), &frozen);
        std::shared_ptr<CudaGraphs> graphs;
        if (cuda_graphs) graphs = cuda_graphs_new(dev, precision != STSL_PRECISION_FLOAT32);

        auto *m = new stsl_shim_module();
        m->module = std::move(module);
        m->meta = meta;
        m->device = dev;
        m->device_name = dev.str();
        m->precision = precision;
        m->frozen = frozen;
        m->jit_optimize = jit_optimize;
        m->cuda_graphs = std::move(graphs);
        *out = m;
        return STSL_OK;
    });
}

extern "C" stsl_status stsl_shim_read_meta(const char *path, char *buf, size_t cap, size_t *len,
                                           char *err, size_t err_size)
{
    if (len) *len = 0;
    if (path == nullptr || buf == nullptr || len == nullptr || cap < STSL_SHIM_META_MAX) {
        put_err(err, err_size, "stsl_shim_read_meta: bad argument");
        return STSL_ERR_INVALID_ARG;
    }
    return guarded("not a TorchScript file", STSL_ERR_FORMAT, err, err_size, [&]() {
        check_archive(path);
        caffe2::serialize::PyTorchStreamReader reader{std::string(path)};
        const std::string name = std::string("extra/") + STSL_SHIM_META_NAME;
        if (!reader.hasRecord(name)) throw ShimError{STSL_ERR_MODEL, no_record(path)};
        auto record = reader.getRecord(name);
        const size_t n = std::get<1>(record);
        if (n == 0) throw ShimError{STSL_ERR_MODEL, no_record(path)};
        if (n > STSL_SHIM_META_MAX)
            throw ShimError{STSL_ERR_MODEL, "stsl_meta.txt record is " + std::to_string(n) +
                                                " bytes, over the 65536-byte limit"};
        std::memcpy(buf, std::get<0>(record).get(), n);
        *len = n;
        return STSL_OK;
    });
}

extern "C" void stsl_shim_free(stsl_shim_module *m)
{
    try {
        delete m;
    } catch (...) {
    }
}

extern "C" const char *stsl_shim_meta(const stsl_shim_module *m, size_t *len)
{
    if (m == nullptr) {
        if (len) *len = 0;
        return "";
    }
    if (len) *len = m->meta.size();
    return m->meta.data();
}

extern "C" const char *stsl_shim_device(const stsl_shim_module *m)
{
    return m ? m->device_name.c_str() : "";
}

extern "C" stsl_precision stsl_shim_precision(const stsl_shim_module *m)
{
    return m ? m->precision : STSL_PRECISION_FLOAT32;
}

extern "C" const char *stsl_shim_precision_name(stsl_precision precision)
{
    return precision_name(precision);
}

extern "C" int stsl_shim_is_frozen(const stsl_shim_module *m)
{
    return m && m->frozen ? 1 : 0;
}

extern "C" size_t stsl_shim_cuda_graphs_report(const stsl_shim_module *m, char *buf, size_t cap)
{
    if (buf && cap) buf[0] = '\0';
    if (m == nullptr || !m->cuda_graphs) return 0;
    try {
        std::string r = cuda_graphs_report(m->cuda_graphs);
        put_err(buf, cap, r);
        return r.size();
    } catch (...) {
        return 0;
    }
}

extern "C" int stsl_shim_cuda_available(void)
{
    try {
        return torch::cuda::is_available() ? 1 : 0;
    } catch (...) {
        return 0;
    }
}

extern "C" stsl_status stsl_shim_check_method(stsl_shim_module *m, const char *method,
                                              int n_inputs, char *err, size_t err_size)
{
    if (m == nullptr || method == nullptr) {
        put_err(err, err_size, "stsl_shim_check_method: NULL argument");
        return STSL_ERR_INVALID_ARG;
    }
    return guarded("cannot inspect the module", STSL_ERR_MODEL, err, err_size, [&]() {
        auto found = m->module.find_method(method);
        if (!found)
            throw ShimError{STSL_ERR_MODEL,
                            std::string("the module has no method '") + method +
                                "' (export it with @torch.jit.export; docs/models.md)"};
        const c10::FunctionSchema &schema = found->function().getSchema();
        const auto &args = schema.arguments();
        std::ostringstream sig;
        sig << schema;
        int required = 0;
        bool bad_type = false;
        for (size_t i = 1; i < args.size(); ++i) {   /* args[0] is self */
            if (args[i].default_value().has_value()) continue;
            ++required;
            if (!args[i].type()->isSubtypeOf(*c10::TensorType::get())) bad_type = true;
        }
        const char *want = n_inputs == 2 ? "(x: Tensor, t: Tensor) -> Tensor" : "(x: Tensor) -> Tensor";
        if (required != n_inputs || bad_type)
            throw ShimError{STSL_ERR_MODEL, std::string("method '") + method + "' has signature " +
                                                sig.str() + "; the contract needs " + method + want};
        const auto &rets = schema.returns();
        if (rets.size() != 1 || !rets[0].type()->isSubtypeOf(*c10::TensorType::get()))
            throw ShimError{STSL_ERR_MODEL, std::string("method '") + method + "' has signature " +
                                                sig.str() + "; it must return one Tensor"};
        return STSL_OK;
    });
}

static std::vector<int64_t> dims(const int64_t s[4])
{
    return std::vector<int64_t>(s, s + 4);
}

static std::string shape_str(c10::IntArrayRef s)
{
    std::string r = "[";
    for (size_t i = 0; i < s.size(); ++i) r += (i ? ", " : "") + std::to_string(s[i]);
    return r + "]";
}

/* The caller's host buffer as a CPU tensor (no copy). */
static at::Tensor host_tensor(const float *p, c10::IntArrayRef shape)
{
    return torch::from_blob(const_cast<float *>(p), shape, torch::TensorOptions().dtype(torch::kFloat32));
}

/* Host buffer -> float32 tensor on the module's device (autocast reduces what it reduces); on
 * the CPU no copy is made. */
static at::Tensor to_input(const stsl_shim_module *m, const float *p, c10::IntArrayRef shape)
{
    at::Tensor t = host_tensor(p, shape);
    if (m->device.is_cpu()) return t;
    return t.to(m->device);
}

/* t: the timesteps on the module's device, undefined for a method of x alone. */
static at::Tensor run_method(stsl_shim_module *m, const char *method, const at::Tensor &x,
                             const at::Tensor &t)
{
    std::vector<c10::IValue> inputs;
    inputs.emplace_back(x);
    if (t.defined()) inputs.emplace_back(t);
    torch::jit::GraphOptimizerEnabledGuard optimize(m->jit_optimize);
    auto found = m->module.find_method(method);
    if (!found) throw ShimError{STSL_ERR_MODEL, std::string("the module has no method '") + method + "'"};
    c10::IValue r = (*found)(std::move(inputs));
    if (!r.isTensor())
        throw ShimError{STSL_ERR_MODEL, std::string("method '") + method + "' returned " +
                                            r.tagKind() + ", expected a Tensor"};
    return r.toTensor();
}

/* A call without autograd.  InferenceMode, not just NoGradGuard: no version counters or view
 * tracking either.  Not under autocast: the graph executor keeps the reduced-precision copies of
 * frozen weights it casts in the first run, and copies made in InferenceMode cannot be saved for
 * a later VJP ("Inference tensors cannot be saved for backward"). */
static at::Tensor inference_call(stsl_shim_module *m, const char *method, const at::Tensor &x,
                                 const at::Tensor &t)
{
    c10::InferenceMode inference(m->precision == STSL_PRECISION_FLOAT32);
    torch::NoGradGuard no_grad;
    AutocastScope autocast(m->device, m->precision);
    return run_method(m, method, x, t);
}

/* A call recorded for a VJP (autocast around the forward only, as torch.autocast prescribes). */
static at::Tensor recorded_call(stsl_shim_module *m, const char *method, const at::Tensor &x,
                                const at::Tensor &t)
{
    torch::AutoGradMode grad_mode(true);
    AutocastScope autocast(m->device, m->precision);
    return run_method(m, method, x, t);
}

/* The VJP of a recorded call: undefined when out does not depend on x.  The backward graphs run
 * under the module's optimiser setting. */
static at::Tensor vjp_of(bool jit_optimize, const at::Tensor &out, const at::Tensor &x, const at::Tensor &v)
{
    torch::jit::GraphOptimizerEnabledGuard optimize(jit_optimize);
    auto gr = torch::autograd::grad({out}, {x}, {v}, /*retain_graph=*/false,
                                    /*create_graph=*/false, /*allow_unused=*/true);
    return gr.empty() ? at::Tensor() : gr[0];
}

static void check_out(const char *method, const at::Tensor &r, const int64_t out_shape[4])
{
    if (r.sizes() != c10::IntArrayRef(out_shape, 4))
        throw ShimError{STSL_ERR_MODEL, std::string("method '") + method + "' returned shape " +
                                            shape_str(r.sizes()) + ", expected " +
                                            shape_str(c10::IntArrayRef(out_shape, 4))};
    if (!r.is_floating_point())
        throw ShimError{STSL_ERR_MODEL, std::string("method '") + method +
                                            "' returned a non-floating-point tensor"};
}

static void copy_out(float *dst, const at::Tensor &src, const int64_t shape[4])
{
    at::Tensor d = torch::from_blob(dst, c10::IntArrayRef(shape, 4),
                                    torch::TensorOptions().dtype(torch::kFloat32));
    d.copy_(src);   /* one copy: device -> host and half -> float in the same step */
}

extern "C" stsl_status stsl_shim_forward(stsl_shim_module *m, const char *method,
                                         const float *x, const int64_t x_shape[4],
                                         const float *t, float *out, const int64_t out_shape[4],
                                         int threads, char *err, size_t err_size)
{
    if (!m || !method || !x || !x_shape || !out || !out_shape) {
        put_err(err, err_size, "stsl_shim_forward: NULL argument");
        return STSL_ERR_INVALID_ARG;
    }
    std::string what = std::string("model ") + method + " failed";
    return guarded(what.c_str(), STSL_ERR_MODEL, err, err_size, [&]() {
        set_threads(threads);
        at::Tensor r;
        if (m->cuda_graphs)
            r = cuda_graph_forward(m->cuda_graphs, method, host_tensor(x, dims(x_shape)),
                                   t ? host_tensor(t, {x_shape[0]}) : at::Tensor(),
                                   GraphCalls{[&](const at::Tensor &xd, const at::Tensor &td) {
                                                  return inference_call(m, method, xd, td);
                                              },
                                              nullptr},
                                   false, nullptr);
        if (!r.defined())
            r = inference_call(m, method, to_input(m, x, dims(x_shape)),
                               t ? to_input(m, t, {x_shape[0]}) : at::Tensor());
        check_out(method, r, out_shape);
        copy_out(out, r, out_shape);
        return STSL_OK;
    });
}

struct stsl_shim_graph {
    ~stsl_shim_graph() { cuda_graph_release(lease); }
    at::Tensor x;     /* the leaf the VJP differentiates against (owned copy of the input) */
    at::Tensor out;   /* the method's output, still attached to its graph */
    CudaGraphLease lease;   /* instead of x and out: a replayed CUDA graph's */
    std::vector<int64_t> x_shape, out_shape;
    c10::Device device{c10::kCPU};
    bool spent = false;
    bool jit_optimize = true;   /* the module's: the backward graphs run under the same setting */
    std::string method;
};

extern "C" stsl_status stsl_shim_forward_graph(stsl_shim_module *m, const char *method,
                                               const float *x, const int64_t x_shape[4],
                                               const float *t, float *out,
                                               const int64_t out_shape[4], int threads,
                                               stsl_shim_graph **graph, char *err,
                                               size_t err_size)
{
    if (graph) *graph = nullptr;
    if (!m || !method || !x || !x_shape || !out || !out_shape || !graph) {
        put_err(err, err_size, "stsl_shim_forward_graph: NULL argument");
        return STSL_ERR_INVALID_ARG;
    }
    std::string what = std::string("model ") + method + " failed";
    return guarded(what.c_str(), STSL_ERR_MODEL, err, err_size, [&]() {
        set_threads(threads);
        torch::AutoGradMode grad_mode(true);
        auto g = std::make_unique<stsl_shim_graph>();
        g->x_shape = dims(x_shape);
        g->out_shape = dims(out_shape);
        g->device = m->device;
        g->method = method;
        g->jit_optimize = m->jit_optimize;
        if (m->cuda_graphs) {
            at::Tensor r = cuda_graph_forward(
                m->cuda_graphs, method, host_tensor(x, g->x_shape),
                t ? host_tensor(t, {x_shape[0]}) : at::Tensor(),
                GraphCalls{[&](const at::Tensor &xd, const at::Tensor &td) { return recorded_call(m, method, xd, td); },
                           [&](const at::Tensor &o, const at::Tensor &xd, const at::Tensor &v) {
                               return vjp_of(m->jit_optimize, o, xd, v);
                           }},
                true, &g->lease);
            if (r.defined()) {
                check_out(method, r, out_shape);
                copy_out(out, r, out_shape);
                *graph = g.release();
                return STSL_OK;
            }
        }
        /* a copy: on CPU to_input only wraps the caller's buffer, which the graph outlives */
        at::Tensor xt = to_input(m, x, g->x_shape);
        g->x = (xt.data_ptr() == static_cast<const void *>(x) ? xt.clone() : xt).requires_grad_(true);
        at::Tensor r = recorded_call(m, method, g->x, t ? to_input(m, t, {x_shape[0]}) : at::Tensor());
        check_out(method, r, out_shape);
        if (!r.requires_grad())
            throw ShimError{STSL_ERR_MODEL,
                            std::string("method '") + method +
                                "' is not differentiable with respect to its input (its output "
                                "does not require grad: no_grad or detach inside the module?)"};
        copy_out(out, r.detach(), out_shape);
        g->out = r;
        *graph = g.release();
        return STSL_OK;
    });
}

extern "C" stsl_status stsl_shim_graph_vjp(stsl_shim_graph *g, const float *v, float *grad,
                                           int threads, char *err, size_t err_size)
{
    if (!g || !v || !grad) {
        put_err(err, err_size, "stsl_shim_graph_vjp: NULL argument");
        return STSL_ERR_INVALID_ARG;
    }
    if (g->spent) {
        put_err(err, err_size, "stsl_shim_graph_vjp: the kept evaluation was already differentiated");
        return STSL_ERR_INVALID_ARG;
    }
    std::string what = std::string("model ") + g->method + " VJP failed";
    return guarded(what.c_str(), STSL_ERR_MODEL, err, err_size, [&]() {
        g->spent = true;
        set_threads(threads);
        if (g->lease.entry) {   /* the forward was a CUDA graph's replay: so is its backward */
            at::Tensor gr = cuda_graph_backward(g->lease, host_tensor(v, g->out_shape));
            copy_out(grad, gr, g->x_shape.data());
            cuda_graph_release(g->lease);
            return STSL_OK;
        }
        at::Tensor out = std::move(g->out), xt = std::move(g->x);   /* freed on return */
        at::Tensor vt = host_tensor(v, out.sizes()).to(g->device, out.scalar_type());
        at::Tensor gr = vjp_of(g->jit_optimize, out, xt, vt);
        if (!gr.defined()) {   /* output independent of x */
            size_t n = 1;
            for (int64_t d : g->x_shape) n *= (size_t)d;
            std::memset(grad, 0, n * sizeof(float));
        } else {
            copy_out(grad, gr, g->x_shape.data());
        }
        return STSL_OK;
    });
}

extern "C" void stsl_shim_graph_free(stsl_shim_graph *g)
{
    try {
        delete g;
    } catch (...) {
    }
}

extern "C" stsl_status stsl_shim_vjp(stsl_shim_module *m, const char *method, const float *x,
                                     const int64_t x_shape[4], const float *t, const float *v,
                                     const int64_t out_shape[4], float *out, float *grad,
                                     int threads, char *err, size_t err_size)
{
    if (!m || !method || !x || !x_shape || !v || !out_shape || !grad) {
        put_err(err, err_size, "stsl_shim_vjp: NULL argument");
        return STSL_ERR_INVALID_ARG;
    }
    std::vector<float> scratch;   /* the forward output when the caller does not want it */
    float *o = out;
    if (!o) {
        size_t n = 1;
        for (int i = 0; i < 4; ++i) n *= (size_t)out_shape[i];
        try {
            scratch.resize(n);
        } catch (...) {
            put_err(err, err_size, "stsl_shim_vjp: out of memory");
            return STSL_ERR_NOMEM;
        }
        o = scratch.data();
    }
    stsl_shim_graph *g = nullptr;
    stsl_status st = stsl_shim_forward_graph(m, method, x, x_shape, t, o, out_shape, threads, &g,
                                             err, err_size);
    if (st == STSL_OK) st = stsl_shim_graph_vjp(g, v, grad, threads, err, err_size);
    stsl_shim_graph_free(g);
    return st;
}
