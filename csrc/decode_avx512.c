/* decode_avx512.c: the AVX-512 twin of matvec_scalar in decode.c (same panel layout, same result
 * up to rounding): one 512-bit register per 16-row panel, four panels per pass for four
 * independent FMA chains. Compiled with -mavx512f -mavx2 -mfma by setup.py.
 */
#include <immintrin.h>
#include <stddef.h>

#define SS_PANEL 16

void ss_decode_matvec_avx512(float *y, const float *Wpk, const float *x, const float *b,
                             int C, int OC);

static void store_panel(float *y, const float *b, __m512 acc, int o0, int OC)
{
    int n = OC - o0 < SS_PANEL ? OC - o0 : SS_PANEL;
    __mmask16 k = (__mmask16)((1u << n) - 1u);
    if (b) acc = _mm512_add_ps(acc, _mm512_maskz_loadu_ps(k, b + o0));
    _mm512_mask_storeu_ps(y + o0, k, acc);
}

void ss_decode_matvec_avx512(float *y, const float *Wpk, const float *x, const float *b,
                             int C, int OC)
{
    const size_t ps = (size_t)SS_PANEL * C;     /* floats per panel */
    int np = (OC + SS_PANEL - 1) / SS_PANEL;
    int p = 0;
    for (; p + 4 <= np; p += 4) {
        const float *w = Wpk + (size_t)p * ps;
        __m512 a0 = _mm512_setzero_ps(), a1 = a0, a2 = a0, a3 = a0;
        for (int c = 0; c < C; c++) {
            __m512 xc = _mm512_set1_ps(x[c]);
            const float *r = w + (size_t)c * SS_PANEL;
            a0 = _mm512_fmadd_ps(_mm512_loadu_ps(r), xc, a0);
            a1 = _mm512_fmadd_ps(_mm512_loadu_ps(r + ps), xc, a1);
            a2 = _mm512_fmadd_ps(_mm512_loadu_ps(r + 2 * ps), xc, a2);
            a3 = _mm512_fmadd_ps(_mm512_loadu_ps(r + 3 * ps), xc, a3);
        }
        store_panel(y, b, a0, p * SS_PANEL, OC);
        store_panel(y, b, a1, (p + 1) * SS_PANEL, OC);
        store_panel(y, b, a2, (p + 2) * SS_PANEL, OC);
        store_panel(y, b, a3, (p + 3) * SS_PANEL, OC);
    }
    for (; p < np; p++) {
        const float *w = Wpk + (size_t)p * ps;
        __m512 a0 = _mm512_setzero_ps(), a1 = a0;
        int c = 0;
        for (; c + 2 <= C; c += 2) {    /* two chains over alternate c, summed at the end */
            a0 = _mm512_fmadd_ps(_mm512_loadu_ps(w + (size_t)c * SS_PANEL), _mm512_set1_ps(x[c]), a0);
            a1 = _mm512_fmadd_ps(_mm512_loadu_ps(w + (size_t)(c + 1) * SS_PANEL),
                                 _mm512_set1_ps(x[c + 1]), a1);
        }
        if (c < C)
            a0 = _mm512_fmadd_ps(_mm512_loadu_ps(w + (size_t)c * SS_PANEL), _mm512_set1_ps(x[c]), a0);
        store_panel(y, b, _mm512_add_ps(a0, a1), p * SS_PANEL, OC);
    }
}
