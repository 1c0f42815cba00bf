/* shoestring.h: the public C API of shoestring, the only header the cffi build reads.
 *
 * Contract: C trusts its inputs (Python validates dtype, contiguity and shapes once), is pure
 * compute, never allocates in hot loops, never prints, never exits. Backward kernels ADD into
 * gradient buffers; the caller zeroes them once per step. A NULL gradient pointer skips it.
 * All tensors are row-major, C-contiguous, float32 unless stated otherwise.
 *
 * Dimension letters (see shared MODEL.md): B batch, T time steps, V vocabulary, C embedding
 * width, H hidden width, X experts, K active experts, L layers, I a layer's input width.
 * Kernel-generic letters: N rows, C columns (reduction width), OC output columns.
 *
 * Argument order (llm.c style): outputs, then saved activations, then inputs, then weights,
 * then sizes and scalars.
 *
 * cffi reads this file with every line that starts with '#' removed, so declarations must not
 * depend on the preprocessor.
 */
#ifndef SHOESTRING_H
#define SHOESTRING_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

/* ---------------------------------------------------------------------------------------- */
/* Dispatch: the instruction set is chosen once (first call or ss_isa_set).                 */
/* ISA ids: 0 scalar, 1 avx2 (+fma), 2 avx512 (avx512f), 3 neon. Masks have bit (1 << id).  */
/* ---------------------------------------------------------------------------------------- */
int ss_isa_active(void);            /* id of the ISA in use */
int ss_isa_compiled_mask(void);     /* ISAs compiled into this build */
int ss_isa_cpu_mask(void);          /* ISAs this CPU can run (compiled or not) */
int ss_isa_set(int isa);            /* 0 ok, -1 not compiled in, -2 CPU lacks it, -3 bad id */
const char *ss_isa_name(int isa);   /* "scalar", "avx2", "avx512", "neon", or "unknown" */
const char *ss_build_info(void);    /* compiler and flags this module was built with */

/* ---------------------------------------------------------------------------------------- */
/* matmul: out(N,OC) = inp(N,C) . W(OC,C)^T + b(OC)          (b may be NULL: no bias)       */
/* backward: dinp(N,C) += dout(N,OC) . W(OC,C);  dW(OC,C) += dout^T . inp;  db(OC) += sum_N */
/* ---------------------------------------------------------------------------------------- */
void ss_matmul_forward(float *out, const float *inp, const float *W, const float *b,
                       int N, int C, int OC);
void ss_matmul_backward(float *dinp, float *dW, float *db,
                        const float *dout, const float *inp, const float *W,
                        int N, int C, int OC);
/* Pre-packed forward, for a W multiplied many times (the MoE-GRU recurrence's Wch_e, once per */
/* step): ss_matmul_pack writes W(OC,C) into ss_matmul_packed_floats(C, OC) floats (at most   */
/* C * (OC + 64)) in the active instruction set's panel layout (pack again after W changes or */
/* the instruction set is switched); ss_matmul_forward_packed then gives exactly the bits of  */
/* ss_matmul_forward(out, inp, W, b, N, C, OC) without packing W on every call (W is still    */
/* read: few rows use the dot-product form).                                                  */
int64_t ss_matmul_packed_floats(int C, int OC);
void ss_matmul_pack(float *packed, const float *W, int C, int OC);
void ss_matmul_forward_packed(float *out, const float *inp, const float *W, const float *packed,
                              const float *b, int N, int C, int OC);

/* ---------------------------------------------------------------------------------------- */
/* RMSNorm over rows of width H: out = gain * inp * rstd, rstd(N) = 1/sqrt(mean(inp^2)+eps) */
/* ---------------------------------------------------------------------------------------- */
void ss_rmsnorm_forward(float *out, float *rstd, const float *inp, const float *gain,
                        int N, int H, float eps);
void ss_rmsnorm_backward(float *dinp, float *dgain, const float *dout, const float *inp,
                         const float *gain, const float *rstd, int N, int H);

