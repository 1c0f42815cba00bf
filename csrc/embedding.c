/* embedding.c: token-embedding lookup and its gradient (memory-bound copies; no SIMD file).
 * Tokens are validated in Python (0 <= token < V); the backward adds rows in row order, so the
 * result is deterministic. An optional per-row scale (V) is embedding dropout (issue #11): a
 * vocabulary row scaled by 0 is dropped for every occurrence of its token in the window, the
 * others are scaled by 1/(1-p); NULL is the plain lookup, bit for bit.
 */
#include <string.h>
#include "shoestring.h"

void ss_embedding_forward(float *out, const int32_t *tokens, const float *WE,
                          const float *row_scale, int N, int C)
{
    for (int n = 0; n < N; n++) {
        const float *restrict w = WE + (size_t)tokens[n] * C;
        float *restrict o = out + (size_t)n * C;
        if (!row_scale) {
            memcpy(o, w, sizeof(float) * (size_t)C);
            continue;
        }
        const float s = row_scale[tokens[n]];
        for (int c = 0; c < C; c++) o[c] = w[c] * s;
    }
}

void ss_embedding_backward(float *dWE, const float *dout, const int32_t *tokens,
                           const float *row_scale, int N, int C)
{
    for (int n = 0; n < N; n++) {
        float *restrict d = dWE + (size_t)tokens[n] * C;
        const float *restrict g = dout + (size_t)n * C;
        if (!row_scale) {
            for (int c = 0; c < C; c++) d[c] += g[c];
            continue;
        }
        const float s = row_scale[tokens[n]];
        if (s == 0.0f) continue;
        for (int c = 0; c < C; c++) d[c] += g[c] * s;
    }
}
