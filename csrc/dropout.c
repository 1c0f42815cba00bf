/* dropout.c: masking with a given mask, the training-only regularisers of issue #11.
 *
 * The masks are drawn in Python from the run's seeded generator (so a resumed run draws the same
 * ones) and hold 0 or 1/(1-p) (inverted dropout: evaluation uses the weights as they are). One
 * kernel serves every use: locked (variational) dropout of a layer's or the head's input, one
 * mask row per stream shared by all T steps of a window (B streams, T steps, C features), and
 * DropConnect of a weight matrix (T = 1: an elementwise mask). Memory-bound loops that gcc
 * vectorizes; no SIMD file. Also here: DropConnect masks drawn from a hash (so training threads
 * draw them in ranges) and the training state guard, which each shard's thread runs on its rows.
 */
#include <math.h>
#include <string.h>
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

/* DropConnect masks from a counter-based hash, so that a mask is a pure function of (seed,      */
/* index): any thread may draw any range of it, the draw needs no stored generator state, and a  */
/* resumed run draws the same ones. 32-bit arithmetic (murmur3's finaliser twice) so that the    */
/* loop vectorizes everywhere: element j keeps its weight when the top 24 bits of               */
/* fmix32(fmix32((j+1) * 0x9E3779B9 ^ seed_lo) + seed_hi) are >= threshold (p * 2^24, rounded), */
/* and then holds scale = 1/(1-p); otherwise 0.                                                 */
static inline uint32_t fmix32(uint32_t x)
{
    x ^= x >> 16;
    x *= 0x85EBCA6Bu;
    x ^= x >> 13;
    x *= 0xC2B2AE35u;
    x ^= x >> 16;
    return x;
}

void ss_dropconnect_forward(float *out, float *mask, const float *W, int64_t n, int64_t j0,
                            uint64_t seed, uint32_t threshold, float scale)
{
    const uint32_t lo = (uint32_t)seed, hi = (uint32_t)(seed >> 32);
    const uint32_t first = (uint32_t)(j0 + 1);
    for (int64_t i = 0; i < n; i++) {
        const uint32_t z = fmix32(fmix32((first + (uint32_t)i) * 0x9E3779B9u ^ lo) + hi);
        const float m = (z >> 8) >= threshold ? scale : 0.0f;
        mask[i] = m;
        out[i] = W[i] * m;
    }
}

/* The training state guard (MODEL.md sec. 2) over B streams: stream b's state is h[l][b] (X*H   */
/* floats) for l < L, layer l at h + l * h_stride; a stream whose L2 norm (sum of squares in     */
/* float64, in order) exceeds `limit` or is not finite is zeroed. Returns how many were reset.   */
int ss_state_guard(float *h, int64_t h_stride, int L, int B, int XH, double limit)
{
    int resets = 0;
    for (int b = 0; b < B; b++) {
        double s = 0.0;
        for (int l = 0; l < L; l++) {
            const float *x = h + (size_t)l * (size_t)h_stride + (size_t)b * (size_t)XH;
            for (int i = 0; i < XH; i++) s += (double)x[i] * (double)x[i];
        }
        if (!(sqrt(s) <= limit)) {
            for (int l = 0; l < L; l++)
                memset(h + (size_t)l * (size_t)h_stride + (size_t)b * (size_t)XH, 0,
                       sizeof(float) * (size_t)XH);
            resets++;
        }
    }
    return resets;
}
