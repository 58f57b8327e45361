/*
 * ops.cpp -- the measurement operators as libtorch ops (see shim.h, "Measurement operators";
 * issue 27 item 2).  Each op is built once from the tables the C code of src/operators prepared,
 * so both compute the same map: the blur pads through the same index maps and correlates with
 * the same kernel (conv2d, or FFTs where the C code uses them; the adjoint a correlation with the
 * rotated kernel and gathers through the maps' transposes), the resampling tables become two
 * small dense matrices, phase retrieval is fft2 / ifft2 with the orthonormal scaling.  No op adds
 * with atomics: a call gives the same bits every time, on a GPU too.  Every extern "C" entry
 * catches everything (stsl_shim_detail::guarded).
 */
#include "shim.h"
#include "shim_internal.h"

#include <ATen/ATen.h>
#include <c10/core/InferenceMode.h>

#include <array>
#include <memory>
#include <string>
#include <vector>

using namespace stsl_shim_detail;

namespace {

enum class Kind { Pointwise, Clip, Conv, Resample, Phase, Matrix };

at::TensorOptions floats_on(c10::Device d) { return at::TensorOptions().dtype(at::kFloat).device(d); }

/* The caller's floats (borrowed for the call) as a tensor of its own on d. */
at::Tensor copy_floats(const float *p, at::IntArrayRef shape, c10::Device d)
{
    at::Tensor t = at::from_blob(const_cast<float *>(p), shape, floats_on(c10::kCPU));
    /* one copy: clone on the CPU, a transfer (which copies) elsewhere */
    return d.is_cpu() ? t.clone() : t.to(d);
}

/* A padding map (padded index -> source index, or -1 for zero) as indices into a plane
 * extended by one zero row or column at index n. */
at::Tensor index_map(const int *map, int64_t count, int64_t n, c10::Device d)
{
    std::vector<int64_t> v((size_t)count);
    for (int64_t i = 0; i < count; i++) {
        if (map[i] < -1 || map[i] >= n)
            throw ShimError{STSL_ERR_INVALID_ARG, "padding map entry " + std::to_string(map[i]) +
                                                      " outside [-1, " + std::to_string(n) + ")"};
        v[(size_t)i] = map[i] < 0 ? n : map[i];
    }
    return at::tensor(v, at::TensorOptions().dtype(at::kLong)).to(d);
}

/* The transpose of a padding map as gathers, so that the adjoint is deterministic on a GPU
 * (index_add_ adds with atomics there, in no fixed order): row j of the result lists the padded
 * positions whose value goes back to source index i = 0..n-1, the others pointing at `count`, a
 * zero appended to the padded axis.  (m x n; m the most positions one source index receives.) */
at::Tensor inverse_map(const int *map, int64_t count, int64_t n, c10::Device d)
{
    std::vector<std::vector<int64_t>> from((size_t)n);
    size_t m = 1;
    for (int64_t p = 0; p < count; p++)
        if (map[p] >= 0) {
            from[(size_t)map[p]].push_back(p);
            if (from[(size_t)map[p]].size() > m) m = from[(size_t)map[p]].size();
        }
    std::vector<int64_t> v(m * (size_t)n, count);
    for (int64_t i = 0; i < n; i++)
        for (size_t j = 0; j < from[(size_t)i].size(); j++) v[j * (size_t)n + (size_t)i] = from[(size_t)i][j];
    return at::tensor(v, at::TensorOptions().dtype(at::kLong)).view({(int64_t)m, n}).to(d);
}

/* A resampling table (out_len rows of taps (index, weight) pairs) as a dense out_len x in_len
 * matrix; repeated indices add up. */
at::Tensor dense_table(int64_t out_len, int64_t in_len, int taps, const int *idx, const float *w,
                       c10::Device d)
{
    if (taps < 1 || !idx || !w) throw ShimError{STSL_ERR_INVALID_ARG, "empty resampling table"};
    std::vector<float> m((size_t)(out_len * in_len), 0.0f);
    for (int64_t i = 0; i < out_len; i++)
        for (int t = 0; t < taps; t++) {
            int j = idx[i * taps + t];
            if (j < 0 || j >= in_len)
                throw ShimError{STSL_ERR_INVALID_ARG, "resampling index " + std::to_string(j) +
                                                          " outside [0, " + std::to_string(in_len) + ")"};
            m[(size_t)(i * in_len + j)] += w[i * taps + t];
        }
    return at::tensor(m, floats_on(c10::kCPU)).view({out_len, in_len}).to(d);
}

}  // namespace

