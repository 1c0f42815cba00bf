/* kernels_body.h: the one generic body of every SIMD kernel table, written against the vector
 * macro layer of a simd_<isa>.h (ggml style). A kernels_<isa>.c includes its simd_<isa>.h, then
 * this file, which defines the static kernels and `const ss_kernels SS_KERNELS_NAME`.
 *
 * Contract (as csrc/shoestring.h): C trusts its inputs, never allocates (the matmul packing
 * buffer is a fixed-size stack array), never prints, never exits, uses no threads. Tails are
 * handled by partial (masked) loads and stores, so every element goes through the same vector
 * code; the scalar twin in kernels_scalar.c is the reference the tests compare against.
 */
#ifndef SS_KERNELS_NAME
#error "define SS_KERNELS_NAME and include a simd_<isa>.h before kernels_body.h"
#endif

#include <math.h>
#include <stddef.h>
#include "ss_internal.h"

#if defined(_MSC_VER) && !defined(__clang__)
#define SS_INLINE static __forceinline
#define SS_UNROLL
#define SS_UNROLL4
#define SS_ALIGNED(decl) __declspec(align(64)) decl
#elif defined(__clang__)
#define SS_INLINE static inline __attribute__((always_inline))
#define SS_UNROLL _Pragma("unroll")
#define SS_UNROLL4 _Pragma("unroll 4")
#define SS_ALIGNED(decl) decl __attribute__((aligned(64)))
#else
#define SS_INLINE static inline __attribute__((always_inline))
#define SS_UNROLL _Pragma("GCC unroll 16")
#define SS_UNROLL4 _Pragma("GCC unroll 4")
#define SS_ALIGNED(decl) decl __attribute__((aligned(64)))
#endif

#define SS_NR (SS_NV * SS_VW)                /* matmul tile width in floats */
#define SS_KC ((SS_NR >= 32) ? 128 : 256)     /* reduction block: a KC x NR block of B fits L1 */
#define SS_DW_BLOCK_FLOATS 12288              /* 48 KB: dW's kc x C block of inp (measured best) */
#define SS_DOT_MAX_N 4                        /* forward with fewer rows: dot-product form */
#define SS_INV_SQRT2 0.70710678118654752f
#define SS_INV_SQRT2PI 0.39894228040143268f

static int ss_min_int(int a, int b) { return a < b ? a : b; }

/* ==== vector math ========================================================================== */

/* Clamps take the constant first: x86 min/max return their second operand when either is NaN,
 * so a NaN input passes through every kernel as NaN instead of being clamped to a number. */
#define SS_CLAMP(x, lo, hi) SS_MIN(SS_SET1(hi), SS_MAX(SS_SET1(lo), (x)))

/* exp(x): Cephes range reduction x = n ln2 + r, degree-6 polynomial, 2^n through the exponent
 * bits; relative error ~1e-7. Inputs below about -88 (and -inf) give exactly 0; NaN gives NaN. */
SS_INLINE ssv v_exp(ssv x)
{
    x = SS_CLAMP(x, -88.3762626647949f, 88.3762626647949f);
    ssv n = SS_ROUND(SS_MUL(x, SS_SET1(1.44269504088896341f)));
    n = SS_CLAMP(n, -127.0f, 127.0f);
    ssv r = SS_FNMA(n, SS_SET1(0.693359375f), x);
    r = SS_FNMA(n, SS_SET1(-2.12194440e-4f), r);
    ssv p = SS_SET1(1.9875691500e-4f);
    p = SS_FMA(p, r, SS_SET1(1.3981999507e-3f));
    p = SS_FMA(p, r, SS_SET1(8.3334519073e-3f));
    p = SS_FMA(p, r, SS_SET1(4.1665795894e-2f));
    p = SS_FMA(p, r, SS_SET1(1.6666665459e-1f));
    p = SS_FMA(p, r, SS_SET1(5.0000001201e-1f));
    p = SS_FMA(p, SS_MUL(r, r), SS_ADD(r, SS_SET1(1.0f)));
    return SS_MUL(p, SS_POW2I(n));
}

/* erf(x): odd/even rational approximation on [-4, 4] (Eigen's float erf), clamped outside;
 * relative error below 5e-7. */
SS_INLINE ssv v_erf(ssv x)
{
    x = SS_CLAMP(x, -4.0f, 4.0f);
    ssv x2 = SS_MUL(x, x);
    ssv p = SS_SET1(-2.72614225801306e-10f);
    p = SS_FMA(p, x2, SS_SET1(2.77068142495902e-08f));
    p = SS_FMA(p, x2, SS_SET1(-2.10102402082508e-06f));
    p = SS_FMA(p, x2, SS_SET1(-5.69250639462346e-05f));
    p = SS_FMA(p, x2, SS_SET1(-7.34990630326855e-04f));
    p = SS_FMA(p, x2, SS_SET1(-2.95459980854025e-03f));
    p = SS_FMA(p, x2, SS_SET1(-1.60960333262415e-02f));
    p = SS_MUL(p, x);
    ssv q = SS_SET1(-1.45660718464996e-05f);
    q = SS_FMA(q, x2, SS_SET1(-2.13374055278905e-04f));
    q = SS_FMA(q, x2, SS_SET1(-1.68282697438203e-03f));
    q = SS_FMA(q, x2, SS_SET1(-7.37332916720468e-03f));
    q = SS_FMA(q, x2, SS_SET1(-1.42647390514189e-02f));
    return SS_DIV(p, q);
}

