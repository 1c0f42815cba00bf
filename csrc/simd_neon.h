/* simd_neon.h: the vector macro layer for ARM NEON (4 float lanes), read by kernels_body.h.
 *
 * Builds for aarch64 (NEON is baseline) and for 32-bit ARM with -mfpu=neon. aarch64-only
 * intrinsics (fused multiply-add, division, square root, rounding, across-vector reductions)
 * are guarded by SS_NEON_A64 with ARMv7 fallbacks: vmla (unfused), reciprocal and reciprocal
 * square-root estimates refined by Newton steps, pairwise reductions.
 */
#ifndef SS_SIMD_NEON_H
#define SS_SIMD_NEON_H

#include <arm_neon.h>
#include <stdint.h>

#if defined(__aarch64__) || defined(_M_ARM64)
#define SS_NEON_A64 1
#endif

#define SS_ISA_TAG neon
#define SS_VW 4
#if defined(SS_NEON_A64)
#define SS_MR 8 /* 8 x 3 accumulators + 3 B vectors + 1 broadcast of 32 q registers */
#define SS_NV 3
#else
#define SS_MR 4 /* 4 x 2 accumulators + 2 B vectors + 1 broadcast of 16 q registers */
#define SS_NV 2
#endif
typedef float32x4_t ssv;

static inline float32x4_t ss_neon_load_part(const float *p, int n, float fill)
{
    float t[4] = {fill, fill, fill, fill};
    for (int i = 0; i < n; i++) t[i] = p[i];
    return vld1q_f32(t);
}
static inline void ss_neon_store_part(float *p, float32x4_t v, int n)
{
    float t[4];
    vst1q_f32(t, v);
    for (int i = 0; i < n; i++) p[i] = t[i];
}

#define SS_ZERO() vdupq_n_f32(0.0f)
#define SS_SET1(f) vdupq_n_f32(f)
#define SS_LOAD(p) vld1q_f32(p)
#define SS_STORE(p, v) vst1q_f32((p), (v))
#define SS_LOAD_PART(p, n, fill) ss_neon_load_part((p), (n), (fill))
#define SS_STORE_PART(p, v, n) ss_neon_store_part((p), (v), (n))
#define SS_BCAST(p) vld1q_dup_f32(p)
#define SS_ADD(a, b) vaddq_f32((a), (b))
#define SS_SUB(a, b) vsubq_f32((a), (b))
#define SS_MUL(a, b) vmulq_f32((a), (b))
#define SS_MAX(a, b) vmaxq_f32((a), (b))
#define SS_MIN(a, b) vminq_f32((a), (b))

#if defined(SS_NEON_A64) || defined(__ARM_FEATURE_FMA)
#define SS_FMA(a, b, c) vfmaq_f32((c), (a), (b))
#define SS_FNMA(a, b, c) vfmsq_f32((c), (a), (b))
#else
#define SS_FMA(a, b, c) vmlaq_f32((c), (a), (b))
#define SS_FNMA(a, b, c) vmlsq_f32((c), (a), (b))
#endif

#if defined(SS_NEON_A64)
#define SS_DIV(a, b) vdivq_f32((a), (b))
#define SS_SQRT(a) vsqrtq_f32(a)
#define SS_ROUND(a) vrndnq_f32(a)
#define SS_HSUM(v) vaddvq_f32(v)
#define SS_HMAX(v) vmaxvq_f32(v)
#else
/* a / b: reciprocal estimate and three Newton steps (full float precision away from 0/inf) */
static inline float32x4_t ss_neon_div(float32x4_t a, float32x4_t b)
{
    float32x4_t r = vrecpeq_f32(b);
    r = vmulq_f32(r, vrecpsq_f32(b, r));
    r = vmulq_f32(r, vrecpsq_f32(b, r));
    r = vmulq_f32(r, vrecpsq_f32(b, r));
    return vmulq_f32(a, r);
}
/* sqrt(a) = a * rsqrt(a), with sqrt(0) = 0 */
static inline float32x4_t ss_neon_sqrt(float32x4_t a)
{
    float32x4_t r = vrsqrteq_f32(a);
    r = vmulq_f32(r, vrsqrtsq_f32(vmulq_f32(a, r), r));
    r = vmulq_f32(r, vrsqrtsq_f32(vmulq_f32(a, r), r));
    r = vmulq_f32(r, vrsqrtsq_f32(vmulq_f32(a, r), r));
    uint32x4_t zero = vceqq_f32(a, vdupq_n_f32(0.0f));
    return vbslq_f32(zero, a, vmulq_f32(a, r));
}
/* round to nearest (ties away from zero; only used on |a| < 2^22 by the exp kernel) */
static inline float32x4_t ss_neon_round(float32x4_t a)
{
    float32x4_t half = vbslq_f32(vdupq_n_u32(0x80000000u), a, vdupq_n_f32(0.5f));
    return vcvtq_f32_s32(vcvtq_s32_f32(vaddq_f32(a, half)));
}
static inline float ss_neon_hsum(float32x4_t v)
{
    float32x2_t s = vadd_f32(vget_low_f32(v), vget_high_f32(v));
    return vget_lane_f32(vpadd_f32(s, s), 0);
}
static inline float ss_neon_hmax(float32x4_t v)
{
    float32x2_t s = vmax_f32(vget_low_f32(v), vget_high_f32(v));
    return vget_lane_f32(vpmax_f32(s, s), 0);
}
#define SS_DIV(a, b) ss_neon_div((a), (b))
#define SS_SQRT(a) ss_neon_sqrt(a)
#define SS_ROUND(a) ss_neon_round(a)
#define SS_HSUM(v) ss_neon_hsum(v)
#define SS_HMAX(v) ss_neon_hmax(v)
#endif