struct stsl_shim_op {
    Kind kind = Kind::Pointwise;
    c10::Device device{c10::kCPU};
    int64_t C = 0, H = 0, W = 0;       /* input, per sample */
    int64_t oc = 0, oh = 0, ow = 0;    /* output, per sample */
    bool linear = true;
    at::Tensor mask;                   /* Pointwise: (C, H, W), or undefined (identity) */
    double alpha = 1;                  /* Clip (a float's value) */
    bool separable = false;            /* Conv */
    at::Tensor weight, weight_h;       /* Conv: (1,1,k,k); separable: (1,1,k,1) and (1,1,1,k) */
    at::Tensor flip, flip_h;           /* the same rotated by 180 degrees (the adjoint) */
    int64_t k = 0;
    int64_t n1 = 0, n2 = 0;            /* Conv through FFTs of this size (0: conv2d) */
    at::Tensor spec, spec_adj;         /* the kernel's spectrum (circular correlation), conjugated */
    at::Tensor rows, cols;             /* Conv: int64 maps into the zero-extended plane */
    at::Tensor rows_t, cols_t;         /* Conv: their transposes as gathers (inverse_map) */
    at::Tensor mv, mh;                 /* Resample: (oh x H), (ow x W) */
    int64_t top = 0, left = 0;         /* Phase: place of the image in the oh x ow canvas */
    at::Tensor matrix;                 /* Matrix: (ow x C*H*W) */
    at::Tensor buf_x, buf_v;           /* device copies of the inputs, grown to the largest batch */
    int64_t in_size() const { return C * H * W; }
    int64_t out_size() const { return oc * oh * ow; }
};

