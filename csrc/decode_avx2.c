/* decode_avx2.c: the AVX2+FMA twin of matvec_scalar in decode.c (same panel layout, same result
 * up to rounding): two 256-bit registers per 16-row panel, four panels per pass for eight
 * independent FMA chains. Compiled with -mavx2 -mfma by setup.py.
 */
#include <immintrin.h>
#include <stddef.h>

#define SS_PANEL 16

void ss_decode_matvec_avx2(float *y, const float *Wpk, const float *x, const float *b,
                           int C, int OC);

static void store_panel(float *y, const float *b, __m256 lo, __m256 hi, int o0, int OC)
{
    float t[SS_PANEL];
    int n = OC - o0 < SS_PANEL ? OC - o0 : SS_PANEL;
    if (n == SS_PANEL) {
        if (b) {
            lo = _mm256_add_ps(lo, _mm256_loadu_ps(b + o0));
            hi = _mm256_add_ps(hi, _mm256_loadu_ps(b + o0 + 8));
        }
        _mm256_storeu_ps(y + o0, lo);
        _mm256_storeu_ps(y + o0 + 8, hi);
        return;
    }
    _mm256_storeu_ps(t, lo);
    _mm256_storeu_ps(t + 8, hi);
    for (int j = 0; j < n; j++) y[o0 + j] = t[j] + (b ? b[o0 + j] : 0.0f);
}

void ss_decode_matvec_avx2(float *y, const float *Wpk, const float *x, const float *b,
                           int C, int OC)
{
    const size_t ps = (size_t)SS_PANEL * C;
    int np = (OC + SS_PANEL - 1) / SS_PANEL;
    int p = 0;
    for (; p + 4 <= np; p += 4) {
        const float *w = Wpk + (size_t)p * ps;
        __m256 a0 = _mm256_setzero_ps(), a1 = a0, a2 = a0, a3 = a0, a4 = a0, a5 = a0, a6 = a0, a7 = a0;
        for (int c = 0; c < C; c++) {
            __m256 xc = _mm256_broadcast_ss(x + c);
            const float *r = w + (size_t)c * SS_PANEL;
            a0 = _mm256_fmadd_ps(_mm256_loadu_ps(r), xc, a0);
            a1 = _mm256_fmadd_ps(_mm256_loadu_ps(r + 8), xc, a1);
            a2 = _mm256_fmadd_ps(_mm256_loadu_ps(r + ps), xc, a2);
            a3 = _mm256_fmadd_ps(_mm256_loadu_ps(r + ps + 8), xc, a3);
            a4 = _mm256_fmadd_ps(_mm256_loadu_ps(r + 2 * ps), xc, a4);
            a5 = _mm256_fmadd_ps(_mm256_loadu_ps(r + 2 * ps + 8), xc, a5);
            a6 = _mm256_fmadd_ps(_mm256_loadu_ps(r + 3 * ps), xc, a6);
            a7 = _mm256_fmadd_ps(_mm256_loadu_ps(r + 3 * ps + 8), xc, a7);
        }
        store_panel(y, b, a0, a1, p * SS_PANEL, OC);
        store_panel(y, b, a2, a3, (p + 1) * SS_PANEL, OC);
        store_panel(y, b, a4, a5, (p + 2) * SS_PANEL, OC);
        store_panel(y, b, a6, a7, (p + 3) * SS_PANEL, OC);
    }
    for (; p < np; p++) {
        const float *w = Wpk + (size_t)p * ps;
        __m256 a0 = _mm256_setzero_ps(), a1 = a0;
        for (int c = 0; c < C; c++) {
            __m256 xc = _mm256_broadcast_ss(x + c);
            const float *r = w + (size_t)c * SS_PANEL;
            a0 = _mm256_fmadd_ps(_mm256_loadu_ps(r), xc, a0);
            a1 = _mm256_fmadd_ps(_mm256_loadu_ps(r + 8), xc, a1);
        }
        store_panel(y, b, a0, a1, p * SS_PANEL, OC);
    }
}
