/* network.c: the whole training model over one batch shard of a window, in two calls.
 *
 * model.py cuts a window of B streams into shards, one per thread. Each shard used to run as a
 * dozen Python-level kernel calls, and the shards' Python glue queued on the interpreter lock
 * between them (about 1 ms of every two-thread window, issue #13). Here the same kernels run in
 * the same order with the same buffers, so the bits are those of the calls made one by one:
 *
 *   forward:  x0 = WE[tokens] (* embedding-dropout row scale)
 *             for each layer l: x = x * mask_l (locked dropout, when given); x = MoE-GRU_l(x)
 *             top = x * head_mask (when given); logits = top . Wo^T + bo
 *             losses = cross-entropy(logits, targets); training: dlogits = dscale * dloss/dlogits
 *   backward: the same in reverse, adding into the shard's own gradient buffer.
 *
 * Letters: B streams of the shard, T steps, N = B*T tokens, C embedding width, I a layer's input
 * width (C for layer 0, else H), H state width, X experts, V vocabulary. Every buffer is the
 * caller's, bound once (kernels.NetworkBinding checks them); nothing is allocated here.
 */
#include <string.h>
#include "shoestring.h"

/* layer l's input: its masked copy, else the previous layer's output (x0 for layer 0) */
static const float *layer_input(const ss_network *n, int l)
{
    const ss_network_layer *ly = &n->layers[l];
    if (ly->mask) return ly->xd;
    return l > 0 ? n->layers[l - 1].out : n->x0;
}

/* the head's input: the last layer's output, or its masked copy */
static const float *head_input(const ss_network *n)
{
    return n->head_mask ? n->xh : n->layers[n->L - 1].out;
}

void ss_network_forward(const ss_network *n, const int32_t *tokens, const int32_t *targets,
                        float *h, int64_t h_stride, float dscale, int train)
{
    const int B = n->B, T = n->T, N = n->B * n->T;
    /* 1. embedding: x0 (B,T,C) = WE[tokens], rows scaled by the embedding-dropout mask */
    ss_embedding_forward(n->x0, tokens, n->WE, train ? n->emb_mask : NULL, N, n->C);
    /* 2. the L MoE-GRU layers, each input under its locked-dropout mask: (B,T,I) -> (B,T,H) */
    const float *x = n->x0;
    for (int l = 0; l < n->L; l++) {
        const ss_network_layer *ly = &n->layers[l];
        if (train && ly->mask) {
            ss_dropout_forward(ly->xd, x, ly->mask, B, T, ly->I);
            x = ly->xd;
        }
        ss_moegru_forward(ly->out, ly->acts, h + (size_t)l * (size_t)h_stride, ly->ws, x, ly->w,
                          B, T, ly->I, n->H, n->X, n->K, n->eps, n->cap);
        x = ly->out;
    }
    if (train && n->head_mask) {               /* the head's input mask (B,T,H) */
        ss_dropout_forward(n->xh, x, n->head_mask, B, T, n->H);
        x = n->xh;
    }
    /* 3. head: logits (N,V) = top (N,H) . Wo^T + bo */
    ss_matmul_forward(n->logits, x, n->Wo, n->bo, N, n->H, n->V);
    /* 4. cross-entropy against the next tokens; training also sets dlogits (N,V) */
    ss_crossentropy_forward(n->losses, train ? n->dlogits : NULL, n->logits, targets, N, n->V,
                            train ? dscale : 1.0f);
}

void ss_network_backward(const ss_network *n, const int32_t *tokens, int zero)
{
    const int B = n->B, T = n->T, N = n->B * n->T;
    const size_t BTH = (size_t)N * (size_t)n->H;
    if (zero) memset(n->grads, 0, sizeof(float) * (size_t)n->n_grads);
    /* 4'. head: dtop (N,H) = dlogits . Wo; dWo += dlogits^T . top; dbo += column sums */
    memset(n->dtop, 0, sizeof(float) * BTH);
    ss_matmul_backward(n->dtop, n->gWo, n->gbo, n->dlogits, head_input(n), n->Wo, N, n->H, n->V);
    const float *dout = n->dtop;
    if (n->head_mask) {
        memset(n->dxh, 0, sizeof(float) * BTH);
        ss_dropout_backward(n->dxh, dout, n->head_mask, B, T, n->H);
        dout = n->dxh;
    }
    /* 3'. the layers in reverse (truncated BPTT: no gradient into the carried state) */
    for (int l = n->L - 1; l >= 0; l--) {
        const ss_network_layer *ly = &n->layers[l];
        const size_t BTI = (size_t)N * (size_t)ly->I;
        memset(ly->dx, 0, sizeof(float) * BTI);
        if (ly->wch_mask && ly->g->Wch) {  /* DropConnect: dWch += (window's dWch_eff) * mask */
            const size_t XHH = (size_t)n->X * (size_t)n->H * (size_t)n->H;
            ss_moegru_grads g = *ly->g;
            g.Wch = ly->wch_scratch;
            memset(g.Wch, 0, sizeof(float) * XHH);
            ss_moegru_backward(ly->dx, NULL, &g, ly->ws, dout, ly->acts, layer_input(n, l), ly->w,
                               B, T, ly->I, n->H, n->X, n->K, n->cap);
            float *restrict gw = ly->g->Wch;
            const float *restrict d = ly->wch_scratch, *restrict m = ly->wch_mask;
            for (size_t i = 0; i < XHH; i++) gw[i] += d[i] * m[i];
        } else {
            ss_moegru_backward(ly->dx, NULL, ly->g, ly->ws, dout, ly->acts, layer_input(n, l),
                               ly->w, B, T, ly->I, n->H, n->X, n->K, n->cap);
        }
        dout = ly->dx;
        if (ly->mask) {
            memset(ly->dxd, 0, sizeof(float) * BTI);
            ss_dropout_backward(ly->dxd, dout, ly->mask, B, T, ly->I);
            dout = ly->dxd;
        }
    }
    /* 1'. embedding: dWE[tokens] += dx0 (rows scaled by the same mask) */
    ss_embedding_backward(n->gWE, dout, tokens, n->emb_mask, N, n->C);
}
