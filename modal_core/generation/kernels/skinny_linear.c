/* out = x @ w.T (+ bias) for the few rows of a decode step, float32, x86-64 AVX2 + FMA.
 *
 * x (rows, K) with row stride ldx, w (N, K) row-major, bias (N) or NULL, out (rows, N).
 * Decoding multiplies a handful of rows by every weight of the model, so the time is
 * that of streaming w through the cores once. Each weight row is read from memory once
 * (prefetched ahead), and multiplied by up to eight input rows held in L1, each with its
 * own accumulator vector; eight accumulators are reduced together at the end of the row.
 * Output columns are split evenly between the OpenMP threads (torch's own runtime when
 * torch is loaded first). Built and loaded by modal_core/generation/native_linear.py.
 */
#include <immintrin.h>
#include <omp.h>

#define GROUP 8          /* input rows per pass over a weight row */
#define PREFETCH 512     /* floats ahead of the weight row being read */

/* Lane i of the result: the sum of the eight lanes of a[i]. */
static inline __m256 sum_lanes(const __m256 *a) {
    __m256 s01 = _mm256_hadd_ps(a[0], a[1]), s23 = _mm256_hadd_ps(a[2], a[3]);
    __m256 s45 = _mm256_hadd_ps(a[4], a[5]), s67 = _mm256_hadd_ps(a[6], a[7]);
    __m256 s0123 = _mm256_hadd_ps(s01, s23), s4567 = _mm256_hadd_ps(s45, s67);
    return _mm256_add_ps(_mm256_permute2f128_ps(s0123, s4567, 0x20), _mm256_permute2f128_ps(s0123, s4567, 0x31));
}

/* sums[r] = dot(x[r], wn) for r < rows (a compile-time constant at every call site). */
static inline __attribute__((always_inline)) void dot_rows(const int rows, const float *x, long ldx, const float *wn,
                                                           long K, float *sums) {
    __m256 acc[GROUP];
    for (int r = 0; r < GROUP; r++) acc[r] = _mm256_setzero_ps();
    long vectors = K & ~7L;
    for (long k = 0; k < vectors; k += 8) {
        _mm_prefetch((const char *)(wn + k + PREFETCH), _MM_HINT_T0);
        __m256 weights = _mm256_loadu_ps(wn + k);
        for (int r = 0; r < rows; r++) acc[r] = _mm256_fmadd_ps(weights, _mm256_loadu_ps(x + r * ldx + k), acc[r]);
    }
    _mm256_storeu_ps(sums, sum_lanes(acc));
    for (long k = vectors; k < K; k++)
        for (int r = 0; r < rows; r++) sums[r] += wn[k] * x[r * ldx + k];
}

static void dot_group(long rows, const float *x, long ldx, const float *wn, long K, float *sums) {
    switch (rows) {
        case 1: dot_rows(1, x, ldx, wn, K, sums); break;
        case 2: dot_rows(2, x, ldx, wn, K, sums); break;
        case 3: dot_rows(3, x, ldx, wn, K, sums); break;
        case 4: dot_rows(4, x, ldx, wn, K, sums); break;
        case 5: dot_rows(5, x, ldx, wn, K, sums); break;
        case 6: dot_rows(6, x, ldx, wn, K, sums); break;
        case 7: dot_rows(7, x, ldx, wn, K, sums); break;
        default: dot_rows(8, x, ldx, wn, K, sums); break;
    }
}

void skinny_linear_f32(const float *x, long rows, long ldx, const float *w, long N, long K, const float *bias,
                       float *out, int threads) {
    #pragma omp parallel num_threads(threads)
    {
        int thread = omp_get_thread_num(), team = omp_get_num_threads();
        long first = N * thread / team, last = N * (thread + 1) / team;
        float sums[GROUP];
        for (long n = first; n < last; n++) {
            const float *wn = w + n * K;
            for (long r = 0; r < rows; r += GROUP) {
                long group = rows - r < GROUP ? rows - r : GROUP;
                dot_group(group, x + r * ldx, ldx, wn, K, sums);
                for (long i = 0; i < group; i++) out[(r + i) * N + n] = sums[i] + (bias ? bias[n] : 0.0f);
            }
        }
    }
}
