/* kernel_crosscheck.c: every kernel of one SIMD table against the scalar twin, as a standalone
 * program, so that a cross-compiled build can be checked under qemu user mode where no Python
 * for that architecture is at hand (tests/test_isa_qemu.py does this for aarch64 and 32-bit ARM):
 *
 *   aarch64-linux-gnu-gcc -O2 -std=c99 -static -DSS_HAVE_NEON -DSS_CHECK_TABLE=ss_kernels_neon \
 *       -I csrc tools/kernel_crosscheck.c csrc/kernels_neon.c csrc/kernels_scalar.c \
 *       csrc/dispatch.c csrc/decode.c csrc/sample.c -lm -o check
 *   qemu-aarch64-static ./check
 *
 * The decode matrix-vector products are checked too: float32 panels, and int8 panels both with
 * the dot-product instructions (where the CPU has them) and with the widening fallback; and the
 * sampler, which must draw exactly the scalar table's ids; and the decode step reading layer
 * 0's input products from their table must give the bits of the step without it.
 *
 * Sizes cover every SIMD tail (1..17, 33) and the model's width 96. Exit status 0 when all agree.
 */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "ss_internal.h"

#ifndef SS_CHECK_TABLE
#error "define SS_CHECK_TABLE, e.g. -DSS_CHECK_TABLE=ss_kernels_neon"
#endif
extern const ss_kernels SS_CHECK_TABLE;

#define STR2(x) #x
#define STR(x) STR2(x)

static unsigned long long rng_state = 88172645463325252ull;
static float rnd(void) /* xorshift64, uniform in [-1, 1) */
{
    rng_state ^= rng_state << 13;
    rng_state ^= rng_state >> 7;
    rng_state ^= rng_state << 17;
    return (float)((rng_state >> 11) * (1.0 / 9007199254740992.0)) * 2.0f - 1.0f;
}
static float *rnd_vec(size_t n, float scale)
{
    float *p = malloc((n + 1) * sizeof(float));
    for (size_t i = 0; i < n; i++) p[i] = rnd() * scale;
    return p;
}
static float *copy_vec(const float *a, size_t n)
{
    float *p = malloc((n + 1) * sizeof(float));
    memcpy(p, a, n * sizeof(float));
    return p;
}

static int failures = 0, checks = 0;
/* worst |a - b| / (|b| + 1) over n elements must not exceed tol (NaN fails) */
static void expect_close(const char *what, const float *got, const float *want, size_t n,
                         float tol, int d0, int d1, int d2)
{
    float worst = 0;
    for (size_t i = 0; i < n; i++) {
        float d = fabsf(got[i] - want[i]) / (fabsf(want[i]) + 1.0f);
        if (!(d <= worst)) worst = d;
    }
    checks++;
    if (!(worst <= tol)) {
        failures++;
        printf("FAIL %s (%d, %d, %d): worst relative difference %g > %g\n", what, d0, d1, d2,
               worst, tol);
    }
}

/* A random model (V,C,H,L,X,K) decoded twice from the same packed weights, float32 or int8:
 * with layer 0's input products read from the table (ss_decode_embed_proj) and without. The
 * table holds the step's own products, so state and logits must agree bit for bit. */