/* ---------------------------------------------------------------------------------------- */
/* AdamW over one flat buffer of n floats; decoupled weight decay only on [0, n_decay).      */
/* g = grads * grad_scale (the global-norm clip folded in);                                 */
/* m = b1 m + (1-b1) g; v = b2 v + (1-b2) g^2;                                              */
/* p -= lr * ( (m/bias_correction1) / (sqrt(v/bias_correction2) + eps) + wd * p [decay] )   */
/* ---------------------------------------------------------------------------------------- */
void ss_adamw_step(float *params, const float *grads, float *m, float *v,
                   int64_t n, int64_t n_decay, float lr, float beta1, float beta2, float eps,
                   float weight_decay, float grad_scale,
                   float bias_correction1, float bias_correction2);
/* sum of squares in float64 with a fixed summation order (global gradient norm) */
double ss_sumsq(const float *x, int64_t n);

/* ---------------------------------------------------------------------------------------- */
/* Elementwise and row helpers. Backward kernels ADD into dinp.                              */
/* ---------------------------------------------------------------------------------------- */
void ss_sigmoid_forward(float *out, const float *inp, int64_t n);
void ss_sigmoid_backward(float *dinp, const float *dout, const float *out, int64_t n);
void ss_gelu_forward(float *out, const float *inp, int64_t n);          /* exact: x*Phi(x) */
void ss_gelu_backward(float *dinp, const float *dout, const float *inp, int64_t n);
void ss_softmax_forward(float *out, const float *inp, int N, int X);    /* rows of width X */
void ss_softmax_backward(float *dinp, const float *dout, const float *out, int N, int X);

/* Cross-entropy over rows of logits(N,V) with targets(N) in [0,V): losses(N) = -log softmax.  */
/* Fused backward: when dlogits is not NULL it is SET to (softmax - onehot(target)) * dscale. */
void ss_crossentropy_forward(float *losses, float *dlogits, const float *logits,
                             const int32_t *targets, int N, int V, float dscale);

/* Embedding: out(N,C) = WE[tokens(N)] * s;  backward: dWE[tokens[n]] += dout[n] * s (in row     */
/* order), where s = row_scale[tokens[n]] (row_scale (V): embedding dropout) or 1 when NULL.   */
void ss_embedding_forward(float *out, const int32_t *tokens, const float *WE,
                          const float *row_scale, int N, int C);
void ss_embedding_backward(float *dWE, const float *dout, const int32_t *tokens,
                           const float *row_scale, int N, int C);

/* ---------------------------------------------------------------------------------------- */
/* MoE-GRU layer, model and decode kernels: declared below this line by csrc/moegru.c etc.   */
/* ---------------------------------------------------------------------------------------- */

/* ==== MoE-GRU layer over a whole window (csrc/moegru.c) ==================================== */
/* One layer of MODEL.md sec. 1 for B sequences x T steps. Batch-major: row n = b*T + t of inp */
/* (B,T,I) and out (B,T,H); recurrent state h (B,X,H). A contiguous batch slice [b0,b1) of     */
/* inp/out/h is itself a valid call (training shards the batch over threads): the functions    */
/* are single-threaded, re-entrant and keep no global state; each thread needs its own acts,   */
/* ws and gradient buffers.                                                                  */
/*   g = softmax(Wg x + bg); the K largest g (ties -> lower index) are selected and their     */
/*   gates renormalised to sum 1 (K == X: all experts); a selected expert e updates           */
/*   z = sigmoid(Wz_e x + bz_e), c = GELU(Wcx_e x + Wch_e h_e + bc_e), h_e = (1-z) h_e + z c,   */
/*   the others keep h_e; r = sum_sel gate_e h_e + (x or Wp x + bp);                          */
/*   out = gamma * r / sqrt(mean(r^2) + eps).                                                 */
/* cap > 0 bounds the recurrence: the candidate becomes c = cap tanh(GELU(u) / cap), so every  */
/* state stays in [min(h0, -0.17), max(h0, cap)]; cap == 0 keeps c = GELU(u) exactly.          */
/* Memory: C never allocates. The caller provides float32 buffers of at least                 */
/* ss_moegru_acts_floats(...) (saved activations: written by forward, read by backward; some  */
/* slots hold int32 indices) and ss_moegru_ws_floats(...) (scratch for forward and backward).  */
typedef struct ss_moegru_weights {
    const float *Wg;     /* (X,I)   router */
    const float *bg;     /* (X)                                                             */
    const float *Wz;     /* (X,H,I) update gate, input side */
    const float *bz;     /* (X,H)                                                           */
    const float *Wcx;    /* (X,H,I) candidate, input side */
    const float *Wch;    /* (X,H,H) candidate, recurrent side */
    const float *bc;     /* (X,H)                                                           */
    const float *gamma;  /* (H)     RMSNorm gain */
    const float *Wp;     /* (H,I)   residual projection; NULL when I == H (identity residual) */
    const float *bp;     /* (H)     NULL when I == H                                          */
} ss_moegru_weights;

