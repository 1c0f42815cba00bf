/* dispatch.c: detect the CPU once, pick the best compiled kernel table, forward the public API.
 *
 * x86-64 wheels assume only SSE2; AVX2+FMA and AVX-512 live in their own files compiled with their
 * own flags (SS_HAVE_<ISA> says which were built). aarch64 always has NEON; 32-bit ARM uses NEON
 * only when the kernel's HWCAP says so. ss_isa_set() forces a path (Python reads SHOESTRING_ISA).
 */
#include "ss_internal.h"

#if defined(SS_HAVE_BUILD_INFO_H)
#include "ss_build_info.h"
#endif
#ifndef SS_BUILD_INFO
#define SS_BUILD_INFO "unknown compiler and flags"
#endif

#if defined(_MSC_VER) && (defined(_M_X64) || defined(_M_IX86))
#include <intrin.h>
#include <immintrin.h>
#endif
#if defined(__linux__) && (defined(__arm__) || defined(__aarch64__))
#include <sys/auxv.h>
#endif
#if (defined(__x86_64__) || defined(__i386__)) && (defined(__GNUC__) || defined(__clang__))
#include <cpuid.h>
#endif

/* ---- CPU detection -------------------------------------------------------------------- */
static int detect_cpu_mask(void)
{
    int mask = 1 << SS_ISA_SCALAR;
#if defined(__x86_64__) || defined(__i386__) || defined(_M_X64) || defined(_M_IX86)
#if defined(_MSC_VER) && !defined(__clang__)
    int r[4];
    __cpuid(r, 0);
    int max_leaf = r[0];
    __cpuid(r, 1);
    int has_fma = (r[2] >> 12) & 1, has_osxsave = (r[2] >> 27) & 1, has_avx = (r[2] >> 28) & 1;
    unsigned long long xcr0 = has_osxsave ? _xgetbv(0) : 0;
    int os_ymm = (xcr0 & 0x6) == 0x6, os_zmm = (xcr0 & 0xe6) == 0xe6;
    int has_avx2 = 0, has_avx512f = 0;
    if (max_leaf >= 7) {
        __cpuidex(r, 7, 0);
        has_avx2 = (r[1] >> 5) & 1;
        has_avx512f = (r[1] >> 16) & 1;
    }
    if (has_avx && has_avx2 && has_fma && os_ymm) mask |= 1 << SS_ISA_AVX2;
    if (has_avx512f && has_avx2 && has_fma && os_zmm) mask |= 1 << SS_ISA_AVX512;
#else
    __builtin_cpu_init();
    if (__builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma")) mask |= 1 << SS_ISA_AVX2;
    if (__builtin_cpu_supports("avx512f") && (mask & (1 << SS_ISA_AVX2))) mask |= 1 << SS_ISA_AVX512;
#endif
#elif defined(__aarch64__) || defined(_M_ARM64)
    mask |= 1 << SS_ISA_NEON;
#elif defined(__arm__)
#if defined(__linux__)
    if (getauxval(AT_HWCAP) & (1UL << 12)) mask |= 1 << SS_ISA_NEON; /* HWCAP_NEON */
#elif defined(__ARM_NEON)
    mask |= 1 << SS_ISA_NEON;
#endif
#endif
    return mask;
}

/* AVX512-VNNI (CPUID.7.0:ECX bit 11) with AVX512BW (EBX bit 30): the int8 dot product of the
 * AVX-512 table. Only consulted when the AVX-512 table is in use (the OS saves zmm state). */
static int detect_avx512vnni(void)
{
#if defined(_MSC_VER) && !defined(__clang__) && (defined(_M_X64) || defined(_M_IX86))
    int r[4];
    __cpuid(r, 0);
    if (r[0] < 7) return 0;
    __cpuidex(r, 7, 0);
    return ((r[2] >> 11) & 1) && ((r[1] >> 30) & 1);
#elif (defined(__x86_64__) || defined(__i386__)) && (defined(__GNUC__) || defined(__clang__))
    unsigned a, b, c, d;
    if (!__get_cpuid_count(7, 0, &a, &b, &c, &d)) return 0;
    return ((c >> 11) & 1) && ((b >> 30) & 1);
#else
    return 0;
#endif
}

/* ARMv8.2 dot product (SDOT): Linux HWCAP_ASIMDDP; every Apple arm64 CPU has it. */
static int detect_armdot(void)
{
#if defined(__aarch64__) && defined(__linux__)
    return (getauxval(AT_HWCAP) >> 20) & 1;
#elif defined(__aarch64__) && defined(__APPLE__)
    return 1;
#else
    return 0;
#endif
}

static int compiled_mask(void)
{
    int mask = 1 << SS_ISA_SCALAR;
#ifdef SS_HAVE_AVX2
    mask |= 1 << SS_ISA_AVX2;
#endif
#ifdef SS_HAVE_AVX512
    mask |= 1 << SS_ISA_AVX512;
#endif
#ifdef SS_HAVE_NEON
    mask |= 1 << SS_ISA_NEON;
#endif
    return mask;
}

static const ss_kernels *table_for(int isa)
{
    switch (isa) {
#ifdef SS_HAVE_AVX2
    case SS_ISA_AVX2: return &ss_kernels_avx2;
#endif
#ifdef SS_HAVE_AVX512
    case SS_ISA_AVX512: return &ss_kernels_avx512;
#endif
#ifdef SS_HAVE_NEON
    case SS_ISA_NEON: return &ss_kernels_neon;
#endif
    default: return &ss_kernels_scalar;
    }
}

static int g_cpu_mask = -1;
static int g_isa = -1;
static const ss_kernels *g_table = 0;
static int g_vnni = 0, g_armdot = 0, g_dot_on = 1;

static void ensure_init(void)
{
    if (g_table) return;
    g_vnni = detect_avx512vnni();
    g_armdot = detect_armdot();
    g_cpu_mask = detect_cpu_mask();
    int usable = g_cpu_mask & compiled_mask();
    int best = SS_ISA_SCALAR;
    if (usable & (1 << SS_ISA_NEON)) best = SS_ISA_NEON;
    if (usable & (1 << SS_ISA_AVX2)) best = SS_ISA_AVX2;
    if (usable & (1 << SS_ISA_AVX512)) best = SS_ISA_AVX512;
    g_isa = best;
    g_table = table_for(best);
}

const ss_kernels *ss_kernels_active(void) { ensure_init(); return g_table; }
int ss_isa_active(void) { ensure_init(); return g_isa; }
int ss_isa_compiled_mask(void) { return compiled_mask(); }
int ss_isa_cpu_mask(void) { ensure_init(); return g_cpu_mask; }

int ss_isa_set(int isa)
{
    ensure_init();
    if (isa < 0 || isa >= SS_ISA_COUNT) return -3;
    if (!(compiled_mask() & (1 << isa))) return -1;
    if (!(g_cpu_mask & (1 << isa))) return -2;
    g_isa = isa;
    g_table = table_for(isa);
    return 0;
}

const char *ss_isa_name(int isa)
{
    static const char *names[SS_ISA_COUNT] = {"scalar", "avx2", "avx512", "neon"};
    return (isa >= 0 && isa < SS_ISA_COUNT) ? names[isa] : "unknown";
}

const char *ss_build_info(void) { return SS_BUILD_INFO; }

int ss_cpu_has_avx512vnni(void) { ensure_init(); return g_vnni; }
int ss_cpu_has_armdot(void) { ensure_init(); return g_armdot; }
int ss_int8_dot_enabled(void) { return g_dot_on; }
int ss_int8_dot_set(int on) { int was = g_dot_on; g_dot_on = on != 0; return was; }
const char *ss_int8_kernel(void) { return ss_kernels_active()->q8_name(g_dot_on); }

/* ---- public API: forward through the active table -------------------------------------- */
void ss_matmul_forward(float *out, const float *inp, const float *W, const float *b,
                       int N, int C, int OC)
{ ss_kernels_active()->matmul_forward(out, inp, W, b, N, C, OC); }

void ss_matmul_backward(float *dinp, float *dW, float *db, const float *dout, const float *inp,
                        const float *W, int N, int C, int OC)
{ ss_kernels_active()->matmul_backward(dinp, dW, db, dout, inp, W, N, C, OC); }

int64_t ss_matmul_packed_floats(int C, int OC)
{ return ss_kernels_active()->matmul_packed_floats(C, OC); }

void ss_matmul_pack(float *packed, const float *W, int C, int OC)
{ ss_kernels_active()->matmul_pack(packed, W, C, OC); }

void ss_matmul_forward_packed(float *out, const float *inp, const float *W, const float *packed,
                              const float *b, int N, int C, int OC)
{ ss_kernels_active()->matmul_forward_packed(out, inp, W, packed, b, N, C, OC); }

void ss_rmsnorm_forward(float *out, float *rstd, const float *inp, const float *gain,
                        int N, int H, float eps)
{ ss_kernels_active()->rmsnorm_forward(out, rstd, inp, gain, N, H, eps); }

void ss_rmsnorm_backward(float *dinp, float *dgain, const float *dout, const float *inp,
                         const float *gain, const float *rstd, int N, int H)
{ ss_kernels_active()->rmsnorm_backward(dinp, dgain, dout, inp, gain, rstd, N, H); }

void ss_adamw_step(float *params, const float *grads, float *m, float *v, int64_t n,
                   int64_t n_decay, float lr, float beta1, float beta2, float eps,
                   float weight_decay, float grad_scale, float bc1, float bc2)
{
    ss_kernels_active()->adamw_step(params, grads, m, v, n, n_decay, lr, beta1, beta2, eps,
                                    weight_decay, grad_scale, bc1, bc2);
}

double ss_sumsq(const float *x, int64_t n) { return ss_kernels_active()->sumsq(x, n); }

void ss_sigmoid_forward(float *out, const float *inp, int64_t n)
{ ss_kernels_active()->sigmoid_forward(out, inp, n); }
void ss_sigmoid_backward(float *dinp, const float *dout, const float *out, int64_t n)
{ ss_kernels_active()->sigmoid_backward(dinp, dout, out, n); }
void ss_gelu_forward(float *out, const float *inp, int64_t n)
{ ss_kernels_active()->gelu_forward(out, inp, n); }
void ss_gelu_backward(float *dinp, const float *dout, const float *inp, int64_t n)
{ ss_kernels_active()->gelu_backward(dinp, dout, inp, n); }
void ss_softmax_forward(float *out, const float *inp, int N, int X)
{ ss_kernels_active()->softmax_forward(out, inp, N, X); }
void ss_softmax_backward(float *dinp, const float *dout, const float *out, int N, int X)
{ ss_kernels_active()->softmax_backward(dinp, dout, out, N, X); }
void ss_crossentropy_forward(float *losses, float *dlogits, const float *logits,
                             const int32_t *targets, int N, int V, float dscale)
{ ss_kernels_active()->crossentropy_forward(losses, dlogits, logits, targets, N, V, dscale); }

void ss_decode_matvec(float *y, const float *Wpk, const float *x, const float *b, int C, int OC)
{ ss_kernels_active()->decode_matvec(y, Wpk, x, b, C, OC); }
void ss_decode_matvec_q8(float *y, const int8_t *Wpk, const float *wscale, const int8_t *xq,
                         const float *xscale, const int32_t *xsum, const float *b, int C, int OC)
{ ss_kernels_active()->decode_matvec_q8(y, Wpk, wscale, xq, xscale, xsum, b, C, OC, g_dot_on); }
