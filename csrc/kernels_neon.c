/* kernels_neon.c: the NEON (aarch64 baseline; 32-bit ARM with -mfpu=neon) kernel table, ss_kernels_neon.
 * The macro layer is simd_neon.h; the kernels are the generic body in kernels_body.h.
 * setup.py compiles this file alone with the instruction-set flags and defines SS_HAVE_NEON.
 */
#include "simd_neon.h"
#define SS_KERNELS_NAME ss_kernels_neon
#include "kernels_body.h"
