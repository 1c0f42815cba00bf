/* kernels_avx2.c: the AVX2 + FMA (-mavx2 -mfma; MSVC /arch:AVX2) kernel table, ss_kernels_avx2.
 * The macro layer is simd_avx2.h; the kernels are the generic body in kernels_body.h.
 * setup.py compiles this file alone with the instruction-set flags and defines SS_HAVE_AVX2.
 */
#include "simd_avx2.h"
#define SS_KERNELS_NAME ss_kernels_avx2
#include "kernels_body.h"