/* Gradient buffers mirror the weights; backward ADDS into them. A NULL field skips that one. */
typedef struct ss_moegru_grads {
    float *Wg;           /* (X,I)   */
    float *bg;           /* (X)     */
    float *Wz;           /* (X,H,I) */
    float *bz;           /* (X,H)   */
    float *Wcx;          /* (X,H,I) */
    float *Wch;          /* (X,H,H) */
    float *bc;           /* (X,H)   */
    float *gamma;        /* (H)     */
    float *Wp;           /* (H,I)   only when I != H */
    float *bp;           /* (H)     only when I != H */
} ss_moegru_grads;

size_t ss_moegru_acts_floats(int B, int T, int I, int H, int X, int K);
size_t ss_moegru_ws_floats(int B, int T, int I, int H, int X, int K);

/* out(B,T,H) = layer(inp(B,T,I)); h(B,X,H): on entry the initial state, on exit the final.  */
/* acts receives everything backward needs (including every state an expert step read).       */
void ss_moegru_forward(float *out, float *acts, float *h, float *ws, const float *inp,
                       const ss_moegru_weights *w,
                       int B, int T, int I, int H, int X, int K, float eps, float cap);

/* Exact backward through the T steps of the matching forward (same acts, inp, w, sizes).     */
/* dinp(B,T,I) += dL/dinp (NULL skips); every non-NULL grad field +=;                        */
/* dh(B,X,H) (NULL: treated as zero, truncated BPTT): on entry dL/d(final state), on exit     */
/* dL/d(initial state). The top-K selection is discrete: no gradient flows through it.        */
void ss_moegru_backward(float *dinp, float *dh, const ss_moegru_grads *g, float *ws,
                        const float *dout, const float *acts, const float *inp,
                        const ss_moegru_weights *w,
                        int B, int T, int I, int H, int X, int K, float cap);

/* Dropout with a given mask (csrc/dropout.c; training only; masks hold 0 or 1/(1-p)).          */
/* out(B,T,C) = inp(B,T,C) * mask(B,C): one mask row per stream, shared by its T steps (locked  */
/* dropout); T = 1 masks elementwise (DropConnect of a weight). backward: dinp += dout * mask.  */
void ss_dropout_forward(float *out, const float *inp, const float *mask, int B, int T, int C);
void ss_dropout_backward(float *dinp, const float *dout, const float *mask, int B, int T, int C);
/* DropConnect drawn here (csrc/dropout.c): elements [j0, j0+n) of a weight's mask, a pure      */
/* function of (seed, index j): mask = scale when the top 24 bits of fmix32(fmix32((j+1) *       */
/* 0x9E3779B9 ^ seed_lo) + seed_hi) are >= threshold (p * 2^24), else 0; out = W * mask.         */
void ss_dropconnect_forward(float *out, float *mask, const float *W, int64_t n, int64_t j0,
                            uint64_t seed, uint32_t threshold, float scale);
/* The training state guard: B streams of L layers' (X*H) states, layer l at h + l*h_stride;    */
/* zeroes each stream whose L2 norm exceeds limit or is not finite; returns how many.           */
int ss_state_guard(float *h, int64_t h_stride, int L, int B, int XH, double limit);

/* The shards' gradient sum (csrc/reduce.c), over elements [off, off+n) of full-length buffers: */
/* out[i] = ((shards[0][i] + shards[1][i]) + ...) (S >= 1), and when partials is not NULL,      */
/* partials[k] = ss_sumsq of out's k-th block of `block` elements from out[off] (the last may   */
/* be short).                                                                                    */
void ss_grad_sum(float *out, const float *const *shards, int S, int64_t off, int64_t n,
                 int64_t block, double *partials);


