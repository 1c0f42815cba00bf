/* embedding.c: token-embedding lookup and its gradient (memory-bound copies; no SIMD file).
 * Tokens are validated in Python (0 <= token < V); the backward adds rows in row order, so the
 * result is deterministic.
 */
#include <string.h>
#include "shoestring.h"

void ss_embedding_forward(float *out, const int32_t *tokens, const float *WE, int N, int C)
{
    for (int n = 0; n < N; n++)
        memcpy(out + (size_t)n * C, WE + (size_t)tokens[n] * C, sizeof(float) * (size_t)C);
}

void ss_embedding_backward(float *dWE, const float *dout, const int32_t *tokens, int N, int C)
{
    for (int n = 0; n < N; n++) {
        float *d = dWE + (size_t)tokens[n] * C;
        const float *g = dout + (size_t)n * C;
        for (int c = 0; c < C; c++) d[c] += g[c];
    }
}
