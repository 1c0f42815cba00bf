/* simd_q8_x86.h: the int8 decode panel for x86 (read by simd_avx2.h and simd_avx512.h).
 *
 * For one int8 panel of 16 rows (bytes [g][j][k] = q[j][4g + k], shoestring.h) and a quantised
 * vector xq (nblk blocks of 32): out[j] = sum_b xscale[b] * sum_{c in b} q[j][c] * xq[c], the
 * block sums exact in int32 (simd_q8_panel_avx2; with VNNI, q8_panel_sums_vnni inside
 * simd_q8_matvec_vnni, which does the whole matrix-vector product).
 *
 * AVX2: 16 rows x 4 bytes = two 256-bit registers per group of 4 columns. vpmaddubsw multiplies
 * unsigned by signed bytes, so |x| goes unsigned and x's sign moves onto q (vpsignb); the int16
 * pair sums (at most 2 * 127 * 127, no saturation: both sides lie in [-127, 127]) are widened
 * and summed by vpmaddwd. AVX512-VNNI (with AVX512BW; only where the CPU has them, `dot` on):
 * vpdpbusd sums four u8 x s8 products per int32 lane in one instruction; q is made unsigned by
 * flipping its sign bit (q + 128), and 128 * sum(xq over the block) = 128 * xsum[b] is taken off.
 */
#ifndef SS_SIMD_Q8_X86_H
#define SS_SIMD_Q8_X86_H

#include <immintrin.h>
#include <stdint.h>
#include <string.h>
#include "ss_internal.h"

static inline int32_t ss_q8_load4(const int8_t *p)
{
    int32_t v;
    memcpy(&v, p, 4);
    return v;
}

static void simd_q8_panel_avx2(float *out, const int8_t *w, const int8_t *xq, const float *xscale,
                               int nblk)
{
    const __m256i ones = _mm256_set1_epi16(1);
    __m256 f0 = _mm256_setzero_ps(), f1 = f0;
    for (int bk = 0; bk < nblk; bk++) {
        const int8_t *wb = w + (size_t)bk * SS_Q8_BLOCK * 16, *xb = xq + bk * SS_Q8_BLOCK;
        __m256i a0 = _mm256_setzero_si256(), a1 = a0, a2 = a0, a3 = a0;   /* rows 0-7, 8-15, x2 */
        for (int g = 0; g < SS_Q8_BLOCK / 4; g += 2) {
            __m256i x0 = _mm256_set1_epi32(ss_q8_load4(xb + 4 * g));
            __m256i x1 = _mm256_set1_epi32(ss_q8_load4(xb + 4 * g + 4));
            __m256i ax0 = _mm256_sign_epi8(x0, x0), ax1 = _mm256_sign_epi8(x1, x1);
            const int8_t *r = wb + g * 64;
            __m256i w0 = _mm256_loadu_si256((const __m256i *)r);
            __m256i w1 = _mm256_loadu_si256((const __m256i *)(r + 32));
            __m256i w2 = _mm256_loadu_si256((const __m256i *)(r + 64));
            __m256i w3 = _mm256_loadu_si256((const __m256i *)(r + 96));
            a0 = _mm256_add_epi32(a0, _mm256_madd_epi16(_mm256_maddubs_epi16(ax0, _mm256_sign_epi8(w0, x0)), ones));
            a1 = _mm256_add_epi32(a1, _mm256_madd_epi16(_mm256_maddubs_epi16(ax0, _mm256_sign_epi8(w1, x0)), ones));
            a2 = _mm256_add_epi32(a2, _mm256_madd_epi16(_mm256_maddubs_epi16(ax1, _mm256_sign_epi8(w2, x1)), ones));
            a3 = _mm256_add_epi32(a3, _mm256_madd_epi16(_mm256_maddubs_epi16(ax1, _mm256_sign_epi8(w3, x1)), ones));
        }
        __m256 s = _mm256_set1_ps(xscale[bk]);
        f0 = _mm256_fmadd_ps(_mm256_cvtepi32_ps(_mm256_add_epi32(a0, a2)), s, f0);
        f1 = _mm256_fmadd_ps(_mm256_cvtepi32_ps(_mm256_add_epi32(a1, a3)), s, f1);
    }
    _mm256_storeu_ps(out, f0);
    _mm256_storeu_ps(out + 8, f1);
}