/* ==== The whole training model over one batch shard of a window (csrc/network.c) ========== */
/* embedding -> L x (locked dropout, MoE-GRU layer) -> head dropout -> head -> cross-entropy,   */
/* and back: the kernels above in model.py's order, in two calls, so that a shard's thread      */
/* never returns to Python between kernels. B streams x T steps of the shard, N = B*T; every    */
/* buffer is the caller's (kernels.NetworkBinding binds and checks them once).                  */
typedef struct ss_network_layer {
    const ss_moegru_weights *w;
    const ss_moegru_grads *g;   /* NULL: forward only */
    float *acts, *ws;           /* ss_moegru_acts_floats / ss_moegru_ws_floats(B,T,I,H,X,K) */
    float *out;                 /* (B,T,H) the layer's output */
    float *xd, *dxd;            /* (B,T,I) the input after its mask, and its gradient (training) */
    float *dx;                  /* (B,T,I) gradient of the layer's input (training) */
    const float *mask;          /* (B,I) this window's locked-dropout mask, or NULL */
    const float *wch_mask;      /* (X,H,H) DropConnect mask of Wch (w->Wch is Wch * it), or NULL */
    float *wch_scratch;         /* (X,H,H) the window's Wch gradient before it is masked */
    int I;                      /* input width: C for layer 0, H after */
} ss_network_layer;

typedef struct ss_network {
    int B, T, C, H, V, L, X, K;
    float eps, cap;             /* RMSNorm epsilon; the candidate's soft cap (0: none) */
    const float *WE;            /* (V,C) embedding */
    const float *Wo;            /* (V,H) head weight: WE itself when the embeddings are tied */
    const float *bo;            /* (V)   */
    float *gWE, *gWo, *gbo;     /* their gradients (gWo == gWE when tied; training only) */
    float *grads;               /* the shard's whole flat gradient buffer, n_grads floats */
    int64_t n_grads;
    float *x0;                  /* (B,T,C) embedding output */
    float *xh, *dxh;            /* (B,T,H) the head's input after its mask, and its gradient */
    float *dtop;                /* (B,T,H) gradient of the head's input */
    float *logits, *dlogits;    /* (N,V) */
    float *losses;              /* (N)   */
    const float *emb_mask;      /* (V) embedding-dropout row scales, or NULL */
    const float *head_mask;     /* (B,H) the head's locked-dropout mask, or NULL */
    ss_network_layer *layers;   /* (L)   */
} ss_network;

/* tokens, targets (B,T) in [0,V); layer l's state (B,X,H) at h + l*h_stride, advanced in place; */
/* losses(N) written. train != 0: the masks apply and dlogits = dscale * dloss/dlogits.          */
void ss_network_forward(const ss_network *n, const int32_t *tokens, const int32_t *targets,
                        float *h, int64_t h_stride, float dscale, int train);
/* After a training forward on the same tokens (and masks): every gradient += dscale *         */
/* dloss/dparam (zero != 0: the whole buffer is zeroed first). Under DropConnect a layer runs on */
/* Wch * wch_mask, so its Wch gradient is the window's gradient times the mask.                 */
void ss_network_backward(const ss_network *n, const int32_t *tokens, int zero);

/* A reusable spinning barrier for the training threads (csrc/barrier.c): `parties` threads,   */
/* each inside C with the interpreter lock released, meet at ss_barrier_wait (0 when all have   */
/* arrived); a waiter spins `spin` seconds, then yields, then naps. ss_barrier_break makes every */
/* wait return -1 at once, now and later (a thread that failed must break it, or the others    */
/* would wait forever); ss_barrier_init resets it.                                              */
typedef struct ss_barrier {
    long parties, waiting, generation, broken;
    double spin;
} ss_barrier;
void ss_barrier_init(ss_barrier *b, int parties, double spin);
int ss_barrier_wait(ss_barrier *b);
void ss_barrier_break(ss_barrier *b);