namespace {

/* The steps every creation shares: checks, the device, the shapes; `fill` does the rest. */
template <typename F>
stsl_status create(const char *what, int cuda_index, const int64_t shape[3], stsl_shim_op **out,
                   char *err, size_t err_size, F &&fill)
{
    if (out) *out = nullptr;
    if (!out || !shape) {
        put_err(err, err_size, std::string(what) + ": NULL argument");
        return STSL_ERR_INVALID_ARG;
    }
    return guarded(what, STSL_ERR_BACKEND, err, err_size, [&]() {
        auto op = std::make_unique<stsl_shim_op>();
        op->device = cuda_or_cpu(cuda_index);
        op->C = op->oc = shape[0];
        op->H = op->oh = shape[1];
        op->W = op->ow = shape[2];
        fill(*op);
        *out = op.release();
        return STSL_OK;
    });
}

/* The caller's `count` floats on the op's device: on the CPU the caller's memory itself (never
 * written), on a GPU one copy into the op's buffer. */
at::Tensor upload(at::Tensor &buf, const float *p, int64_t count, c10::Device d)
{
    at::Tensor host = at::from_blob(const_cast<float *>(p), {count}, floats_on(c10::kCPU));
    if (d.is_cpu()) return host;
    if (!buf.defined() || buf.numel() < count) {
        buf = at::Tensor();   /* the old one goes back to the caching allocator first */
        buf = at::empty({count}, floats_on(d));
    }
    at::Tensor t = buf.narrow(0, 0, count);
    t.copy_(host);
    return t;
}

/* Circular correlation of each plane with the kernel through real FFTs of size n1 x n2 (as
 * conv.c's FFT path: no wrap-around reaches the rows and columns kept). */
at::Tensor fft_filter(const stsl_shim_op &op, const at::Tensor &t, const at::Tensor &spec)
{
    const std::array<int64_t, 2> size{op.n1, op.n2};
    return at::fft_irfft2(at::fft_rfft2(t, size) * spec, size);
}

at::Tensor conv_forward(const stsl_shim_op &op, const at::Tensor &x)
{
    at::Tensor p = at::constant_pad_nd(x, {0, 1, 0, 1}).index_select(2, op.rows).index_select(3, op.cols);
    if (op.n1 > 0) return fft_filter(op, p, op.spec).narrow(2, 0, op.H).narrow(3, 0, op.W);
    if (op.separable) return at::conv2d(at::conv2d(p, op.weight_h), op.weight);
    return at::conv2d(p, op.weight);
}

/* P^T along one axis of z: each source index gathers, in a fixed order, the padded values that
 * came from it (the zero appended at the end stands for none). */
at::Tensor fold(const at::Tensor &z, int64_t dim, const at::Tensor &inv)
{
    at::Tensor ze = dim == 3 ? at::constant_pad_nd(z, {0, 1}) : at::constant_pad_nd(z, {0, 0, 0, 1});
    at::Tensor acc = ze.index_select(dim, inv[0]);
    for (int64_t j = 1; j < inv.size(0); j++) acc = acc + ze.index_select(dim, inv[j]);
    return acc;
}

/* P^T C^T y: C^T y, the full convolution onto the padded plane, as a correlation of the
 * zero-extended y with the rotated kernel (conv2d: libtorch's CPU conv_transpose2d is an order of
 * magnitude slower with large kernels), then each padded value added back to the pixel it came
 * from (columns, then rows). */
at::Tensor conv_adjoint(const stsl_shim_op &op, const at::Tensor &y)
{
    const int64_t e = op.k - 1;
    at::Tensor z;
    if (op.n1 > 0) {
        z = fft_filter(op, y, op.spec_adj).narrow(2, 0, op.H + e).narrow(3, 0, op.W + e);
    } else {
        at::Tensor ye = at::constant_pad_nd(y, {e, e, e, e});
        z = op.separable ? at::conv2d(at::conv2d(ye, op.flip), op.flip_h) : at::conv2d(ye, op.flip);
    }
    return fold(fold(z, 3, op.cols_t), 2, op.rows_t);
}

/* The half-spectrum-free form of phase.c: F = DFT(P x) over the whole canvas. */
at::Tensor phase_spectrum(const stsl_shim_op &op, const at::Tensor &x)
{
    at::Tensor canvas = at::constant_pad_nd(x, {op.left, op.ow - op.W - op.left, op.top, op.oh - op.H - op.top});
    return at::fft_fft2(canvas, at::IntArrayRef{op.oh, op.ow}, {-2, -1}, "ortho");
}

/* J^T v = P^T Re(U^H (v . F/|F|)), the phase taken as 0 where |F| = 0 (phase.c). */
at::Tensor phase_vjp(const stsl_shim_op &op, const at::Tensor &x, const at::Tensor &v)
{
    at::Tensor f = phase_spectrum(op, x);
    at::Tensor a = f.abs();
    at::Tensor g = at::where(a > 0, at::fft_ifftshift(v, at::IntArrayRef{-2, -1}) / a, at::zeros_like(a));
    at::Tensor r = at::real(at::fft_ifft2(f * g, at::IntArrayRef{op.oh, op.ow}, {-2, -1}, "ortho"));
    return r.narrow(1, op.top, op.H).narrow(2, op.left, op.W);
}

at::Tensor run(const stsl_shim_op &op, stsl_shim_op_mode mode, const at::Tensor &xf, const at::Tensor &vf,
               int64_t n)
{
    const bool fwd = mode == STSL_SHIM_OP_FORWARD;
    const at::Tensor &in = fwd ? xf : vf;   /* linear maps act on one input */
    switch (op.kind) {
    case Kind::Pointwise: {
        at::Tensor t = in.view({n, op.C, op.H, op.W});
        return op.mask.defined() ? t * op.mask : t;
    }
    case Kind::Clip: {
        at::Tensor ax = xf.view({n, op.C, op.H, op.W}) * op.alpha;
        if (fwd) return at::clamp(ax, -1.0, 1.0);
        return at::where(ax.abs() < 1.0, vf.view({n, op.C, op.H, op.W}) * op.alpha, at::zeros_like(ax));
    }
    case Kind::Conv:
        return fwd ? conv_forward(op, in.view({n * op.C, 1, op.H, op.W}))
                   : conv_adjoint(op, in.view({n * op.C, 1, op.oh, op.ow}));
    case Kind::Resample:
        if (fwd) return at::matmul(op.mv, at::matmul(in.view({n * op.C, op.H, op.W}), op.mh.t()));
        return at::matmul(at::matmul(op.mv.t(), in.view({n * op.C, op.oh, op.ow})), op.mh);
    case Kind::Phase:
        if (fwd) return at::fft_fftshift(phase_spectrum(op, xf.view({n * op.C, op.H, op.W})).abs(),
                                         at::IntArrayRef{-2, -1});
        return phase_vjp(op, xf.view({n * op.C, op.H, op.W}), vf.view({n * op.C, op.oh, op.ow}));
    case Kind::Matrix:
        if (fwd) return at::matmul(in.view({n, op.in_size()}), op.matrix.t());
        return at::matmul(in.view({n, op.out_size()}), op.matrix);
    }
    throw ShimError{STSL_ERR_INTERNAL, "unknown operator kind"};
}

}  // namespace

