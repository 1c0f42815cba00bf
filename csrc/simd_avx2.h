/* simd_avx2.h: the vector macro layer for AVX2 + FMA (8 float lanes), read by kernels_body.h.
 *
 * Contract of every simd_<isa>.h: define the vector type `ssv`, its lane count SS_VW, the matmul
 * register tile (SS_MR rows x SS_NV vectors), the SS_* operations below, and simd_sumsq().
 * Partial loads read only the first n lanes (the rest take `fill`); partial stores write only n.
 */
#ifndef SS_SIMD_AVX2_H
#define SS_SIMD_AVX2_H

#include <immintrin.h>
#include <stdint.h>

#define SS_ISA_TAG avx2
#define SS_VW 8
#define SS_MR 6 /* 6 x 2 accumulators + 2 B vectors + 1 broadcast = 15 of 16 ymm registers */
#define SS_NV 2
typedef __m256 ssv;

/* lanes [8 - n, 16 - n) of this table are the mask for the first n lanes */
static const int32_t ss_avx2_mask_tbl[16] = {-1, -1, -1, -1, -1, -1, -1, -1, 0, 0, 0, 0, 0, 0, 0, 0};
#define SS_AVX2_MASK(n) _mm256_loadu_si256((const __m256i *)(ss_avx2_mask_tbl + 8 - (n)))

#define SS_ZERO() _mm256_setzero_ps()
#define SS_SET1(f) _mm256_set1_ps(f)
#define SS_LOAD(p) _mm256_loadu_ps(p)
#define SS_STORE(p, v) _mm256_storeu_ps((p), (v))
#define SS_LOAD_PART(p, n, fill) \
    _mm256_blendv_ps(_mm256_set1_ps(fill), _mm256_maskload_ps((p), SS_AVX2_MASK(n)), \
                     _mm256_castsi256_ps(SS_AVX2_MASK(n)))
#define SS_STORE_PART(p, v, n) _mm256_maskstore_ps((p), SS_AVX2_MASK(n), (v))
#define SS_BCAST(p) _mm256_broadcast_ss(p)
#define SS_ADD(a, b) _mm256_add_ps((a), (b))
#define SS_SUB(a, b) _mm256_sub_ps((a), (b))
#define SS_MUL(a, b) _mm256_mul_ps((a), (b))
#define SS_DIV(a, b) _mm256_div_ps((a), (b))
#define SS_FMA(a, b, c) _mm256_fmadd_ps((a), (b), (c))    /* a*b + c */
#define SS_FNMA(a, b, c) _mm256_fnmadd_ps((a), (b), (c))  /* c - a*b */
#define SS_MAX(a, b) _mm256_max_ps((a), (b))
#define SS_MIN(a, b) _mm256_min_ps((a), (b))
#define SS_SQRT(a) _mm256_sqrt_ps(a)
#define SS_ROUND(a) _mm256_round_ps((a), _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC)
/* 2^n for a vector of integral floats n in [-127, 127] (n = -127 gives 0) */
#define SS_POW2I(nf) \
    _mm256_castsi256_ps(_mm256_slli_epi32( \
        _mm256_add_epi32(_mm256_cvtps_epi32(nf), _mm256_set1_epi32(127)), 23))

static inline float ss_avx2_hsum(__m256 v)
{
    __m128 s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
    s = _mm_add_ps(s, _mm_movehl_ps(s, s));
    s = _mm_add_ss(s, _mm_shuffle_ps(s, s, 1));
    return _mm_cvtss_f32(s);
}
static inline float ss_avx2_hmax(__m256 v)
{
    __m128 s = _mm_max_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
    s = _mm_max_ps(s, _mm_movehl_ps(s, s));
    s = _mm_max_ss(s, _mm_shuffle_ps(s, s, 1));
    return _mm_cvtss_f32(s);
}
#define SS_HSUM(v) ss_avx2_hsum(v)
#define SS_HMAX(v) ss_avx2_hmax(v)

/* Sum of squares in float64: 4 double accumulators of 4 lanes, fixed order (lane i of the
 * accumulators takes elements i mod 16), tail added last in index order. */
static double simd_sumsq(const float *x, int64_t n)
{
    __m256d a0 = _mm256_setzero_pd(), a1 = a0, a2 = a0, a3 = a0;
    int64_t i = 0;
    for (; i + 16 <= n; i += 16) {
        __m256d d0 = _mm256_cvtps_pd(_mm_loadu_ps(x + i));
        __m256d d1 = _mm256_cvtps_pd(_mm_loadu_ps(x + i + 4));
        __m256d d2 = _mm256_cvtps_pd(_mm_loadu_ps(x + i + 8));
        __m256d d3 = _mm256_cvtps_pd(_mm_loadu_ps(x + i + 12));
        a0 = _mm256_fmadd_pd(d0, d0, a0);
        a1 = _mm256_fmadd_pd(d1, d1, a1);
        a2 = _mm256_fmadd_pd(d2, d2, a2);
        a3 = _mm256_fmadd_pd(d3, d3, a3);
    }
    a0 = _mm256_add_pd(_mm256_add_pd(a0, a1), _mm256_add_pd(a2, a3));
    double lanes[4];
    _mm256_storeu_pd(lanes, a0);
    double s = (lanes[0] + lanes[1]) + (lanes[2] + lanes[3]);
    for (; i < n; i++) s += (double)x[i] * (double)x[i];
    return s;
}

/* int8 decode panel (simd_q8_x86.h): vpmaddubsw/vpmaddwd */
#include "simd_q8_x86.h"
static void simd_q8_panel(float *out, const int8_t *w, const int8_t *xq, const float *xscale,
                          const int32_t *xsum, int nblk, int dot)
{
    (void)xsum;
    (void)dot;
    simd_q8_panel_avx2(out, w, xq, xscale, nblk);
}
static const char *simd_q8_name(int dot) { (void)dot; return "avx2"; }

#endif /* SS_SIMD_AVX2_H */