SS_INLINE ssv v_sigmoid(ssv x)
{
    ssv one = SS_SET1(1.0f);
    return SS_DIV(one, SS_ADD(one, v_exp(SS_SUB(SS_ZERO(), x))));
}

/* Phi(x) = 0.5 (1 + erf(x / sqrt 2)). Below x = -4 sqrt 2, where v_erf saturates, 1 + erf is
 * pure rounding error (on 32-bit NEON, whose division is a refined reciprocal estimate, it is
 * 2^-24, so GELU(-1e4) came out as -3e-4): there Phi is set to 0 (true value < 8e-9) by a 0/1
 * factor, keep = clamp((x + 4 sqrt 2) * 2^100, 0, 1), which leaves NaN to the multiply in GELU. */
SS_INLINE ssv v_cdf(ssv x)
{
    ssv half = SS_SET1(0.5f);
    ssv cdf = SS_FMA(half, v_erf(SS_MUL(x, SS_SET1(SS_INV_SQRT2))), half);
    ssv keep = SS_CLAMP(SS_MUL(SS_ADD(x, SS_SET1(5.656854249f)), SS_SET1(1.2676506e30f)),
                        0.0f, 1.0f);
    return SS_MUL(cdf, keep);
}

SS_INLINE ssv v_gelu(ssv x) { return SS_MUL(x, v_cdf(x)); }

/* d/dx x Phi(x) = Phi(x) + x phi(x) */
SS_INLINE ssv v_gelu_grad(ssv x)
{
    ssv pdf = SS_MUL(SS_SET1(SS_INV_SQRT2PI), v_exp(SS_MUL(SS_SET1(-0.5f), SS_MUL(x, x))));
    return SS_FMA(x, pdf, v_cdf(x));
}

/* ==== elementwise ============================================================================ */
/* Each loop: whole vectors, then one partial vector for the last n mod SS_VW elements. */

static void sigmoid_forward(float *out, const float *inp, int64_t n)
{
    int64_t i = 0;
    for (; i + SS_VW <= n; i += SS_VW) SS_STORE(out + i, v_sigmoid(SS_LOAD(inp + i)));
    if (i < n) {
        int r = (int)(n - i);
        SS_STORE_PART(out + i, v_sigmoid(SS_LOAD_PART(inp + i, r, 0.0f)), r);
    }
}

/* dinp += dout * out * (1 - out) */
SS_INLINE ssv sigmoid_bw_vec(ssv dinp, ssv dout, ssv y)
{
    return SS_FMA(SS_MUL(dout, y), SS_SUB(SS_SET1(1.0f), y), dinp);
}

static void sigmoid_backward(float *dinp, const float *dout, const float *out, int64_t n)
{
    int64_t i = 0;
    for (; i + SS_VW <= n; i += SS_VW)
        SS_STORE(dinp + i, sigmoid_bw_vec(SS_LOAD(dinp + i), SS_LOAD(dout + i), SS_LOAD(out + i)));
    if (i < n) {
        int r = (int)(n - i);
        SS_STORE_PART(dinp + i, sigmoid_bw_vec(SS_LOAD_PART(dinp + i, r, 0.0f),
                                               SS_LOAD_PART(dout + i, r, 0.0f),
                                               SS_LOAD_PART(out + i, r, 0.0f)), r);
    }
}

static void gelu_forward(float *out, const float *inp, int64_t n)
{
    int64_t i = 0;
    for (; i + SS_VW <= n; i += SS_VW) SS_STORE(out + i, v_gelu(SS_LOAD(inp + i)));
    if (i < n) {
        int r = (int)(n - i);
        SS_STORE_PART(out + i, v_gelu(SS_LOAD_PART(inp + i, r, 0.0f)), r);
    }
}

static void gelu_backward(float *dinp, const float *dout, const float *inp, int64_t n)
{
    int64_t i = 0;
    for (; i + SS_VW <= n; i += SS_VW)
        SS_STORE(dinp + i, SS_FMA(SS_LOAD(dout + i), v_gelu_grad(SS_LOAD(inp + i)),
                                  SS_LOAD(dinp + i)));
    if (i < n) {
        int r = (int)(n - i);
        ssv g = v_gelu_grad(SS_LOAD_PART(inp + i, r, 0.0f));
        SS_STORE_PART(dinp + i, SS_FMA(SS_LOAD_PART(dout + i, r, 0.0f), g,
                                       SS_LOAD_PART(dinp + i, r, 0.0f)), r);
    }
}

/* ==== row reductions: softmax, cross-entropy, RMSNorm ======================================== */

static float row_max(const float *x, int X)
{
    ssv m = SS_SET1(-INFINITY);
    int j = 0;
    for (; j + SS_VW <= X; j += SS_VW) m = SS_MAX(m, SS_LOAD(x + j));
    if (j < X) m = SS_MAX(m, SS_LOAD_PART(x + j, X - j, -INFINITY));
    return SS_HMAX(m);
}

/* y = exp(x - mx) for one row (y may be NULL: only the sum is wanted); returns sum(y) */
static float row_exp_sum(float *y, const float *x, int X, float mx)
{
    ssv vmx = SS_SET1(mx), s = SS_ZERO();
    int j = 0;
    for (; j + SS_VW <= X; j += SS_VW) {
        ssv e = v_exp(SS_SUB(SS_LOAD(x + j), vmx));
        if (y) SS_STORE(y + j, e);
        s = SS_ADD(s, e);
    }
    if (j < X) {
        ssv e = v_exp(SS_SUB(SS_LOAD_PART(x + j, X - j, -INFINITY), vmx)); /* padding -> 0 */
        if (y) SS_STORE_PART(y + j, e, X - j);
        s = SS_ADD(s, e);
    }
    return SS_HSUM(s);
}