/* The optimiser's part of a training step on the shard threads (csrc/step.c). Thread t of S,  */
/* after its shard, with its block-aligned range [lo, hi) of the flat buffers (lo == hi: none): */
/* waits at `barrier`, sums its range of the shard gradients into grads with the block sums of  */
/* the norm (partials), waits again, then computes loss = (prior + sum of losses[s]) / tokens   */
/* and norm = sqrt(sum of partials), both in order from 0.0; when the loss is finite and <=     */
/* diverged_above and the norm finite, runs AdamW on its range (the clip: clip/norm when         */
/* 0 < clip < norm), writes the range's ss_sumsq of the new weights to param_sumsq[t], and draws */
/* the next step's DropConnect masks where a region lies in its range. Returns 1 (updated), 0    */
/* (loss or norm unfit: nothing updated) or -1 (the barrier was broken). Thread S-1 writes norm */
/* and loss.                                                                                    */
typedef struct ss_dropconnect_region {
    int64_t at, size;           /* a weight's place in the flat parameter buffer */
    float *eff, *mask;          /* (size) the weight times its mask, the mask */
    uint64_t seed;              /* the next step's mask seed */
} ss_dropconnect_region;

typedef struct ss_step {
    ss_barrier *barrier;
    int S;                      /* threads, one per shard */
    float **shards;             /* (S) the shard gradient buffers, n floats each */
    float *grads;               /* (n) their sum */
    int64_t n, block;
    double *partials;           /* (ceil(n / block)) the norm's block sums */
    double *losses;             /* (S) the shards' loss sums of the last window */
    double prior;               /* the loss sum of the step's earlier windows */
    double tokens;              /* tokens in the step (B * T * accumulate) */
    double diverged_above;
    float *params, *m, *v;      /* (n) AdamW */
    int64_t n_decay;
    double lr, beta1, beta2, eps, weight_decay, clip, bc1, bc2;
    int n_regions;              /* DropConnect regions (0: none) */
    ss_dropconnect_region *regions;
    uint32_t threshold;
    float scale;
    double norm, loss;          /* out (thread S-1) */
    double *param_sumsq;        /* (S) out */
} ss_step;
int ss_step_update(ss_step *u, int t, int64_t lo, int64_t hi);

/* ======================================================================================== */
/* Decoding (csrc/decode.c): one token at batch 1 through all layers and the head; the        */
/* generation loop (prompt in, token ids out, in chunks); int8 weights.                       */
/* ======================================================================================== */
/* int8 matrices: row-major int8 q(N,C) with one float scale per row, W[n][c] ~ scale[n]*q[n][c]. */
typedef struct ss_q8_rows {
    const int8_t *q;     /* (N,C) */
    const float *scale;  /* (N)   */
} ss_q8_rows;

/* Pointers into the flat parameter buffer (MODEL.md §1), filled once at model load. The q*    */
/* fields are the int8 twins of the matrices (used only by ss_decode_pack_q8; NULL otherwise).  */
typedef struct ss_decode_layer {
    const float *Wg;     /* (X,I)   router */
    const float *bg;     /* (X)     */
    const float *Wz;     /* (X,H,I) update gate */
    const float *bz;     /* (X,H)   */
    const float *Wcx;    /* (X,H,I) candidate, input half */
    const float *Wch;    /* (X,H,H) candidate, recurrent half */
    const float *bc;     /* (X,H)   */
    const float *gamma;  /* (H)     RMSNorm gain */
    const float *Wp;     /* (H,I)   residual projection; NULL unless I != H (layer 0) */
    const float *bp;     /* (H)     NULL unless I != H */
    ss_q8_rows qWg, qWz, qWcx, qWch, qWp;   /* int8 (X,I), (X*H,I), (X*H,I), (X*H,H), (H,I) */
} ss_decode_layer;

typedef struct ss_decode_model {
    int V, C, H, L, X, K;
    float eps;                      /* RMSNorm epsilon */
    float cap;                      /* candidate soft cap: c = cap*tanh(GELU(u)/cap); 0: GELU(u) */
    const float *WE;                /* (V,C) embedding */
    const float *Wo;                /* (V,H) head; WE itself when the embeddings are tied (C == H) */
    const float *bo;                /* (V)   */
    ss_q8_rows qWo;                 /* int8 head (V,H) (ss_decode_pack_q8 only) */
    const ss_decode_layer *layers;  /* (L)   */
    const float *packed;            /* float32 panels written by ss_decode_pack, or NULL */
    const int8_t *packed_q8;        /* int8 panels written by ss_decode_pack_q8, or NULL */
    const float *scales_q8;         /* their row scales                                     */
    const float *embed_proj;        /* (V,E) layer 0's input products of every token, written */
                                    /* by ss_decode_embed_proj, or NULL                        */
    const void *embed_proj_kernels; /* the kernels (and int8 dot setting) that wrote it: the   */
    int embed_proj_dot;             /* step reads the table only while they are still active  */
} ss_decode_model;

