/* ss_internal.h: the kernel table that run-time dispatch fills, shared by every kernels_*.c.
 *
 * Each instruction set provides one `const ss_kernels ss_kernels_<isa>` table (kernels_scalar.c,
 * kernels_avx2.c, kernels_avx512.c, kernels_neon.c); dispatch.c picks one at start-up and the
 * public ss_* functions of shoestring.h call through it. Signatures match shoestring.h.
 */
#ifndef SS_INTERNAL_H
#define SS_INTERNAL_H

#include "shoestring.h"

enum { SS_ISA_SCALAR = 0, SS_ISA_AVX2 = 1, SS_ISA_AVX512 = 2, SS_ISA_NEON = 3, SS_ISA_COUNT = 4 };

typedef struct ss_kernels {
    void (*matmul_forward)(float *out, const float *inp, const float *W, const float *b,
                           int N, int C, int OC);
    void (*matmul_backward)(float *dinp, float *dW, float *db, const float *dout,
                            const float *inp, const float *W, int N, int C, int OC);
    void (*rmsnorm_forward)(float *out, float *rstd, const float *inp, const float *gain,
                            int N, int H, float eps);
    void (*rmsnorm_backward)(float *dinp, float *dgain, const float *dout, const float *inp,
                             const float *gain, const float *rstd, int N, int H);
    void (*adamw_step)(float *params, const float *grads, float *m, float *v, int64_t n,
                       int64_t n_decay, float lr, float beta1, float beta2, float eps,
                       float weight_decay, float grad_scale, float bc1, float bc2);
    double (*sumsq)(const float *x, int64_t n);
    void (*sigmoid_forward)(float *out, const float *inp, int64_t n);
    void (*sigmoid_backward)(float *dinp, const float *dout, const float *out, int64_t n);
    void (*gelu_forward)(float *out, const float *inp, int64_t n);
    void (*gelu_backward)(float *dinp, const float *dout, const float *inp, int64_t n);
    void (*softmax_forward)(float *out, const float *inp, int N, int X);
    void (*softmax_backward)(float *dinp, const float *dout, const float *out, int N, int X);
    void (*crossentropy_forward)(float *losses, float *dlogits, const float *logits,
                                 const int32_t *targets, int N, int V, float dscale);
    /* decode (batch 1): y(OC) = W(OC,C) . x + b over 16-row panels (shoestring.h), float32 and
     * int8 (C a multiple of 32 there; dot: use the dot-product instructions when the CPU has them) */
    void (*decode_matvec)(float *y, const float *Wpk, const float *x, const float *b, int C, int OC);
    void (*decode_matvec_q8)(float *y, const int8_t *Wpk, const float *wscale, const int8_t *xq,
                             const float *xscale, const int32_t *xsum, const float *b, int C,
                             int OC, int dot);
    /* name of the int8 kernel decode_matvec_q8 runs with this `dot` setting on this CPU */
    const char *(*q8_name)(int dot);
    int64_t (*matmul_packed_floats)(int C, int OC);
    void (*matmul_pack)(float *packed, const float *W, int C, int OC);
    void (*matmul_forward_packed)(float *out, const float *inp, const float *W,
                                  const float *packed, const float *b, int N, int C, int OC);
    /* ss_sample (sample_body.h), built with this table's flags */
    int (*sample)(float *work, const float *logits, const uint8_t *allowed, int V,
                  float temperature, int top_k, float top_p, uint64_t *rng);
} ss_kernels;

/* Panels of every table's matmul are at most this many columns wide, so a packed W(OC,C) never
 * needs more than C * (OC + SS_PACK_NR_MAX) floats under any instruction set. */
#define SS_PACK_NR_MAX 64

extern const ss_kernels ss_kernels_scalar;
#ifdef SS_HAVE_AVX2
extern const ss_kernels ss_kernels_avx2;
#endif
#ifdef SS_HAVE_AVX512
extern const ss_kernels ss_kernels_avx512;
#endif
#ifdef SS_HAVE_NEON
extern const ss_kernels ss_kernels_neon;
#endif

/* The table in use (never NULL). */
const ss_kernels *ss_kernels_active(void);

/* Panel height of the decode matrices and block width of the int8 activation scales. */
#define SS_PANEL 16
#define SS_Q8_BLOCK 32

/* CPU features beyond the table's baseline, detected once by dispatch.c (0 or 1). */
int ss_cpu_has_avx512vnni(void);    /* AVX512-VNNI and AVX512BW */
int ss_cpu_has_armdot(void);        /* ARMv8.2 dot product (SDOT) */
/* whether decode_matvec_q8 may use the dot-product instructions (ss_int8_dot_set) */
int ss_int8_dot_enabled(void);

#endif /* SS_INTERNAL_H */
