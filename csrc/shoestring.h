/* shoestring.h: the public C API of shoestring, the only header the cffi build reads.
 *
 * Contract: C trusts its inputs (Python validates dtype, contiguity and shapes once), is pure
 * compute, never allocates in hot loops, never prints, never exits. Backward kernels ADD into
 * gradient buffers; the caller zeroes them once per step. A NULL gradient pointer skips it.
 * All tensors are row-major, C-contiguous, float32 unless stated otherwise.
 *
 * Dimension letters (see shared MODEL.md): B batch, T time steps, V vocabulary, C embedding
 * width, H hidden width, X experts, K active experts, L layers, I a layer's input width.
 * Kernel-generic letters: N rows, C columns (reduction width), OC output columns.
 *
 * Argument order (llm.c style): outputs, then saved activations, then inputs, then weights,
 * then sizes and scalars.
 *
 * cffi reads this file with every line that starts with '#' removed, so declarations must not
 * depend on the preprocessor.
 */
#ifndef SHOESTRING_H
#define SHOESTRING_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

/* ---------------------------------------------------------------------------------------- */
/* Dispatch: the instruction set is chosen once (first call or ss_isa_set).                 */
/* ISA ids: 0 scalar, 1 avx2 (+fma), 2 avx512 (avx512f), 3 neon. Masks have bit (1 << id).  */
/* ---------------------------------------------------------------------------------------- */
int ss_isa_active(void);            /* id of the ISA in use */
int ss_isa_compiled_mask(void);     /* ISAs compiled into this build */
int ss_isa_cpu_mask(void);          /* ISAs this CPU can run (compiled or not) */
int ss_isa_set(int isa);            /* 0 ok, -1 not compiled in, -2 CPU lacks it, -3 bad id */
const char *ss_isa_name(int isa);   /* "scalar", "avx2", "avx512", "neon", or "unknown" */
const char *ss_build_info(void);    /* compiler and flags this module was built with */

/* ---------------------------------------------------------------------------------------- */
/* matmul: out(N,OC) = inp(N,C) . W(OC,C)^T + b(OC)          (b may be NULL: no bias)       */
/* backward: dinp(N,C) += dout(N,OC) . W(OC,C);  dW(OC,C) += dout^T . inp;  db(OC) += sum_N */
/* ---------------------------------------------------------------------------------------- */
void ss_matmul_forward(float *out, const float *inp, const float *W, const float *b,
                       int N, int C, int OC);
void ss_matmul_backward(float *dinp, float *dW, float *db,
                        const float *dout, const float *inp, const float *W,
                        int N, int C, int OC);

/* ---------------------------------------------------------------------------------------- */
/* RMSNorm over rows of width H: out = gain * inp * rstd, rstd(N) = 1/sqrt(mean(inp^2)+eps) */
/* ---------------------------------------------------------------------------------------- */
void ss_rmsnorm_forward(float *out, float *rstd, const float *inp, const float *gain,
                        int N, int H, float eps);
void ss_rmsnorm_backward(float *dinp, float *dgain, const float *dout, const float *inp,
                         const float *gain, const float *rstd, int N, int H);

/* ---------------------------------------------------------------------------------------- */
/* AdamW over one flat buffer of n floats; decoupled weight decay only on [0, n_decay).      */
/* g = grads * grad_scale (the global-norm clip folded in);                                 */
/* m = b1 m + (1-b1) g; v = b2 v + (1-b2) g^2;                                              */
/* p -= lr * ( (m/bias_correction1) / (sqrt(v/bias_correction2) + eps) + wd * p [decay] )   */
/* ---------------------------------------------------------------------------------------- */
void ss_adamw_step(float *params, const float *grads, float *m, float *v,
                   int64_t n, int64_t n_decay, float lr, float beta1, float beta2, float eps,
                   float weight_decay, float grad_scale,
                   float bias_correction1, float bias_correction2);
/* sum of squares in float64 with a fixed summation order (global gradient norm) */
double ss_sumsq(const float *x, int64_t n);

/* ---------------------------------------------------------------------------------------- */
/* Elementwise and row helpers. Backward kernels ADD into dinp.                              */
/* ---------------------------------------------------------------------------------------- */
void ss_sigmoid_forward(float *out, const float *inp, int64_t n);
void ss_sigmoid_backward(float *dinp, const float *dout, const float *out, int64_t n);
void ss_gelu_forward(float *out, const float *inp, int64_t n);          /* exact: x*Phi(x) */
void ss_gelu_backward(float *dinp, const float *dout, const float *inp, int64_t n);
void ss_softmax_forward(float *out, const float *inp, int N, int X);    /* rows of width X */
void ss_softmax_backward(float *dinp, const float *dout, const float *out, int N, int X);

/* Cross-entropy over rows of logits(N,V) with targets(N) in [0,V): losses(N) = -log softmax.  */
/* Fused backward: when dlogits is not NULL it is SET to (softmax - onehot(target)) * dscale. */
void ss_crossentropy_forward(float *losses, float *dlogits, const float *logits,
                             const int32_t *targets, int N, int V, float dscale);

/* Embedding: out(N,C) = WE[tokens(N)];  backward: dWE[tokens[n]] += dout[n] (in row order).   */
void ss_embedding_forward(float *out, const int32_t *tokens, const float *WE, int N, int C);
void ss_embedding_backward(float *dWE, const float *dout, const int32_t *tokens, int N, int C);

/* ---------------------------------------------------------------------------------------- */
/* MoE-GRU layer, model and decode kernels: declared below this line by csrc/moegru.c etc.   */
/* ---------------------------------------------------------------------------------------- */

#ifdef __cplusplus
}
#endif

#endif /* SHOESTRING_H */
