/* reduce.c: the training step's gradient sum over the shards, with its norm's partial sums.
 *
 * Each batch shard adds its gradient into its own buffer (model.py); the step then needs their
 * sum, in shard order for every element, and the float64 sums of squares of that sum over fixed
 * blocks (optim.BLOCK elements), which the global-norm clip adds in block order. Threads each
 * take a block-aligned range; one call sums a range and writes its blocks' partial sums while the
 * block is still in cache. The bits are those of np.add in shard order and ss_sumsq per block,
 * whatever the range: ((g0 + g1) + g2) + ...
 */
#include <string.h>
#include "shoestring.h"

void ss_grad_sum(float *out, const float *const *shards, int S, int64_t off, int64_t n,
                 int64_t block, double *partials)
{
    for (int64_t b = off, k = 0; b < off + n; b += block, k++) {
        const int64_t e = b + block < off + n ? b + block : off + n;
        float *restrict o = out + b;
        const float *restrict g0 = shards[0] + b;
        if (S == 1) {
            memcpy(o, g0, sizeof(float) * (size_t)(e - b));
        } else {
            const float *restrict g1 = shards[1] + b;
            for (int64_t i = 0; i < e - b; i++) o[i] = g0[i] + g1[i];
            for (int s = 2; s < S; s++) {
                const float *restrict g = shards[s] + b;
                for (int64_t i = 0; i < e - b; i++) o[i] += g[i];
            }
        }
        if (partials) partials[k] = ss_sumsq(o, e - b);
    }
}