static void row_scale(float *y, int X, float k)
{
    ssv vk = SS_SET1(k);
    int j = 0;
    for (; j + SS_VW <= X; j += SS_VW) SS_STORE(y + j, SS_MUL(SS_LOAD(y + j), vk));
    if (j < X) SS_STORE_PART(y + j, SS_MUL(SS_LOAD_PART(y + j, X - j, 0.0f), vk), X - j);
}

static float row_dot(const float *a, const float *b, int X)
{
    ssv s = SS_ZERO();
    int j = 0;
    for (; j + SS_VW <= X; j += SS_VW) s = SS_FMA(SS_LOAD(a + j), SS_LOAD(b + j), s);
    if (j < X) s = SS_FMA(SS_LOAD_PART(a + j, X - j, 0.0f), SS_LOAD_PART(b + j, X - j, 0.0f), s);
    return SS_HSUM(s);
}

static void softmax_forward(float *out, const float *inp, int N, int X)
{
    for (int n = 0; n < N; n++) {
        const float *x = inp + (size_t)n * X;
        float *y = out + (size_t)n * X;
        float s = row_exp_sum(y, x, X, row_max(x, X));
        row_scale(y, X, 1.0f / s);
    }
}

/* dx += y * (dy - sum(dy*y)) */
static void softmax_backward(float *dinp, const float *dout, const float *out, int N, int X)
{
    for (int n = 0; n < N; n++) {
        const float *y = out + (size_t)n * X, *dy = dout + (size_t)n * X;
        float *dx = dinp + (size_t)n * X;
        ssv dot = SS_SET1(row_dot(dy, y, X));
        int j = 0;
        for (; j + SS_VW <= X; j += SS_VW)
            SS_STORE(dx + j, SS_FMA(SS_LOAD(y + j), SS_SUB(SS_LOAD(dy + j), dot), SS_LOAD(dx + j)));
        if (j < X) {
            int r = X - j;
            ssv v = SS_FMA(SS_LOAD_PART(y + j, r, 0.0f), SS_SUB(SS_LOAD_PART(dy + j, r, 0.0f), dot),
                           SS_LOAD_PART(dx + j, r, 0.0f));
            SS_STORE_PART(dx + j, v, r);
        }
    }
}

/* losses[n] = logsumexp(x) - x[t]; dlogits = (softmax - onehot) * dscale when requested
 * (the exponentials are written into dlogits in the summing pass, then scaled in place) */
static void crossentropy_forward(float *losses, float *dlogits, const float *logits,
                                 const int32_t *targets, int N, int V, float dscale)
{
    for (int n = 0; n < N; n++) {
        const float *x = logits + (size_t)n * V;
        float *d = dlogits ? dlogits + (size_t)n * V : NULL;
        float mx = row_max(x, V);
        float s = row_exp_sum(d, x, V, mx);
        int t = targets[n];
        losses[n] = logf(s) + mx - x[t];
        if (d) {
            row_scale(d, V, dscale / s);
            d[t] -= dscale;
        }
    }
}

static void rmsnorm_forward(float *out, float *rstd, const float *inp, const float *gain,
                            int N, int H, float eps)
{
    for (int n = 0; n < N; n++) {
        const float *x = inp + (size_t)n * H;
        float *y = out + (size_t)n * H;
        float r = 1.0f / sqrtf(row_dot(x, x, H) / (float)H + eps);
        rstd[n] = r;
        ssv vr = SS_SET1(r);
        int h = 0;
        for (; h + SS_VW <= H; h += SS_VW)
            SS_STORE(y + h, SS_MUL(SS_LOAD(gain + h), SS_MUL(SS_LOAD(x + h), vr)));
        if (h < H) {
            int q = H - h;
            SS_STORE_PART(y + h, SS_MUL(SS_LOAD_PART(gain + h, q, 0.0f),
                                        SS_MUL(SS_LOAD_PART(x + h, q, 0.0f), vr)), q);
        }
    }
}

/* y = g x r, r = (mean(x^2)+eps)^-1/2:  dx += r g dy - x r^3 mean(g dy x);  dg += dy x r */
SS_INLINE void rmsnorm_bw_vec(float *dx, float *dg, const float *dy, const float *x,
                              const float *g, ssv vr, ssv vk, int q)
{
    ssv vdy, vx, vg;
    if (q == SS_VW) {
        vdy = SS_LOAD(dy); vx = SS_LOAD(x); vg = SS_LOAD(g);
    } else {
        vdy = SS_LOAD_PART(dy, q, 0.0f); vx = SS_LOAD_PART(x, q, 0.0f); vg = SS_LOAD_PART(g, q, 0.0f);
    }
    if (dx) {
        ssv v = SS_FNMA(vk, vx, SS_MUL(vr, SS_MUL(vg, vdy)));
        if (q == SS_VW) SS_STORE(dx, SS_ADD(SS_LOAD(dx), v));
        else SS_STORE_PART(dx, SS_ADD(SS_LOAD_PART(dx, q, 0.0f), v), q);
    }
    if (dg) {
        ssv v = SS_MUL(SS_MUL(vdy, vx), vr);
        if (q == SS_VW) SS_STORE(dg, SS_ADD(SS_LOAD(dg), v));
        else SS_STORE_PART(dg, SS_ADD(SS_LOAD_PART(dg, q, 0.0f), v), q);
    }
}