static void check_embed_proj(int V, int C, int H, int L, int X, int K, int q8)
{
    ss_decode_layer ly[3];
    float *keep[3][8];
    int8_t *qkeep[3][5] = {{0}};
    float *skeep[3][5] = {{0}};
    memset(ly, 0, sizeof ly);
    for (int l = 0; l < L; l++) {
        int I = l == 0 ? C : H;
        size_t n[8] = {(size_t)X * I, (size_t)X, (size_t)X * H * I, (size_t)X * H,
                       (size_t)X * H * I, (size_t)X * H * H, (size_t)X * H, (size_t)H};
        for (int i = 0; i < 8; i++) keep[l][i] = rnd_vec(n[i], i == 7 ? 1.0f : 0.3f);
        for (size_t h = 0; h < (size_t)H; h++) keep[l][7][h] += 1.0f;   /* gamma near 1 */
        ly[l].Wg = keep[l][0]; ly[l].bg = keep[l][1]; ly[l].Wz = keep[l][2];
        ly[l].bz = keep[l][3]; ly[l].Wcx = keep[l][4]; ly[l].Wch = keep[l][5];
        ly[l].bc = keep[l][6]; ly[l].gamma = keep[l][7];
        if (I != H) { ly[l].Wp = rnd_vec((size_t)H * I, 0.3f); ly[l].bp = rnd_vec(H, 0.3f); }
        /* the int8 rows of every matrix (the projection's only when I != H) */
        const float *Ws[5] = {ly[l].Wg, ly[l].Wz, ly[l].Wcx, ly[l].Wch, ly[l].Wp};
        const int64_t rows[5] = {X, (int64_t)X * H, (int64_t)X * H, (int64_t)X * H, H};
        const int cols[5] = {I, I, I, H, I};
        ss_q8_rows *qs[5] = {&ly[l].qWg, &ly[l].qWz, &ly[l].qWcx, &ly[l].qWch, &ly[l].qWp};
        for (int i = 0; i < (I != H ? 5 : 4); i++) {
            qkeep[l][i] = malloc((size_t)(rows[i] * cols[i]));
            skeep[l][i] = malloc(sizeof(float) * (size_t)rows[i]);
            ss_quantize_rows(qkeep[l][i], skeep[l][i], Ws[i], rows[i], cols[i]);
            qs[i]->q = qkeep[l][i];
            qs[i]->scale = skeep[l][i];
        }
    }
    float *WE = rnd_vec((size_t)V * C, 1.0f), *Wo = rnd_vec((size_t)V * H, 0.3f);
    float *bo = rnd_vec(V, 0.3f);
    int8_t *qWo = malloc((size_t)V * H);
    float *sWo = malloc(sizeof(float) * (size_t)V);
    ss_quantize_rows(qWo, sWo, Wo, V, H);
    ss_decode_model m;
    memset(&m, 0, sizeof m);
    m.V = V; m.C = C; m.H = H; m.L = L; m.X = X; m.K = K;
    m.eps = 1e-5f; m.cap = 4.0f;
    m.WE = WE; m.Wo = Wo; m.bo = bo; m.layers = ly;
    m.qWo.q = qWo; m.qWo.scale = sWo;
    float *packed = NULL, *scales = NULL;
    int8_t *packed_q8 = NULL;
    if (q8) {
        packed_q8 = malloc((size_t)ss_decode_packed_q8_size(&m));
        scales = malloc(sizeof(float) * (size_t)ss_decode_packed_q8_scales(&m));
        ss_decode_pack_q8(packed_q8, scales, &m);
        m.packed_q8 = packed_q8;
        m.scales_q8 = scales;
    } else {
        packed = malloc(sizeof(float) * (size_t)ss_decode_packed_size(&m));
        ss_decode_pack(packed, &m);
        m.packed = packed;
    }
    float *work = malloc(sizeof(float) * (size_t)ss_decode_workspace_size(&m));
    float *table = malloc(sizeof(float) * (size_t)ss_decode_embed_proj_size(&m));
    size_t ns = (size_t)L * X * H;
    float *st1 = calloc(ns, sizeof(float)), *st2 = calloc(ns, sizeof(float));
    float *lg1 = malloc(sizeof(float) * (size_t)V), *lg2 = malloc(sizeof(float) * (size_t)V);
    ss_decode_model plain = m;           /* embed_proj NULL */
    ss_decode_embed_proj(table, work, &m);
    for (int t = 0; t < 30; t++) {
        int tok = (int)((unsigned)(t * 7919 + 13) % (unsigned)V);
        ss_decode_step(lg1, st1, work, &plain, tok);
        ss_decode_step(lg2, st2, work, &m, tok);
        checks++;
        if (memcmp(st1, st2, sizeof(float) * ns) || memcmp(lg1, lg2, sizeof(float) * (size_t)V)) {
            failures++;
            printf("FAIL decode step with the embed_proj table (V=%d C=%d H=%d L=%d X=%d K=%d "
                   "int8=%d) differs at token %d\n", V, C, H, L, X, K, q8, t);
            break;
        }
    }
    for (int l = 0; l < L; l++) {
        for (int i = 0; i < 8; i++) free(keep[l][i]);
        for (int i = 0; i < 5; i++) { free(qkeep[l][i]); free(skeep[l][i]); }
        free((void *)ly[l].Wp); free((void *)ly[l].bp);
    }
    free(WE); free(Wo); free(bo); free(qWo); free(sWo); free(packed); free(packed_q8);
    free(scales); free(work); free(table); free(st1); free(st2); free(lg1); free(lg2);
}