#define SS_POW2I(nf) \
    vreinterpretq_f32_s32(vshlq_n_s32(vaddq_s32(vcvtq_s32_f32(nf), vdupq_n_s32(127)), 23))

/* Sum of squares in float64, fixed order: aarch64 uses 2 x 2 double lanes, ARMv7 scalar
 * doubles in 4 interleaved partial sums (element i goes to sum i mod 4). */
static double simd_sumsq(const float *x, int64_t n)
{
    int64_t i = 0;
#if defined(SS_NEON_A64)
    float64x2_t a0 = vdupq_n_f64(0.0), a1 = a0;
    for (; i + 4 <= n; i += 4) {
        float32x4_t f = vld1q_f32(x + i);
        float64x2_t lo = vcvt_f64_f32(vget_low_f32(f)), hi = vcvt_high_f64_f32(f);
        a0 = vfmaq_f64(a0, lo, lo);
        a1 = vfmaq_f64(a1, hi, hi);
    }
    double s = (vgetq_lane_f64(a0, 0) + vgetq_lane_f64(a1, 0))
             + (vgetq_lane_f64(a0, 1) + vgetq_lane_f64(a1, 1));
#else
    double s0 = 0, s1 = 0, s2 = 0, s3 = 0;
    for (; i + 4 <= n; i += 4) {
        s0 += (double)x[i] * x[i];
        s1 += (double)x[i + 1] * x[i + 1];
        s2 += (double)x[i + 2] * x[i + 2];
        s3 += (double)x[i + 3] * x[i + 3];
    }
    double s = (s0 + s2) + (s1 + s3);
#endif
    for (; i < n; i++) s += (double)x[i] * (double)x[i];
    return s;
}

/* ---- int8 decode panel --------------------------------------------------------------------
 * simd_q8_panel(out, w, xq, xscale, xsum, nblk, dot): out[j] = sum_b xscale[b] * (q_j . xq)_b
 * for one int8 panel of 16 rows (bytes [g][j][k] = q[j][4g + k], shoestring.h); block sums
 * exact in int32. With the ARMv8.2 dot product (aarch64, where the CPU has it and `dot` is on):
 * SDOT sums four s8 x s8 products per int32 lane, the four x bytes of a group picked by lane.
 * Otherwise widening multiplies: vmull_s8 (16-bit products, |q x| <= 127 * 127) and vpadal
 * (pairwise add into int32) give per row the sums of columns (0,1) and (2,3), added at the
 * end of the block. */
#include <string.h>
#include "ss_internal.h"