static void rmsnorm_backward(float *dinp, float *dgain, const float *dout, const float *inp,
                             const float *gain, const float *rstd, int N, int H)
{
    for (int n = 0; n < N; n++) {
        const float *x = inp + (size_t)n * H, *dy = dout + (size_t)n * H;
        float *dx = dinp ? dinp + (size_t)n * H : NULL;
        float r = rstd[n];
        ssv s = SS_ZERO();
        int h = 0;
        for (; h + SS_VW <= H; h += SS_VW)
            s = SS_FMA(SS_MUL(SS_LOAD(gain + h), SS_LOAD(dy + h)), SS_LOAD(x + h), s);
        if (h < H) {
            int q = H - h;
            s = SS_FMA(SS_MUL(SS_LOAD_PART(gain + h, q, 0.0f), SS_LOAD_PART(dy + h, q, 0.0f)),
                       SS_LOAD_PART(x + h, q, 0.0f), s);
        }
        ssv vr = SS_SET1(r), vk = SS_SET1(SS_HSUM(s) * r * r * r / (float)H);
        for (h = 0; h + SS_VW <= H; h += SS_VW)
            rmsnorm_bw_vec(dx ? dx + h : NULL, dgain ? dgain + h : NULL, dy + h, x + h, gain + h,
                           vr, vk, SS_VW);
        if (h < H)
            rmsnorm_bw_vec(dx ? dx + h : NULL, dgain ? dgain + h : NULL, dy + h, x + h, gain + h,
                           vr, vk, H - h);
    }
}

/* ==== AdamW and the gradient norm ============================================================ */

SS_INLINE void adamw_vec(float *p, const float *g, float *m, float *v, int q, ssv lr, ssv b1,
                         ssv b1c, ssv b2, ssv b2c, ssv eps, ssv wd, ssv scale, ssv ib1, ssv ib2)
{
    ssv vg, vm, vv, vp;
    if (q == SS_VW) {
        vg = SS_LOAD(g); vm = SS_LOAD(m); vv = SS_LOAD(v); vp = SS_LOAD(p);
    } else {
        vg = SS_LOAD_PART(g, q, 0.0f); vm = SS_LOAD_PART(m, q, 0.0f);
        vv = SS_LOAD_PART(v, q, 0.0f); vp = SS_LOAD_PART(p, q, 0.0f);
    }
    vg = SS_MUL(vg, scale);
    vm = SS_FMA(b1, vm, SS_MUL(b1c, vg));
    vv = SS_FMA(b2, vv, SS_MUL(SS_MUL(b2c, vg), vg));
    ssv upd = SS_DIV(SS_MUL(vm, ib1), SS_ADD(SS_SQRT(SS_MUL(vv, ib2)), eps));
    upd = SS_FMA(wd, vp, upd);
    vp = SS_FNMA(lr, upd, vp);
    if (q == SS_VW) {
        SS_STORE(m, vm); SS_STORE(v, vv); SS_STORE(p, vp);
    } else {
        SS_STORE_PART(m, vm, q); SS_STORE_PART(v, vv, q); SS_STORE_PART(p, vp, q);
    }
}

static void adamw_step(float *params, const float *grads, float *m, float *v, int64_t n,
                       int64_t n_decay, float lr, float beta1, float beta2, float eps,
                       float weight_decay, float grad_scale, float bc1, float bc2)
{
    ssv vlr = SS_SET1(lr), b1 = SS_SET1(beta1), b1c = SS_SET1(1.0f - beta1);
    ssv b2 = SS_SET1(beta2), b2c = SS_SET1(1.0f - beta2), veps = SS_SET1(eps);
    ssv scale = SS_SET1(grad_scale), ib1 = SS_SET1(1.0f / bc1), ib2 = SS_SET1(1.0f / bc2);
    /* two ranges: the decayed matrix prefix [0, n_decay), then the rest without decay */
    for (int part = 0; part < 2; part++) {
        int64_t lo = part ? n_decay : 0, hi = part ? n : n_decay;
        ssv wd = SS_SET1(part ? 0.0f : weight_decay);
        int64_t i = lo;
        for (; i + SS_VW <= hi; i += SS_VW)
            adamw_vec(params + i, grads + i, m + i, v + i, SS_VW, vlr, b1, b1c, b2, b2c, veps, wd,
                      scale, ib1, ib2);
        if (i < hi)
            adamw_vec(params + i, grads + i, m + i, v + i, (int)(hi - i), vlr, b1, b1c, b2, b2c,
                      veps, wd, scale, ib1, ib2);
    }
}

static double sumsq(const float *x, int64_t n) { return simd_sumsq(x, n); }

/* ==== matmul ================================================================================= */
/* One register-tiled micro-kernel serves the three products (out, dinp, dW):
 *   Ct(mr, NR) (+)= sum_k A(m, k) * B(k, 0:NR),  A(m, k) = A[m*lda + k*ak],  B(k, j) = B[k*ldb + j]
 * mr rows x SS_NV vectors of accumulators stay in registers; each k loads SS_NV vectors of B and
 * broadcasts mr values of A. `full`: all NR columns valid (else `ncols` of them, masked);
 * `bfull`: B rows may be read whole (a zero-padded packed panel). mode: 0 start from zero,
 * 1 start from the bias row, 2 accumulate into Ct. mr, full, bfull and mode are constants at
 * every call, so the compiler unrolls the tile into registers. */