int main(void)
{
    const ss_kernels *S = &ss_kernels_scalar, *T = &SS_CHECK_TABLE;
    static const int sizes[] = {1, 3, 4, 5, 7, 8, 9, 12, 15, 16, 17, 33, 96};
    const int ns = (int)(sizeof sizes / sizeof sizes[0]);

    /* matmul forward and backward (backward accumulates into random gradients) */
    for (int a = 0; a < ns; a++)
        for (int b = 0; b < ns; b++)
            for (int c = 0; c < ns; c++) {
                int N = sizes[a], C = sizes[b], OC = sizes[c];
                size_t nx = (size_t)N * C, nw = (size_t)OC * C, ny = (size_t)N * OC;
                float *x = rnd_vec(nx, 1), *W = rnd_vec(nw, 1), *bias = rnd_vec(OC, 1);
                float *dout = rnd_vec(ny, 1), *y1 = rnd_vec(ny, 1), *y2 = copy_vec(y1, ny);
                S->matmul_forward(y1, x, W, bias, N, C, OC);
                T->matmul_forward(y2, x, W, bias, N, C, OC);
                expect_close("matmul_forward", y2, y1, ny, 1e-5f, N, C, OC);
                float *dx1 = rnd_vec(nx, 1), *dx2 = copy_vec(dx1, nx);
                float *dw1 = rnd_vec(nw, 1), *dw2 = copy_vec(dw1, nw);
                float *db1 = rnd_vec(OC, 1), *db2 = copy_vec(db1, OC);
                S->matmul_backward(dx1, dw1, db1, dout, x, W, N, C, OC);
                T->matmul_backward(dx2, dw2, db2, dout, x, W, N, C, OC);
                expect_close("matmul_backward dinp", dx2, dx1, nx, 1e-5f, N, C, OC);
                expect_close("matmul_backward dW", dw2, dw1, nw, 1e-5f, N, C, OC);
                expect_close("matmul_backward db", db2, db1, OC, 1e-5f, N, C, OC);
                free(x); free(W); free(bias); free(dout); free(y1); free(y2);
                free(dx1); free(dx2); free(dw1); free(dw2); free(db1); free(db2);
            }

    /* row kernels: RMSNorm, softmax, cross-entropy */
    for (int a = 0; a < ns; a++)
        for (int b = 0; b < ns; b++) {
            int N = sizes[a], H = sizes[b];
            size_t n = (size_t)N * H;
            float *x = rnd_vec(n, 3), *g = rnd_vec(H, 1), *dy = rnd_vec(n, 1);
            float *y1 = rnd_vec(n, 1), *y2 = copy_vec(y1, n), r1[96], r2[96];
            S->rmsnorm_forward(y1, r1, x, g, N, H, 1e-5f);
            T->rmsnorm_forward(y2, r2, x, g, N, H, 1e-5f);
            expect_close("rmsnorm_forward", y2, y1, n, 1e-5f, N, H, 0);
            expect_close("rmsnorm_forward rstd", r2, r1, N, 1e-5f, N, H, 0);
            float *d1 = rnd_vec(n, 1), *d2 = copy_vec(d1, n), *dg1 = rnd_vec(H, 1), *dg2 = copy_vec(dg1, H);
            S->rmsnorm_backward(d1, dg1, dy, x, g, r1, N, H);
            T->rmsnorm_backward(d2, dg2, dy, x, g, r1, N, H);
            expect_close("rmsnorm_backward dinp", d2, d1, n, 1e-4f, N, H, 0);
            expect_close("rmsnorm_backward dgain", dg2, dg1, H, 1e-4f, N, H, 0);
            S->softmax_forward(y1, x, N, H);
            T->softmax_forward(y2, x, N, H);
            expect_close("softmax_forward", y2, y1, n, 1e-5f, N, H, 0);
            S->softmax_backward(d1, dy, y1, N, H);
            T->softmax_backward(d2, dy, y1, N, H);
            expect_close("softmax_backward", d2, d1, n, 1e-5f, N, H, 0);
            int32_t t[96];
            for (int i = 0; i < N; i++) t[i] = (i * 7) % H;
            S->crossentropy_forward(r1, y1, x, t, N, H, 0.5f);
            T->crossentropy_forward(r2, y2, x, t, N, H, 0.5f);
            expect_close("crossentropy losses", r2, r1, N, 1e-5f, N, H, 0);
            expect_close("crossentropy dlogits", y2, y1, n, 1e-5f, N, H, 0);
            free(x); free(g); free(dy); free(y1); free(y2); free(d1); free(d2); free(dg1); free(dg2);
        }

    /* elementwise, sumsq, AdamW */
    for (int a = 0; a < ns; a++) {
        int n = sizes[a] * 32;
        float *x = rnd_vec(n, 6), *dy = rnd_vec(n, 1), *y1 = rnd_vec(n, 1), *y2 = copy_vec(y1, n);
        float *d1 = rnd_vec(n, 1), *d2 = copy_vec(d1, n);
        S->sigmoid_forward(y1, x, n);
        T->sigmoid_forward(y2, x, n);
        expect_close("sigmoid_forward", y2, y1, n, 2e-6f, n, 0, 0);
        S->sigmoid_backward(d1, dy, y1, n);
        T->sigmoid_backward(d2, dy, y1, n);
        expect_close("sigmoid_backward", d2, d1, n, 2e-6f, n, 0, 0);
        S->gelu_forward(y1, x, n);
        T->gelu_forward(y2, x, n);
        expect_close("gelu_forward", y2, y1, n, 2e-6f, n, 0, 0);
        {   /* far tails: GELU of a large negative input is ~0, of a large positive one is x */
            float *big = rnd_vec(n, 1e4f);
            S->gelu_forward(y1, big, n);
            T->gelu_forward(y2, big, n);
            expect_close("gelu_forward (|x| up to 1e4)", y2, y1, n, 2e-6f, n, 0, 0);
            free(big);
        }
        S->gelu_backward(d1, dy, x, n);
        T->gelu_backward(d2, dy, x, n);
        expect_close("gelu_backward", d2, d1, n, 3e-6f, n, 0, 0);
        double s1 = S->sumsq(x, n), s2 = T->sumsq(x, n);
        checks++;
        if (!(fabs(s1 - s2) <= 1e-12 * s1)) {
            failures++;
            printf("FAIL sumsq (%d): %.17g vs %.17g\n", n, s2, s1);
        }
        float *p1 = rnd_vec(n, 1), *p2 = copy_vec(p1, n), *m1 = rnd_vec(n, 0.1f), *m2 = copy_vec(m1, n);
        float *v1 = rnd_vec(n, 0.1f);
        for (int i = 0; i < n; i++) v1[i] = fabsf(v1[i]);
        float *v2 = copy_vec(v1, n);
        S->adamw_step(p1, dy, m1, v1, n, n / 2, 1e-2f, 0.9f, 0.999f, 1e-8f, 0.1f, 0.5f, 0.1f, 0.01f);
        T->adamw_step(p2, dy, m2, v2, n, n / 2, 1e-2f, 0.9f, 0.999f, 1e-8f, 0.1f, 0.5f, 0.1f, 0.01f);
        expect_close("adamw_step params", p2, p1, n, 1e-5f, n, 0, 0);
        expect_close("adamw_step m", m2, m1, n, 1e-6f, n, 0, 0);
        expect_close("adamw_step v", v2, v1, n, 1e-6f, n, 0, 0);
        free(x); free(dy); free(y1); free(y2); free(d1); free(d2);
        free(p1); free(p2); free(m1); free(m2); free(v1); free(v2);
    }

    /* decode matrix-vector products over panels: float32, then int8 (dot on and off) */
    for (int a = 0; a < ns; a++)
        for (int b = 0; b < ns; b++) {
            int OC = sizes[a], C = sizes[b] + (a % 3) * 32, Cp = ss_q8_width(C);
            float *W = rnd_vec((size_t)OC * C, 1), *x = rnd_vec(C, 2), *bias = rnd_vec(OC, 1);
            float *y1 = rnd_vec(OC, 1), *y2 = copy_vec(y1, OC);
            float *pk = malloc(sizeof(float) * (size_t)ss_panel_size(OC, C));
            ss_panel_pack(pk, W, OC, C);
            S->decode_matvec(y1, pk, x, bias, C, OC);
            T->decode_matvec(y2, pk, x, bias, C, OC);
            expect_close("decode_matvec", y2, y1, OC, 1e-5f, OC, C, 0);
            int8_t *q = malloc((size_t)OC * C), *pq = malloc((size_t)ss_panel_q8_size(OC, C));
            float *s = malloc(sizeof(float) * OC), *ps = malloc(sizeof(float) * ss_panel_q8_rows(OC));
            int8_t *xq = malloc(Cp);
            float *xs = malloc(sizeof(float) * (Cp / 32));
            int32_t *xsum = malloc(sizeof(int32_t) * (Cp / 32));
            ss_quantize_rows(q, s, W, OC, C);
            ss_panel_pack_q8(pq, ps, q, s, OC, C);
            ss_quantize_x(xq, xs, xsum, x, C);
            S->decode_matvec_q8(y1, pq, ps, xq, xs, xsum, bias, Cp, OC, 0);
            T->decode_matvec_q8(y2, pq, ps, xq, xs, xsum, bias, Cp, OC, 1);
            expect_close("decode_matvec_q8 (dot products)", y2, y1, OC, 1e-5f, OC, C, 1);
            T->decode_matvec_q8(y2, pq, ps, xq, xs, xsum, bias, Cp, OC, 0);
            expect_close("decode_matvec_q8 (no dot products)", y2, y1, OC, 1e-5f, OC, C, 0);
            free(W); free(x); free(bias); free(y1); free(y2); free(pk);
            free(q); free(pq); free(s); free(ps); free(xq); free(xs); free(xsum);
        }

    /* the sampler: the same draws as the scalar table's, with ties, +-inf, NaN and banned ids */
    {
        const int Vs[] = {2, 7, 16, 17, 33, 96, 850};
        const float Ts[] = {0.0f, 0.8f, 1.0f}, Ps[] = {1.0f, 0.95f, 0.5f};
        const int Ks[] = {0, 1, 5, 16, 40, 41};
        for (int a = 0; a < 7; a++) {
            const int V = Vs[a];
            float *lg = rnd_vec(V, 3);
            float *work = malloc(sizeof(float) * (size_t)ss_sample_workspace_size(V));
            uint8_t *allowed = malloc(V);
            for (int kind = 0; kind < 4; kind++) {
                for (int i = 0; i < V; i++) {
                    allowed[i] = (i % 7) != 3;
                    if (kind == 1) lg[i] = floorf(lg[i]);                       /* ties */
                    if (kind == 2 && i % 5 == 0) lg[i] = (i % 10) ? -INFINITY : INFINITY;
                    if (kind == 3 && i % 6 == 1) lg[i] = NAN;
                }
                for (int t = 0; t < 3; t++)
                    for (int k = 0; k < 6; k++)
                        for (int pp = 0; pp < 3; pp++)
                            for (int ban = 0; ban < 2; ban++) {
                                uint64_t r1 = 1234567u + (uint64_t)(a * 1000 + kind), r2 = r1;
                                for (int d = 0; d < 4; d++) {
                                    const uint8_t *al = ban ? allowed : NULL;
                                    int g1 = S->sample(work, lg, al, V, Ts[t], Ks[k], Ps[pp], &r1);
                                    int g2 = T->sample(work, lg, al, V, Ts[t], Ks[k], Ps[pp], &r2);
                                    checks++;
                                    if (g1 != g2 || g1 < 0 || g1 >= V) {
                                        failures++;
                                        printf("FAIL sample V=%d kind=%d T=%g k=%d p=%g: %d vs %d\n",
                                               V, kind, Ts[t], Ks[k], Ps[pp], g2, g1);
                                    }
                                }
                            }
            }
            free(lg); free(work); free(allowed);
        }
    }

    /* the decode step with and without the table of layer 0's input products, on the
     * kernels the dispatcher picks here (the table's own on this CPU) */
    for (int q8 = 0; q8 < 2; q8++) {
        check_embed_proj(37, 16, 16, 2, 3, 3, q8);
        check_embed_proj(41, 20, 7, 3, 4, 1, q8);
        check_embed_proj(850, 96, 96, 2, 6, 2, q8);
    }

    printf("int8 kernel with dot products on: %s\n", SS_CHECK_TABLE.q8_name(1));
    printf("%s vs ss_kernels_scalar: %d checks, %d failures\n", STR(SS_CHECK_TABLE), checks, failures);
    return failures != 0;
}
