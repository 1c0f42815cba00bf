/* kernels_avx512.c: the AVX-512F (-mavx512f -mavx2 -mfma; MSVC /arch:AVX512) kernel table, ss_kernels_avx512.
 * The macro layer is simd_avx512.h; the kernels are the generic body in kernels_body.h.
 * setup.py compiles this file alone with the instruction-set flags and defines SS_HAVE_AVX512.
 */
#include "simd_avx512.h"
#define SS_KERNELS_NAME ss_kernels_avx512
#include "kernels_body.h"
