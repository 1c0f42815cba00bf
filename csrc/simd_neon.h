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

#endif /* SS_SIMD_NEON_H */
