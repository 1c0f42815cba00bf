/* dropout.c: masking with a given mask, the training-only regularisers of issue #11.
 *
 * The masks are drawn in Python from the run's seeded generator (so a resumed run draws the same
 * ones) and hold 0 or 1/(1-p) (inverted dropout: evaluation uses the weights as they are). One
 * kernel serves every use: locked (variational) dropout of a layer's or the head's input, one
 * mask row per stream shared by all T steps of a window (B streams, T steps, C features), and
 * DropConnect of a weight matrix (T = 1: an elementwise mask). Memory-bound loops that gcc
 * vectorizes; no SIMD file.
 */
#include "shoestring.h"

void ss_dropout_forward(float *out, const float *inp, const float *mask, int B, int T, int C)
{
    for (int b = 0; b < B; b++) {
        const float *restrict mk = mask + (size_t)b * C;
        for (int t = 0; t < T; t++) {
            size_t row = ((size_t)b * T + t) * C;
            const float *restrict x = inp + row;
            float *restrict y = out + row;
            for (int c = 0; c < C; c++) y[c] = x[c] * mk[c];
        }
    }
}

void ss_dropout_backward(float *dinp, const float *dout, const float *mask, int B, int T, int C)
{
    for (int b = 0; b < B; b++) {
        const float *restrict mk = mask + (size_t)b * C;
        for (int t = 0; t < T; t++) {
            size_t row = ((size_t)b * T + t) * C;
            const float *restrict d = dout + row;
            float *restrict g = dinp + row;
            for (int c = 0; c < C; c++) g[c] += d[c] * mk[c];
        }
    }
}