#if defined(SS_Q8_WITH_VNNI)
#if defined(__GNUC__) || defined(__clang__)
#define SS_TARGET_VNNI __attribute__((target("avx512f,avx512bw,avx512vnni")))
#else
#define SS_TARGET_VNNI
#endif
SS_TARGET_VNNI
static inline __m512 q8_panel_sums_vnni(const int8_t *w, const int8_t *xq, const float *xscale,
                                        const int32_t *xsum, int nblk)
{
    const __m512i flip = _mm512_set1_epi8((char)0x80);
    __m512 f = _mm512_setzero_ps();
    for (int bk = 0; bk < nblk; bk++) {
        const int8_t *wb = w + (size_t)bk * SS_Q8_BLOCK * 16, *xb = xq + bk * SS_Q8_BLOCK;
        __m512i a0 = _mm512_set1_epi32(-128 * xsum[bk]), a1 = _mm512_setzero_si512();
        __m512i a2 = a1, a3 = a1;
        for (int g = 0; g < SS_Q8_BLOCK / 4; g += 4) {
            const int8_t *r = wb + g * 64;
            a0 = _mm512_dpbusd_epi32(a0, _mm512_xor_si512(_mm512_loadu_si512(r), flip),
                                     _mm512_set1_epi32(ss_q8_load4(xb + 4 * g)));
            a1 = _mm512_dpbusd_epi32(a1, _mm512_xor_si512(_mm512_loadu_si512(r + 64), flip),
                                     _mm512_set1_epi32(ss_q8_load4(xb + 4 * g + 4)));
            a2 = _mm512_dpbusd_epi32(a2, _mm512_xor_si512(_mm512_loadu_si512(r + 128), flip),
                                     _mm512_set1_epi32(ss_q8_load4(xb + 4 * g + 8)));
            a3 = _mm512_dpbusd_epi32(a3, _mm512_xor_si512(_mm512_loadu_si512(r + 192), flip),
                                     _mm512_set1_epi32(ss_q8_load4(xb + 4 * g + 12)));
        }
        __m512i s = _mm512_add_epi32(_mm512_add_epi32(a0, a1), _mm512_add_epi32(a2, a3));
        f = _mm512_fmadd_ps(_mm512_cvtepi32_ps(s), _mm512_set1_ps(xscale[bk]), f);
    }
    return f;
}

/* The whole int8 matrix-vector product y = (q . xq) * wscale + b on AVX512-VNNI, panel after
 * panel in one function: the panel kernel's sums (the same bits), then the row scales, the bias
 * and a masked store of the rows that exist, with no call or memory round trip per panel (a
 * 64-byte store read back at once stalls on store forwarding). */
SS_TARGET_VNNI
static void simd_q8_matvec_vnni(float *y, const int8_t *Wpk, const float *wscale,
                                const int8_t *xq, const float *xscale, const int32_t *xsum,
                                const float *b, int C, int OC)
{
    const int np = (OC + 15) / 16, nblk = C / SS_Q8_BLOCK;
    for (int p = 0; p < np; p++) {
        const __m512 f = q8_panel_sums_vnni(Wpk + (size_t)p * 16 * C, xq, xscale, xsum, nblk);
        const int o = 16 * p, r = OC - o < 16 ? OC - o : 16;
        const __mmask16 k = (__mmask16)((1u << r) - 1u);
        __m512 v = _mm512_mul_ps(f, _mm512_loadu_ps(wscale + o));
        if (b) v = _mm512_add_ps(v, _mm512_maskz_loadu_ps(k, b + o));
        _mm512_mask_storeu_ps(y + o, k, v);
    }
}
#endif

#endif /* SS_SIMD_Q8_X86_H */
