/* step.c: the optimiser's part of a training step, on the shard threads (issue #13).
 *
 * After its shard's forward and backward, thread t of S calls ss_step_update once, with the GIL
 * released, and stays in C until its part of the step is done:
 *   1. meet the others (every shard gradient is complete);
 *   2. sum the shard gradients over its block-aligned range [lo, hi) with the norm's block sums
 *      (ss_grad_sum);
 *   3. meet them again (the whole gradient and every block sum are there);
 *   4. the step's loss and the gradient's global norm, from values every thread reads alike;
 *      when both are fit (finite loss, not diverged; finite norm): AdamW on [lo, hi) with the
 *      global-norm clip folded in, the float64 sum of squares of the updated range (the
 *      finiteness check), and the next step's DropConnect masks where a Wch lies in the range.
 * The arithmetic is that of the Python path it replaces (model.Network.reduce_grads,
 * optim.grad_norm, optim.AdamW.update, model.Network.draw_weight_masks), so the bits are equal;
 * what it saves is the threads' returns to Python between the barriers, where they queued on the
 * interpreter lock.
 */
#include <math.h>
#include "shoestring.h"

int ss_step_update(ss_step *u, int t, int64_t lo, int64_t hi)
{
    /* 1.-3. */
    if (ss_barrier_wait(u->barrier) != 0) return -1;
    if (lo < hi)
        ss_grad_sum(u->grads, (const float *const *)u->shards, u->S, lo, hi - lo, u->block,
                    u->partials + lo / u->block);
    if (ss_barrier_wait(u->barrier) != 0) return -1;
    /* 4. the same additions, in the same order, as the Python path: sum of the shard losses
       from 0.0, added to the earlier windows' sum; block sums in block order from 0.0 */
    double shards = 0.0, sq = 0.0;
    for (int s = 0; s < u->S; s++) shards += u->losses[s];
    const double loss = (u->prior + shards) / u->tokens;
    const int64_t nblocks = (u->n + u->block - 1) / u->block;
    for (int64_t k = 0; k < nblocks; k++) sq += u->partials[k];
    const double norm = sqrt(sq);
    if (t == u->S - 1) { u->norm = norm; u->loss = loss; }
    if (!(isfinite(loss) && loss <= u->diverged_above && isfinite(norm))) return 0;
    if (lo >= hi) return 1;
    const double scale = (0.0 < u->clip && u->clip < norm) ? u->clip / norm : 1.0;
    int64_t decay = u->n_decay - lo;
    decay = decay < 0 ? 0 : decay > hi - lo ? hi - lo : decay;
    ss_adamw_step(u->params + lo, u->grads + lo, u->m + lo, u->v + lo, hi - lo, decay,
                  (float)u->lr, (float)u->beta1, (float)u->beta2, (float)u->eps,
                  (float)u->weight_decay, (float)scale, (float)u->bc1, (float)u->bc2);
    u->param_sumsq[t] = ss_sumsq(u->params + lo, hi - lo);
    for (int r = 0; r < u->n_regions; r++) {
        const ss_dropconnect_region *g = &u->regions[r];
        const int64_t a = lo > g->at ? lo : g->at;
        const int64_t b = hi < g->at + g->size ? hi : g->at + g->size;
        if (a < b)
            ss_dropconnect_forward(g->eff + (a - g->at), g->mask + (a - g->at), u->params + a,
                                   b - a, a - g->at, g->seed, u->threshold, u->scale);
    }
    return 1;
}