/* Sizes of the packed weights (floats; int8 bytes and scale floats) and of the step's         */
/* workspace (floats, enough for the float32 and the int8 step).                              */
int64_t ss_decode_packed_size(const ss_decode_model *m);
int64_t ss_decode_packed_q8_size(const ss_decode_model *m);
int64_t ss_decode_packed_q8_scales(const ss_decode_model *m);
int64_t ss_decode_workspace_size(const ss_decode_model *m);
/* Copy the float32 matrices of m into row panels (packed); m->packed must then point at it.  */
/* Run again whenever the parameters change.                                                  */
void ss_decode_pack(float *packed, const ss_decode_model *m);
/* The same from the int8 matrices (the q* fields): m->packed_q8 / m->scales_q8 must then     */
/* point at packed / scales; ss_decode_step then runs on int8 weights (m->packed unused).      */
void ss_decode_pack_q8(int8_t *packed, float *scales, const ss_decode_model *m);
/* Layer 0's input x = WE[token] is one of V rows, so its products (router pre-activation      */
/* Wg x + bg (X), [Wz_e x; Wcx_e x] of each expert (X,2H), and Wp x + bp (H) when C != H) can   */
/* be computed for every token once: a table of V rows of ss_decode_embed_proj_row floats       */
/* (ss_decode_embed_proj_size in all) that the step reads (one row, about 4.6 KB by default)    */
/* instead of layer 0's input matrices (445 KB float32). Computed with the step's own kernels   */
/* on the packed weights (pack first), so the step's results are bit for bit those without it.  */
/* Sets m->embed_proj and its kernels; work: ss_decode_workspace_size floats. Run again after   */
/* repacking, or after changing the instruction set (until then the step ignores the table).   */
int64_t ss_decode_embed_proj_row(const ss_decode_model *m);
int64_t ss_decode_embed_proj_size(const ss_decode_model *m);
void ss_decode_embed_proj(float *table, float *work, ss_decode_model *m);
/* One token (0 <= token < V): state(L,X,H) updated in place; logits(V) written, or the head  */
/* skipped when logits is NULL. work: ss_decode_workspace_size floats. Allocates nothing.     */
/* int8 weights when m->packed_q8 is set, else float32.                                      */
void ss_decode_step(float *logits, float *state, float *work, const ss_decode_model *m,
                    int token);

/* The matrix-vector kernels of the step, public for tests and benchmarks. A matrix W(OC,C)   */
/* in panels of 16 rows: panel p holds W[16p+j][c] at [p][c][j] (rows past OC zero),          */
/* ss_panel_size(OC,C) floats. int8 panels: C padded to Cp = ss_q8_width(C) (a multiple of 32)*/
/* with zeros; panel p holds q[16p+j][4g+k] at byte [p][g][j][k] (ss_panel_q8_size bytes) and */
/* the row scales at [16p+j] (ss_panel_q8_rows floats, 0 past OC).                           */
int64_t ss_panel_size(int OC, int C);
int ss_q8_width(int C);
int64_t ss_panel_q8_size(int OC, int C);
int64_t ss_panel_q8_rows(int OC);
void ss_panel_pack(float *dst, const float *W, int OC, int C);
void ss_panel_pack_q8(int8_t *dst, float *dscale, const int8_t *q, const float *scale,
                      int OC, int C);