SS_INLINE void gemm_tile(const int mr, const int full, const int bfull, const int mode, int K,
                         const float *A, ptrdiff_t lda, ptrdiff_t ak, const float *B,
                         ptrdiff_t ldb, float *Ct, ptrdiff_t ldc, const float *bias, int ncols)
{
    ssv acc[SS_MR][SS_NV];
    int lanes[SS_NV];
    SS_UNROLL for (int v = 0; v < SS_NV; v++) {
        int q = ncols - v * SS_VW;
        lanes[v] = full ? SS_VW : (q < 0 ? 0 : (q > SS_VW ? SS_VW : q));
    }
    SS_UNROLL for (int m = 0; m < mr; m++) {
        SS_UNROLL for (int v = 0; v < SS_NV; v++) {
            if (mode == 0) {
                acc[m][v] = SS_ZERO();
            } else {
                const float *src = mode == 2 ? Ct + m * ldc + v * SS_VW : bias + v * SS_VW;
                acc[m][v] = full ? SS_LOAD(src) : SS_LOAD_PART(src, lanes[v], 0.0f);
            }
        }
    }
    SS_UNROLL4 for (int k = 0; k < K; k++) {
        const float *bk = B + k * ldb, *ak_ = A + k * ak;
        ssv b[SS_NV];
        SS_UNROLL for (int v = 0; v < SS_NV; v++)
            b[v] = (full || bfull) ? SS_LOAD(bk + v * SS_VW) : SS_LOAD_PART(bk + v * SS_VW, lanes[v], 0.0f);
        SS_UNROLL for (int m = 0; m < mr; m++) {
            ssv a = SS_BCAST(ak_ + m * lda);
            SS_UNROLL for (int v = 0; v < SS_NV; v++) acc[m][v] = SS_FMA(a, b[v], acc[m][v]);
        }
    }
    SS_UNROLL for (int m = 0; m < mr; m++) {
        SS_UNROLL for (int v = 0; v < SS_NV; v++) {
            if (full) SS_STORE(Ct + m * ldc + v * SS_VW, acc[m][v]);
            else SS_STORE_PART(Ct + m * ldc + v * SS_VW, acc[m][v], lanes[v]);
        }
    }
}

/* The same tile for a run-time row count 1 <= mr <= SS_MR (row tails) */
SS_INLINE void gemm_tile_rows(int mr, const int full, const int bfull, const int mode, int K,
                              const float *A, ptrdiff_t lda, ptrdiff_t ak, const float *B,
                              ptrdiff_t ldb, float *Ct, ptrdiff_t ldc, const float *bias, int ncols)
{
#define SS_TILE_CASE(R) \
    case R: gemm_tile(R, full, bfull, mode, K, A, lda, ak, B, ldb, Ct, ldc, bias, ncols); break;
    switch (mr) {
    SS_TILE_CASE(1)
#if SS_MR > 1
    SS_TILE_CASE(2)
#endif
#if SS_MR > 2
    SS_TILE_CASE(3)
#endif
#if SS_MR > 3
    SS_TILE_CASE(4)
#endif
#if SS_MR > 4
    SS_TILE_CASE(5)
#endif
#if SS_MR > 5
    SS_TILE_CASE(6)
#endif
#if SS_MR > 6
    SS_TILE_CASE(7)
#endif
#if SS_MR > 7
    SS_TILE_CASE(8)
#endif
    default: break;
    }
#undef SS_TILE_CASE
}

/* All rows [0, M) of one column block: whole SS_MR tiles, then the row tail. */
SS_INLINE void gemm_rows(int M, const int full, const int bfull, const int mode, int K,
                         const float *A, ptrdiff_t lda, ptrdiff_t ak, const float *B, ptrdiff_t ldb,
                         float *Ct, ptrdiff_t ldc, const float *bias, int ncols)
{
    int m0 = 0;
    for (; m0 + SS_MR <= M; m0 += SS_MR)
        gemm_tile(SS_MR, full, bfull, mode, K, A + m0 * lda, lda, ak, B, ldb, Ct + m0 * ldc, ldc,
                  bias, ncols);
    if (m0 < M)
        gemm_tile_rows(M - m0, full, bfull, mode, K, A + m0 * lda, lda, ak, B, ldb, Ct + m0 * ldc,
                       ldc, bias, ncols);
}

/* Pack W rows [o0, o0+nc), columns [k0, k0+kc) transposed: pack[k*NR + j] = W[(o0+j)*C + k0+k],
 * columns j >= nc zero, so the forward tile can load whole B rows. */
static void pack_wt(float *pack, const float *W, int C, int kc, int nc)
{
    for (int j = 0; j < nc; j++) {
        const float *w = W + (size_t)j * C;
        for (int k = 0; k < kc; k++) pack[k * SS_NR + j] = w[k];
    }
    for (int j = nc; j < SS_NR; j++)
        for (int k = 0; k < kc; k++) pack[k * SS_NR + j] = 0.0f;
}

