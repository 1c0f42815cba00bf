/* barrier.c: a reusable spinning barrier for the training threads (issue #13).
 *
 * The shards of a training step run on Python threads, each inside C with the interpreter lock
 * released. Between the shards' backward and the optimiser, the threads meet twice (the whole
 * gradient, then its norm) and hand each other ranges of the flat buffers. A Python-level
 * hand-off costs 0.1 to 0.3 ms per meeting on the 2-core machines here, a tenth of the update it
 * guards; this barrier costs microseconds. It spins for a set time (by the clock; model.py
 * asks for 3 ms, which covers the gap between two windows, and none when there are more threads
 * than cores), then yields its core, then sleeps (50 us naps, then 1 ms ones), so more threads
 * than cores still make progress and an idle worker waiting for its next window costs next to
 * nothing. A thread that fails breaks the barrier (ss_barrier_break), and every wait then returns
 * -1 at once instead of waiting forever.
 *
 * gcc/clang: __atomic builtins; MSVC: Interlocked functions on volatile longs.
 */
#if !defined(_MSC_VER) && !defined(_POSIX_C_SOURCE)
#define _POSIX_C_SOURCE 199309L             /* nanosleep, clock_gettime */
#endif
#include "shoestring.h"

#if defined(_MSC_VER)
#include <windows.h>
#include <intrin.h>
#define LOAD(p) ((long)_InterlockedOr((volatile long *)(p), 0))
#define STORE(p, v) _InterlockedExchange((volatile long *)(p), (long)(v))
#define ADD_FETCH(p, v) _InterlockedExchangeAdd((volatile long *)(p), (long)(v)) + (long)(v)
#define RELAX() YieldProcessor()
#define YIELD() SwitchToThread()
#define NAP(ns) Sleep((ns) >= 1000000 ? 1 : 0)
static double now_s(void)
{
    LARGE_INTEGER t, f;
    QueryPerformanceCounter(&t);
    QueryPerformanceFrequency(&f);
    return (double)t.QuadPart / (double)f.QuadPart;
}
#else
#include <sched.h>
#include <time.h>
#define LOAD(p) __atomic_load_n((p), __ATOMIC_ACQUIRE)
#define STORE(p, v) __atomic_store_n((p), (v), __ATOMIC_RELEASE)
#define ADD_FETCH(p, v) __atomic_add_fetch((p), (v), __ATOMIC_ACQ_REL)
#if defined(__x86_64__) || defined(__i386__)
#define RELAX() __builtin_ia32_pause()
#elif defined(__aarch64__) || defined(__arm__)
#define RELAX() __asm__ __volatile__("yield")
#else
#define RELAX() ((void)0)
#endif
#define YIELD() sched_yield()
static void nap(long ns)
{
    struct timespec ts = {0, ns};
    nanosleep(&ts, NULL);
}
#define NAP(ns) nap(ns)
static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}
#endif

void ss_barrier_init(ss_barrier *b, int parties, double spin)
{
    b->spin = spin;
    STORE(&b->parties, parties);
    STORE(&b->waiting, 0);
    STORE(&b->generation, 0);
    STORE(&b->broken, 0);
}

int ss_barrier_wait(ss_barrier *b)
{
    if (LOAD(&b->broken)) return -1;
    const long gen = LOAD(&b->generation);
    if (ADD_FETCH(&b->waiting, 1) == LOAD(&b->parties)) {
        STORE(&b->waiting, 0);              /* the last to arrive releases the others */
        ADD_FETCH(&b->generation, 1);
        return 0;
    }
    /* by the clock (a pause lasts 10 to 150 cycles, depending on the CPU): `spin` seconds of
       pauses, then 2 ms of yields, then 50 us naps, and after 50 ms 1 ms naps, so that an idle
       worker costs next to nothing */
    const double t0 = now_s(), spin = b->spin;
    double waited = 0.0;
    for (long spins = 0; LOAD(&b->generation) == gen; spins++) {
        if (LOAD(&b->broken)) return -1;
        if ((spins & 63) == 0) waited = now_s() - t0;
        if (waited < spin) RELAX();
        else if (waited < spin + 0.002) YIELD();
        else if (waited < 0.050) NAP(50000);
        else NAP(1000000);
    }
    return 0;
}

void ss_barrier_break(ss_barrier *b)
{
    STORE(&b->broken, 1);
}