/* y(OC) = W . x(C) + b(OC) (b may be NULL) with the dispatched kernel. */
void ss_decode_matvec(float *y, const float *Wpk, const float *x, const float *b, int C, int OC);
/* Symmetric int8 quantisation. Rows: scale[n] = max|W[n]|/127, q = round-half-even(W*127/max) */
/* (an all-zero row: scale 0, q 0). Activations: the same per block of 32 of x(C), zero-padded */
/* to Cp = ss_q8_width(C): xq(Cp), xscale(Cp/32), xsum(Cp/32) = the sum of each block's xq.   */
void ss_quantize_rows(int8_t *q, float *scale, const float *W, int64_t N, int C);
void ss_quantize_x(int8_t *xq, float *xscale, int32_t *xsum, const float *x, int C);
/* The scalar twin of ss_quantize_x (which runs full blocks on SSE2 on x86-64): the same outputs. */
void ss_quantize_x_scalar(int8_t *xq, float *xscale, int32_t *xsum, const float *x, int C);
/* y(OC) = scale_o * sum_blocks xscale_b * (q_o . xq)_b + b(OC): int8 panels times a quantised */
/* vector, exact integer block sums (the dispatched int8 kernel).                             */
void ss_decode_matvec_q8(float *y, const int8_t *Wpk, const float *wscale, const int8_t *xq,
                         const float *xscale, const int32_t *xsum, const float *b, int C, int OC);
/* Which int8 kernel the active instruction set uses: "scalar", "avx2", "avx512-vnni",        */
/* "neon-dotprod", "neon"; ss_int8_dot_set(0) turns the dot-product instructions (VNNI, ARM    */
/* dot product) off (for tests of the fallback) and (1) back on; returns the previous setting. */
const char *ss_int8_kernel(void);
int ss_int8_dot_set(int on);

/* ---- sampling (csrc/sample.c) ---------------------------------------------------------- */
/* Next token from logits(V): the argmax (ties: lowest id) when temperature <= 0 or top_k == 1; */
/* otherwise softmax(logits / temperature), restricted to the top_k largest (0: no limit), then */
/* to the smallest set holding top_p of that mass (1: no limit), drawn with the splitmix64     */
/* generator whose state *rng advances. allowed(V): 0 bans an id (NULL: all allowed); a NaN   */
/* logit counts as -inf (never drawn unless nothing else is left: then the first allowed id).  */
/* work: ss_sample_workspace_size(V) floats. Returns -1 only when every id is banned.          */
int64_t ss_sample_workspace_size(int V);
int ss_sample(float *work, const float *logits, const uint8_t *allowed, int V,
              float temperature, int top_k, float top_p, uint64_t *rng);
/* One uniform double in [0, 1) from the same generator (for tests). */
double ss_rng_uniform(uint64_t *rng);

/* ---- the generation loop (csrc/decode.c) ----------------------------------------------- */
/* A caller-allocated context holds everything between chunks: the model, the state, the     */
/* buffers, the sampling settings and the generator. ss_generate(g, prompt, n, out, cap):     */
/* feeds the n prompt ids (n may be 0 to continue), then repeats: sample a token; [EOS] ends   */
/* (not written, not fed); else feed it and write it to out; until cap ids are written (the   */
/* chunk is full: call again with n = 0 to go on), max_tokens were generated since the last    */
/* prompt, or g->stop is nonzero (a stop request, checked before every token). Returns the     */
/* number of ids written; g->status tells why it returned. Allocates nothing.                 */
enum { SS_GEN_RUNNING = 0, SS_GEN_EOS = 1, SS_GEN_LIMIT = 2, SS_GEN_STOPPED = 3,
       SS_GEN_BANNED = 4 };
typedef struct ss_gen {
    const ss_decode_model *m;
    float *state;                /* (L,X,H) recurrent state, carried across calls */
    float *work;                 /* ss_decode_workspace_size floats */
    float *logits;               /* (V) */
    float *swork;                /* ss_sample_workspace_size(V) floats */
    const uint8_t *allowed;      /* (V) or NULL */
    float temperature;
    int top_k;
    float top_p;
    uint64_t rng;                /* splitmix64 state */
    int eos;                     /* the [EOS] id, or -1 */
    int max_tokens;              /* per prompt */
    int n_generated;             /* since the last prompt */
    int status;                  /* SS_GEN_* after each call */
    volatile int stop;           /* set nonzero (from any thread) to stop at the next token */
} ss_gen;
int ss_generate(ss_gen *g, const int32_t *prompt, int n_prompt, int32_t *out, int cap);

#ifdef __cplusplus
}
#endif

#endif /* SHOESTRING_H */