/* Few rows: out[n][o] = dot(inp[n], W[o]) + b[o], four W rows per pass, vectors along C. */
static void matmul_forward_dot(float *out, const float *inp, const float *W, const float *b,
                               int N, int C, int OC)
{
    for (int n = 0; n < N; n++) {
        const float *x = inp + (size_t)n * C;
        float *y = out + (size_t)n * OC;
        int o = 0;
        for (; o + 4 <= OC; o += 4) {
            const float *w0 = W + (size_t)o * C, *w1 = w0 + C, *w2 = w1 + C, *w3 = w2 + C;
            ssv a0 = SS_ZERO(), a1 = a0, a2 = a0, a3 = a0;
            int c = 0;
            for (; c + SS_VW <= C; c += SS_VW) {
                ssv xv = SS_LOAD(x + c);
                a0 = SS_FMA(SS_LOAD(w0 + c), xv, a0);
                a1 = SS_FMA(SS_LOAD(w1 + c), xv, a1);
                a2 = SS_FMA(SS_LOAD(w2 + c), xv, a2);
                a3 = SS_FMA(SS_LOAD(w3 + c), xv, a3);
            }
            if (c < C) {
                int q = C - c;
                ssv xv = SS_LOAD_PART(x + c, q, 0.0f);
                a0 = SS_FMA(SS_LOAD_PART(w0 + c, q, 0.0f), xv, a0);
                a1 = SS_FMA(SS_LOAD_PART(w1 + c, q, 0.0f), xv, a1);
                a2 = SS_FMA(SS_LOAD_PART(w2 + c, q, 0.0f), xv, a2);
                a3 = SS_FMA(SS_LOAD_PART(w3 + c, q, 0.0f), xv, a3);
            }
            y[o] = SS_HSUM(a0) + (b ? b[o] : 0.0f);
            y[o + 1] = SS_HSUM(a1) + (b ? b[o + 1] : 0.0f);
            y[o + 2] = SS_HSUM(a2) + (b ? b[o + 2] : 0.0f);
            y[o + 3] = SS_HSUM(a3) + (b ? b[o + 3] : 0.0f);
        }
        for (; o < OC; o++) y[o] = row_dot(x, W + (size_t)o * C, C) + (b ? b[o] : 0.0f);
    }
}

/* out[:, o0:o0+nc] (+)= inp[:, k0:k0+kc] . panel (kc x NR, packed by pack_wt), + b at k0 == 0 */
SS_INLINE void forward_panel(float *out, const float *inp, const float *panel, const float *b,
                             int N, int C, int OC, int k0, int kc, int o0, int nc)
{
    const float *A = inp + k0;
    float *Ct = out + o0;
    if (k0 > 0) {
        if (nc == SS_NR) gemm_rows(N, 1, 1, 2, kc, A, C, 1, panel, SS_NR, Ct, OC, NULL, nc);
        else gemm_rows(N, 0, 1, 2, kc, A, C, 1, panel, SS_NR, Ct, OC, NULL, nc);
    } else if (b) {
        if (nc == SS_NR) gemm_rows(N, 1, 1, 1, kc, A, C, 1, panel, SS_NR, Ct, OC, b + o0, nc);
        else gemm_rows(N, 0, 1, 1, kc, A, C, 1, panel, SS_NR, Ct, OC, b + o0, nc);
    } else {
        if (nc == SS_NR) gemm_rows(N, 1, 1, 0, kc, A, C, 1, panel, SS_NR, Ct, OC, NULL, nc);
        else gemm_rows(N, 0, 1, 0, kc, A, C, 1, panel, SS_NR, Ct, OC, NULL, nc);
    }
}

/* out(N,OC) = inp(N,C) . W(OC,C)^T + b: W is packed NR columns at a time (KC x NR, on the
 * stack), then every SS_MR-row tile of inp runs over it. C is blocked in chunks of KC. */
static void matmul_forward(float *out, const float *inp, const float *W, const float *b,
                           int N, int C, int OC)
{
    if (N < SS_DOT_MAX_N || C == 0) { /* C == 0: out = b (the dot form handles it) */
        matmul_forward_dot(out, inp, W, b, N, C, OC);
        return;
    }
    SS_ALIGNED(float pack[SS_KC * SS_NR]);
    for (int k0 = 0; k0 < C; k0 += SS_KC) {
        int kc = ss_min_int(SS_KC, C - k0);
        for (int o0 = 0; o0 < OC; o0 += SS_NR) {
            int nc = ss_min_int(SS_NR, OC - o0);
            pack_wt(pack, W + (size_t)o0 * C + k0, C, kc, nc);
            forward_panel(out, inp, pack, b, N, C, OC, k0, kc, o0, nc);
        }
    }
}

/* Pre-packed W: the panels matmul_forward builds on the stack, all of them, in its order (k
 * block, then column panel; kc x NR floats each, columns past OC zero). matmul_forward_packed
 * runs the same tiles over them, so its bits are matmul_forward's. */
_Static_assert(SS_NR <= SS_PACK_NR_MAX, "SS_PACK_NR_MAX bounds every panel width");

static int64_t matmul_packed_floats(int C, int OC)
{
    return (int64_t)C * SS_NR * ((OC + SS_NR - 1) / SS_NR);
}

static void matmul_pack(float *packed, const float *W, int C, int OC)
{
    for (int k0 = 0; k0 < C; k0 += SS_KC) {
        int kc = ss_min_int(SS_KC, C - k0);
        for (int o0 = 0; o0 < OC; o0 += SS_NR) {
            pack_wt(packed, W + (size_t)o0 * C + k0, C, kc, ss_min_int(SS_NR, OC - o0));
            packed += (size_t)kc * SS_NR;
        }
    }
}

static void matmul_forward_packed(float *out, const float *inp, const float *W,
                                  const float *packed, const float *b, int N, int C, int OC)
{
    if (N < SS_DOT_MAX_N || C == 0) {
        matmul_forward_dot(out, inp, W, b, N, C, OC);
        return;
    }
    for (int k0 = 0; k0 < C; k0 += SS_KC) {
        int kc = ss_min_int(SS_KC, C - k0);
        for (int o0 = 0; o0 < OC; o0 += SS_NR, packed += (size_t)kc * SS_NR)
            forward_panel(out, inp, packed, b, N, C, OC, k0, kc, o0, ss_min_int(SS_NR, OC - o0));
    }
}

