/* simd_avx512.h: the vector macro layer for AVX-512F (16 float lanes), read by kernels_body.h.
 * Only AVX512F intrinsics (plus AVX2/FMA), so any AVX-512 CPU runs it. Same contract as
 * simd_avx2.h; partial loads and stores are masked (no access past lane n).
 */
#ifndef SS_SIMD_AVX512_H
#define SS_SIMD_AVX512_H

#include <immintrin.h>
#include <stdint.h>

#define SS_ISA_TAG avx512
#define SS_VW 16
#define SS_MR 8 /* 8 x 3 accumulators + 3 B vectors (broadcasts fold into the FMA) of 32 zmm */
#define SS_NV 3
typedef __m512 ssv;

#define SS_AVX512_MASK(n) ((__mmask16)((1u << (n)) - 1u))
#define SS_ZERO() _mm512_setzero_ps()
#define SS_SET1(f) _mm512_set1_ps(f)
#define SS_LOAD(p) _mm512_loadu_ps(p)
#define SS_STORE(p, v) _mm512_storeu_ps((p), (v))
#define SS_LOAD_PART(p, n, fill) _mm512_mask_loadu_ps(_mm512_set1_ps(fill), SS_AVX512_MASK(n), (p))
#define SS_STORE_PART(p, v, n) _mm512_mask_storeu_ps((p), SS_AVX512_MASK(n), (v))
#define SS_BCAST(p) _mm512_set1_ps(*(p))
#define SS_ADD(a, b) _mm512_add_ps((a), (b))
#define SS_SUB(a, b) _mm512_sub_ps((a), (b))
#define SS_MUL(a, b) _mm512_mul_ps((a), (b))
#define SS_DIV(a, b) _mm512_div_ps((a), (b))
#define SS_FMA(a, b, c) _mm512_fmadd_ps((a), (b), (c))
#define SS_FNMA(a, b, c) _mm512_fnmadd_ps((a), (b), (c))
#define SS_MAX(a, b) _mm512_max_ps((a), (b))
#define SS_MIN(a, b) _mm512_min_ps((a), (b))
#define SS_SQRT(a) _mm512_sqrt_ps(a)
#define SS_ROUND(a) _mm512_roundscale_ps((a), _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC)
#define SS_POW2I(nf) \
    _mm512_castsi512_ps(_mm512_slli_epi32( \
        _mm512_add_epi32(_mm512_cvtps_epi32(nf), _mm512_set1_epi32(127)), 23))
#define SS_HSUM(v) _mm512_reduce_add_ps(v)
#define SS_HMAX(v) _mm512_reduce_max_ps(v)

/* Sum of squares in float64: 4 accumulators of 8 double lanes, fixed order, tail last. */
static double simd_sumsq(const float *x, int64_t n)
{
    __m512d a0 = _mm512_setzero_pd(), a1 = a0, a2 = a0, a3 = a0;
    int64_t i = 0;
    for (; i + 32 <= n; i += 32) {
        __m512d d0 = _mm512_cvtps_pd(_mm256_loadu_ps(x + i));
        __m512d d1 = _mm512_cvtps_pd(_mm256_loadu_ps(x + i + 8));
        __m512d d2 = _mm512_cvtps_pd(_mm256_loadu_ps(x + i + 16));
        __m512d d3 = _mm512_cvtps_pd(_mm256_loadu_ps(x + i + 24));
        a0 = _mm512_fmadd_pd(d0, d0, a0);
        a1 = _mm512_fmadd_pd(d1, d1, a1);
        a2 = _mm512_fmadd_pd(d2, d2, a2);
        a3 = _mm512_fmadd_pd(d3, d3, a3);
    }
    a0 = _mm512_add_pd(_mm512_add_pd(a0, a1), _mm512_add_pd(a2, a3));
    double lanes[8];
    _mm512_storeu_pd(lanes, a0);
    double s = ((lanes[0] + lanes[1]) + (lanes[2] + lanes[3]))
             + ((lanes[4] + lanes[5]) + (lanes[6] + lanes[7]));
    for (; i < n; i++) s += (double)x[i] * (double)x[i];
    return s;
}

/* int8 decode (simd_q8_x86.h): with AVX512-VNNI, where the CPU has it, the whole matrix-vector
 * product in one function (simd_q8_matvec returns 1); otherwise the AVX2 panel code (this file
 * is compiled with -mavx2 -mfma too). Compilers too old for the VNNI intrinsics (GCC < 8,
 * clang < 6) build only the AVX2 path. */
#if defined(_MSC_VER) || (defined(__clang__) && __clang_major__ >= 6) \
    || (!defined(__clang__) && defined(__GNUC__) && __GNUC__ >= 8)
#define SS_Q8_WITH_VNNI 1
#endif
#include "simd_q8_x86.h"
#define SS_HAVE_Q8_MATVEC 1
static int simd_q8_matvec(float *y, const int8_t *Wpk, const float *wscale, const int8_t *xq,
                          const float *xscale, const int32_t *xsum, const float *b, int C, int OC,
                          int dot)
{
#if defined(SS_Q8_WITH_VNNI)
    if (dot && ss_cpu_has_avx512vnni()) {
        simd_q8_matvec_vnni(y, Wpk, wscale, xq, xscale, xsum, b, C, OC);
        return 1;
    }
#endif
    (void)y, (void)Wpk, (void)wscale, (void)xq, (void)xscale, (void)xsum, (void)b, (void)C;
    (void)OC, (void)dot;
    return 0;
}
/* the panels when simd_q8_matvec declined: no VNNI here (or dot products turned off) */
static void simd_q8_panel(float *out, const int8_t *w, const int8_t *xq, const float *xscale,
                          const int32_t *xsum, int nblk, int dot)
{
    (void)xsum;
    (void)dot;
    simd_q8_panel_avx2(out, w, xq, xscale, nblk);
}
static const char *simd_q8_name(int dot)
{
#if defined(SS_Q8_WITH_VNNI)
    if (dot && ss_cpu_has_avx512vnni()) return "avx512-vnni";
#endif
    (void)dot;
    return "avx2";
}

#endif /* SS_SIMD_AVX512_H */