extern "C" stsl_status stsl_shim_op_pointwise(int cuda_index, const int64_t shape[3], const float *mask,
                                              stsl_shim_op **out, char *err, size_t err_size)
{
    return create("operator on the device", cuda_index, shape, out, err, err_size, [&](stsl_shim_op &op) {
        op.kind = Kind::Pointwise;
        if (mask) op.mask = copy_floats(mask, {op.C, op.H, op.W}, op.device);
    });
}

extern "C" stsl_status stsl_shim_op_clip(int cuda_index, const int64_t shape[3], float alpha,
                                         stsl_shim_op **out, char *err, size_t err_size)
{
    return create("operator on the device", cuda_index, shape, out, err, err_size, [&](stsl_shim_op &op) {
        op.kind = Kind::Clip;
        op.linear = false;
        op.alpha = alpha;
    });
}

extern "C" stsl_status stsl_shim_op_conv(int cuda_index, const int64_t shape[3], int k, int separable,
                                         const float *weights, const int *rows, const int *cols, int fft_n1,
                                         int fft_n2, stsl_shim_op **out, char *err, size_t err_size)
{
    return create("blur on the device", cuda_index, shape, out, err, err_size, [&](stsl_shim_op &op) {
        if (k < 1 || k % 2 == 0 || !weights || !rows || !cols)
            throw ShimError{STSL_ERR_INVALID_ARG, "blur: kernel width " + std::to_string(k) + " or its tables"};
        if (fft_n1 > 0 && (separable || fft_n1 < op.H + k - 1 || fft_n2 < op.W + k - 1))
            throw ShimError{STSL_ERR_INVALID_ARG, "blur: FFT size " + std::to_string(fft_n1) + "x" +
                                                      std::to_string(fft_n2) + " below the padded plane"};
        op.kind = Kind::Conv;
        op.separable = separable != 0;
        op.k = k;
        if (op.separable) {
            op.weight = copy_floats(weights, {1, 1, k, 1}, op.device);
            op.weight_h = op.weight.view({1, 1, 1, k});
            op.flip = op.weight.flip({2});
            op.flip_h = op.flip.view({1, 1, 1, k});
        } else {
            op.weight = copy_floats(weights, {1, 1, k, k}, op.device);
            op.flip = op.weight.flip({2, 3});
        }
        if (fft_n1 > 0) {
            /* correlation with K is circular convolution with g[-a][-b] = K[a][b] */
            op.n1 = fft_n1;
            op.n2 = fft_n2;
            std::vector<float> g((size_t)fft_n1 * (size_t)fft_n2, 0.0f);
            for (int a = 0; a < k; a++)
                for (int b = 0; b < k; b++)
                    g[(size_t)((fft_n1 - a) % fft_n1) * (size_t)fft_n2 + (size_t)((fft_n2 - b) % fft_n2)] =
                        weights[a * k + b];
            at::Tensor spec = at::fft_rfft2(at::tensor(g, floats_on(c10::kCPU)).view({fft_n1, fft_n2}));
            op.spec = spec.to(op.device);
            op.spec_adj = at::conj_physical(spec).to(op.device);
        }
        op.rows = index_map(rows, op.H + k - 1, op.H, op.device);
        op.cols = index_map(cols, op.W + k - 1, op.W, op.device);
        op.rows_t = inverse_map(rows, op.H + k - 1, op.H, op.device);
        op.cols_t = inverse_map(cols, op.W + k - 1, op.W, op.device);
    });
}