/* db(OC) += sum over rows of dout(N,OC): 4 vectors of columns at a time, rows inner. */
static void bias_grad(float *db, const float *dout, int N, int OC)
{
    int o = 0;
    for (; o + 4 * SS_VW <= OC; o += 4 * SS_VW) {
        ssv s0 = SS_LOAD(db + o), s1 = SS_LOAD(db + o + SS_VW);
        ssv s2 = SS_LOAD(db + o + 2 * SS_VW), s3 = SS_LOAD(db + o + 3 * SS_VW);
        for (int n = 0; n < N; n++) {
            const float *g = dout + (size_t)n * OC + o;
            s0 = SS_ADD(s0, SS_LOAD(g));
            s1 = SS_ADD(s1, SS_LOAD(g + SS_VW));
            s2 = SS_ADD(s2, SS_LOAD(g + 2 * SS_VW));
            s3 = SS_ADD(s3, SS_LOAD(g + 3 * SS_VW));
        }
        SS_STORE(db + o, s0);
        SS_STORE(db + o + SS_VW, s1);
        SS_STORE(db + o + 2 * SS_VW, s2);
        SS_STORE(db + o + 3 * SS_VW, s3);
    }
    for (; o < OC; o += SS_VW) {
        int q = ss_min_int(SS_VW, OC - o);
        ssv s = SS_LOAD_PART(db + o, q, 0.0f);
        for (int n = 0; n < N; n++) s = SS_ADD(s, SS_LOAD_PART(dout + (size_t)n * OC + o, q, 0.0f));
        SS_STORE_PART(db + o, s, q);
    }
}

/* dinp(N,C) += dout(N,OC) . W(OC,C);  dW(OC,C) += dout^T . inp(N,C);  db(OC) += sum_N dout.
 * Both products read their B operand (W, inp) in place, row-major along C: no packing.
 * The reduction (OC for dinp, N for dW) is blocked by KC so a KC x NR block of B stays in L1. */
static void matmul_backward(float *dinp, float *dW, float *db, const float *dout,
                            const float *inp, const float *W, int N, int C, int OC)
{
    if (dinp) {
        for (int k0 = 0; k0 < OC; k0 += SS_KC) {
            int kc = ss_min_int(SS_KC, OC - k0);
            for (int c0 = 0; c0 < C; c0 += SS_NR) {
                int nc = ss_min_int(SS_NR, C - c0);
                const float *A = dout + k0, *B = W + (size_t)k0 * C + c0;
                if (nc == SS_NR) gemm_rows(N, 1, 1, 2, kc, A, OC, 1, B, C, dinp + c0, C, NULL, nc);
                else gemm_rows(N, 0, 0, 2, kc, A, OC, 1, B, C, dinp + c0, C, NULL, nc);
            }
        }
    }
    if (dW && C > 0) {
        /* A(m, k) = dout[k*OC + m] is strided: an SS_MR-wide sliver of it is packed once per
         * (k block, row tile) into apack[k*SS_MR + m] and reused across all columns of C; the
         * k block is sized so that inp's kc x C block stays near (L1/L2). */
        SS_ALIGNED(float apack[SS_KC * SS_MR + SS_VW]);
        int kcb = ss_min_int(SS_KC, SS_DW_BLOCK_FLOATS / C);
        if (kcb < 16) kcb = 16;
        for (int k0 = 0; k0 < N; k0 += kcb) {
            int kc = ss_min_int(kcb, N - k0);
            for (int o0 = 0; o0 < OC; o0 += SS_MR) {
                int mr = ss_min_int(SS_MR, OC - o0);
                const float *src = dout + (size_t)k0 * OC + o0;
                for (int k = 0; k < kc; k++)
                    for (int j = 0; j < mr; j += SS_VW)
                        SS_STORE(apack + k * SS_MR + j,
                                 SS_LOAD_PART(src + (size_t)k * OC + j, ss_min_int(SS_VW, mr - j), 0.0f));
                for (int c0 = 0; c0 < C; c0 += SS_NR) {
                    int nc = ss_min_int(SS_NR, C - c0);
                    const float *B = inp + (size_t)k0 * C + c0;
                    float *Ct = dW + (size_t)o0 * C + c0;
                    if (mr == SS_MR) {
                        if (nc == SS_NR) gemm_tile(SS_MR, 1, 1, 2, kc, apack, 1, SS_MR, B, C, Ct, C, NULL, nc);
                        else gemm_tile(SS_MR, 0, 0, 2, kc, apack, 1, SS_MR, B, C, Ct, C, NULL, nc);
                    } else {
                        gemm_tile_rows(mr, 0, 0, 2, kc, apack, 1, SS_MR, B, C, Ct, C, NULL, nc);
                    }
                }
            }
        }
    }
    if (db) bias_grad(db, dout, N, OC);
}

/* ==== decode matrix-vector products (batch 1) ================================================== */
/* W(OC,C) in panels of SS_PANEL = 16 rows (shoestring.h): panel p holds W[16p + j][c] at
 * [p][c][j]. Each panel is SS_PV vectors wide; SS_DEC_NP panels run per pass, so every c
 * broadcasts x[c] once into SS_DEC_NP * SS_PV independent FMA chains (AVX-512 4, AVX2 8, NEON 8)
 * with no horizontal sums. Summation over c is in order within each chain. */
#define SS_PV (SS_PANEL / SS_VW)
#define SS_DEC_NP (SS_PV >= 4 ? 2 : 4)

