/* sample.c: the next token from logits (ss_sample) and its generator (splitmix64).
 *
 * Contract (shoestring.h): greedy when temperature <= 0 or top_k == 1; otherwise
 * softmax(logits / temperature) cut to the top_k largest, then to the top_p nucleus, drawn with
 * a splitmix64 generator whose one-word state the caller owns (same seed, same draws). Banned ids
 * (allowed[i] == 0) are never returned. Nothing is allocated: the caller passes a workspace of
 * ss_sample_workspace_size(V) floats. The numpy twin is ref.sample_distribution (the
 * distribution drawn from) and ref.splitmix64 (the generator).
 *
 * The code is in sample_body.h, compiled into every kernel table (scalar and each SIMD
 * instruction set, with its flags); ss_sample runs the active table's, so the generation loop
 * (ss_generate) and a caller of ss_sample draw with the same code.
 */
#include "sample_body.h"

/* one draw in [0, 1) from the generator (splitmix64, sample_body.h) */
double ss_rng_uniform(uint64_t *rng) { return sample_uniform(rng); }

/* Workspace: masked logits s (V), probabilities, later the nucleus window or the top-k candidate
 * logits and keys (V pairs), candidates (V pairs), the top-k candidate ids (V). */
int64_t ss_sample_workspace_size(int V) { return 6 * (int64_t)V; }

int ss_sample(float *work, const float *logits, const uint8_t *allowed, int V,
              float temperature, int top_k, float top_p, uint64_t *rng)
{
    return ss_kernels_active()->sample(work, logits, allowed, V, temperature, top_k, top_p, rng);
}