extern "C" stsl_status stsl_shim_op_resample(int cuda_index, const int64_t shape[3], int out_h, int out_w,
                                             int taps_v, const int *idx_v, const float *w_v, int taps_h,
                                             const int *idx_h, const float *w_h, stsl_shim_op **out,
                                             char *err, size_t err_size)
{
    return create("resampling on the device", cuda_index, shape, out, err, err_size, [&](stsl_shim_op &op) {
        op.kind = Kind::Resample;
        op.oh = out_h;
        op.ow = out_w;
        op.mv = dense_table(out_h, op.H, taps_v, idx_v, w_v, op.device);
        op.mh = dense_table(out_w, op.W, taps_h, idx_h, w_h, op.device);
    });
}

extern "C" stsl_status stsl_shim_op_phase(int cuda_index, const int64_t shape[3], int n1, int n2, int top,
                                          int left, stsl_shim_op **out, char *err, size_t err_size)
{
    return create("phase retrieval on the device", cuda_index, shape, out, err, err_size, [&](stsl_shim_op &op) {
        if (top < 0 || left < 0 || top + op.H > n1 || left + op.W > n2)
            throw ShimError{STSL_ERR_INVALID_ARG, "phase retrieval: the image does not fit its canvas"};
        op.kind = Kind::Phase;
        op.linear = false;
        op.oh = n1;
        op.ow = n2;
        op.top = top;
        op.left = left;
    });
}

extern "C" stsl_status stsl_shim_op_matrix(int cuda_index, const int64_t shape[3], int rows,
                                           const float *matrix, stsl_shim_op **out, char *err,
                                           size_t err_size)
{
    return create("matrix operator on the device", cuda_index, shape, out, err, err_size, [&](stsl_shim_op &op) {
        if (rows < 1 || !matrix) throw ShimError{STSL_ERR_INVALID_ARG, "matrix operator: no matrix"};
        op.kind = Kind::Matrix;
        op.oc = op.oh = 1;
        op.ow = rows;
        op.matrix = copy_floats(matrix, {rows, op.in_size()}, op.device);
    });
}

extern "C" stsl_status stsl_shim_op_apply(stsl_shim_op *op, stsl_shim_op_mode mode, const float *x,
                                          const float *v, float *out, int batch, int threads, char *err,
                                          size_t err_size)
{
    const bool need_x = mode == STSL_SHIM_OP_FORWARD || (mode == STSL_SHIM_OP_VJP && op && !op->linear);
    const bool need_v = mode != STSL_SHIM_OP_FORWARD;
    if (!op || !out || (need_x && !x) || (need_v && !v) || batch < 1 ||
        (mode != STSL_SHIM_OP_FORWARD && mode != STSL_SHIM_OP_ADJOINT && mode != STSL_SHIM_OP_VJP)) {
        put_err(err, err_size, "stsl_shim_op_apply: NULL argument, batch < 1 or unknown mode");
        return STSL_ERR_INVALID_ARG;
    }
    if (mode == STSL_SHIM_OP_ADJOINT && !op->linear) {
        put_err(err, err_size, "the operator is nonlinear: it has no adjoint (use its VJP)");
        return STSL_ERR_INVALID_ARG;
    }
    return guarded("operator on the device", STSL_ERR_BACKEND, err, err_size, [&]() {
        if (op->device.is_cpu()) set_threads(threads);
        c10::InferenceMode inference;
        const int64_t n = batch;
        at::Tensor xt, vt;
        if (need_x) xt = upload(op->buf_x, x, n * op->in_size(), op->device);
        if (need_v) vt = upload(op->buf_v, v, n * op->out_size(), op->device);
        at::Tensor r = run(*op, mode, xt, vt, n);
        const int64_t count = n * (mode == STSL_SHIM_OP_FORWARD ? op->out_size() : op->in_size());
        if (r.numel() != count)
            throw ShimError{STSL_ERR_INTERNAL, "operator on the device: " + std::to_string(r.numel()) +
                                                   " values computed, " + std::to_string(count) + " expected"};
        /* one copy: device -> host (or the CPU's result into the caller's buffer) */
        at::from_blob(out, r.sizes(), floats_on(c10::kCPU)).copy_(r);
        return STSL_OK;
    });
}

extern "C" void stsl_shim_op_free(stsl_shim_op *op)
{
    try {
        delete op;
    } catch (...) {
    }
}