static void simd_q8_panel_mull(float *out, const int8_t *w, const int8_t *xq, const float *xscale,
                               int nblk)
{
    float32x4_t f[4];
    for (int i = 0; i < 4; i++) f[i] = vdupq_n_f32(0.0f);
    for (int bk = 0; bk < nblk; bk++) {
        const int8_t *wb = w + (size_t)bk * SS_Q8_BLOCK * 16, *xb = xq + bk * SS_Q8_BLOCK;
        int32x4_t a[8];
        for (int i = 0; i < 8; i++) a[i] = vdupq_n_s32(0);
        for (int g = 0; g < SS_Q8_BLOCK / 4; g++) {
            int32_t x4;
            memcpy(&x4, xb + 4 * g, 4);
            int8x8_t xx = vreinterpret_s8_s32(vdup_n_s32(x4));        /* x0 x1 x2 x3 x0 x1 x2 x3 */
            const int8_t *r = wb + g * 64;
            for (int i = 0; i < 4; i++) {                             /* rows 4i .. 4i+3 */
                int8x16_t wv = vld1q_s8(r + 16 * i);
                a[2 * i] = vpadalq_s16(a[2 * i], vmull_s8(vget_low_s8(wv), xx));
                a[2 * i + 1] = vpadalq_s16(a[2 * i + 1], vmull_s8(vget_high_s8(wv), xx));
            }
        }
        float32x4_t s = vdupq_n_f32(xscale[bk]);
        for (int i = 0; i < 4; i++) {
            /* a[2i] = [r c01, r c23, r+1 c01, r+1 c23]: pairwise sums give rows r, r+1 */
            int32x2_t lo = vpadd_s32(vget_low_s32(a[2 * i]), vget_high_s32(a[2 * i]));
            int32x2_t hi = vpadd_s32(vget_low_s32(a[2 * i + 1]), vget_high_s32(a[2 * i + 1]));
            f[i] = SS_FMA(vcvtq_f32_s32(vcombine_s32(lo, hi)), s, f[i]);
        }
    }
    for (int i = 0; i < 4; i++) vst1q_f32(out + 4 * i, f[i]);
}

#if defined(SS_NEON_A64) && (defined(__clang__) || (defined(__GNUC__) && __GNUC__ >= 10))
#define SS_Q8_WITH_DOT 1
#if defined(__clang__)
#define SS_TARGET_DOT __attribute__((target("dotprod")))
#else
#define SS_TARGET_DOT __attribute__((target("arch=armv8.2-a+dotprod")))
#endif
SS_TARGET_DOT
static void simd_q8_panel_dot(float *out, const int8_t *w, const int8_t *xq, const float *xscale,
                              int nblk)
{
    float32x4_t f0 = vdupq_n_f32(0.0f), f1 = f0, f2 = f0, f3 = f0;
    for (int bk = 0; bk < nblk; bk++) {
        const int8_t *wb = w + (size_t)bk * SS_Q8_BLOCK * 16, *xb = xq + bk * SS_Q8_BLOCK;
        int32x4_t a0 = vdupq_n_s32(0), a1 = a0, a2 = a0, a3 = a0;   /* rows 0-3, 4-7, 8-11, 12-15 */
        for (int h = 0; h < SS_Q8_BLOCK / 16; h++) {
            int8x16_t xv = vld1q_s8(xb + 16 * h);                   /* four groups of 4 */
            const int8_t *r = wb + h * 4 * 64;
#define SS_DOT_GROUP(L) \
            a0 = vdotq_laneq_s32(a0, vld1q_s8(r + 64 * (L)), xv, L); \
            a1 = vdotq_laneq_s32(a1, vld1q_s8(r + 64 * (L) + 16), xv, L); \
            a2 = vdotq_laneq_s32(a2, vld1q_s8(r + 64 * (L) + 32), xv, L); \
            a3 = vdotq_laneq_s32(a3, vld1q_s8(r + 64 * (L) + 48), xv, L);
            SS_DOT_GROUP(0)
            SS_DOT_GROUP(1)
            SS_DOT_GROUP(2)
            SS_DOT_GROUP(3)
#undef SS_DOT_GROUP
        }
        float32x4_t s = vdupq_n_f32(xscale[bk]);
        f0 = vfmaq_f32(f0, vcvtq_f32_s32(a0), s);
        f1 = vfmaq_f32(f1, vcvtq_f32_s32(a1), s);
        f2 = vfmaq_f32(f2, vcvtq_f32_s32(a2), s);
        f3 = vfmaq_f32(f3, vcvtq_f32_s32(a3), s);
    }
    vst1q_f32(out, f0);
    vst1q_f32(out + 4, f1);
    vst1q_f32(out + 8, f2);
    vst1q_f32(out + 12, f3);
}
#endif

static void simd_q8_panel(float *out, const int8_t *w, const int8_t *xq, const float *xscale,
                          const int32_t *xsum, int nblk, int dot)
{
    (void)xsum;
#if defined(SS_Q8_WITH_DOT)
    if (dot && ss_cpu_has_armdot()) {
        simd_q8_panel_dot(out, w, xq, xscale, nblk);
        return;
    }
#endif
    (void)dot;
    simd_q8_panel_mull(out, w, xq, xscale, nblk);
}

static const char *simd_q8_name(int dot)
{
#if defined(SS_Q8_WITH_DOT)
    if (dot && ss_cpu_has_armdot()) return "neon-dotprod";
#endif
    (void)dot;
    return "neon";
}

#endif /* SS_SIMD_NEON_H */