/* y[o0 + j] = acc[j] + b[o0 + j] for the rows of this panel that exist (OC - o0 of them) */
SS_INLINE void dec_store(float *y, const float *b, const ssv *acc, int o0, int OC)
{
    int n = OC - o0 < SS_PANEL ? OC - o0 : SS_PANEL;
    SS_UNROLL for (int v = 0; v < SS_PV; v++) {
        int q = n - v * SS_VW, o = o0 + v * SS_VW;
        ssv a = acc[v];
        if (q >= SS_VW) {
            if (b) a = SS_ADD(a, SS_LOAD(b + o));
            SS_STORE(y + o, a);
        } else if (q > 0) {
            if (b) a = SS_ADD(a, SS_LOAD_PART(b + o, q, 0.0f));
            SS_STORE_PART(y + o, a, q);
        }
    }
}

static void decode_matvec(float *y, const float *Wpk, const float *x, const float *b, int C, int OC)
{
    const size_t ps = (size_t)SS_PANEL * C;     /* floats per panel */
    const int np = (OC + SS_PANEL - 1) / SS_PANEL;
    int p = 0;
    for (; p + SS_DEC_NP <= np; p += SS_DEC_NP) {
        const float *w = Wpk + (size_t)p * ps;
        ssv acc[SS_DEC_NP][SS_PV];
        SS_UNROLL for (int i = 0; i < SS_DEC_NP; i++)
            SS_UNROLL for (int v = 0; v < SS_PV; v++) acc[i][v] = SS_ZERO();
        for (int c = 0; c < C; c++) {
            ssv xc = SS_BCAST(x + c);
            const float *r = w + (size_t)c * SS_PANEL;
            SS_UNROLL for (int i = 0; i < SS_DEC_NP; i++)
                SS_UNROLL for (int v = 0; v < SS_PV; v++)
                    acc[i][v] = SS_FMA(SS_LOAD(r + i * ps + v * SS_VW), xc, acc[i][v]);
        }
        SS_UNROLL for (int i = 0; i < SS_DEC_NP; i++) dec_store(y, b, acc[i], (p + i) * SS_PANEL, OC);
    }
    for (; p < np; p++) {             /* the last panels: two chains over alternate c, then summed */
        const float *w = Wpk + (size_t)p * ps;
        ssv a0[SS_PV], a1[SS_PV];
        SS_UNROLL for (int v = 0; v < SS_PV; v++) a0[v] = a1[v] = SS_ZERO();
        int c = 0;
        for (; c + 2 <= C; c += 2) {
            ssv x0 = SS_BCAST(x + c), x1 = SS_BCAST(x + c + 1);
            const float *r = w + (size_t)c * SS_PANEL;
            SS_UNROLL for (int v = 0; v < SS_PV; v++) {
                a0[v] = SS_FMA(SS_LOAD(r + v * SS_VW), x0, a0[v]);
                a1[v] = SS_FMA(SS_LOAD(r + SS_PANEL + v * SS_VW), x1, a1[v]);
            }
        }
        if (c < C) {
            ssv x0 = SS_BCAST(x + c);
            SS_UNROLL for (int v = 0; v < SS_PV; v++)
                a0[v] = SS_FMA(SS_LOAD(w + (size_t)c * SS_PANEL + v * SS_VW), x0, a0[v]);
        }
        SS_UNROLL for (int v = 0; v < SS_PV; v++) a0[v] = SS_ADD(a0[v], a1[v]);
        dec_store(y, b, a0, p * SS_PANEL, OC);
    }
}

/* int8 panels times a quantised vector: simd_q8_panel (the instruction set's integer dot
 * products, in its simd_<isa>.h) gives acc[j] = sum_b xscale_b * (q_j . xq)_b for one panel;
 * then y = acc * wscale + b. C is a multiple of SS_Q8_BLOCK. An instruction set that defines
 * SS_HAVE_Q8_MATVEC may do the whole product itself (AVX512-VNNI: simd_q8_matvec). */
static void decode_matvec_q8(float *y, const int8_t *Wpk, const float *wscale, const int8_t *xq,
                             const float *xscale, const int32_t *xsum, const float *b, int C,
                             int OC, int dot)
{
#if defined(SS_HAVE_Q8_MATVEC)
    if (simd_q8_matvec(y, Wpk, wscale, xq, xscale, xsum, b, C, OC, dot)) return;
#endif
    const int np = (OC + SS_PANEL - 1) / SS_PANEL, nblk = C / SS_Q8_BLOCK;
    SS_ALIGNED(float acc[SS_PANEL]);
    for (int p = 0; p < np; p++) {
        simd_q8_panel(acc, Wpk + (size_t)p * SS_PANEL * C, xq, xscale, xsum, nblk, dot);
        ssv v[SS_PV];
        SS_UNROLL for (int i = 0; i < SS_PV; i++)
            v[i] = SS_MUL(SS_LOAD(acc + i * SS_VW), SS_LOAD(wscale + p * SS_PANEL + i * SS_VW));
        dec_store(y, b, v, p * SS_PANEL, OC);
    }
}

/* ==== sampling (ss_sample), built with this instruction set's flags ============================ */
#include "sample_body.h"

/* ==== the table ============================================================================== */
const ss_kernels SS_KERNELS_NAME = {
    matmul_forward, matmul_backward, rmsnorm_forward, rmsnorm_backward, adamw_step, sumsq,
    sigmoid_forward, sigmoid_backward, gelu_forward, gelu_backward,
    softmax_forward, softmax_backward, crossentropy_forward,
    decode_matvec, decode_matvec_q8, simd_q8_name,
    matmul_packed_floats, matmul_pack, matmul_forward_packed, sample,
};
