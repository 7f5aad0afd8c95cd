/* out = x @ w.T (+ bias) for the few rows of a decode step, float32, x86-64 AVX2 + FMA.
 *
 * Decoding multiplies a handful of rows by every weight of the model, so the time is
 * that of streaming w through the cores once. Each weight row is read from memory once
 * (prefetched ahead), and multiplied by up to eight input rows held in L1, each with its
 * own accumulator vector; eight accumulators are reduced together at the end of the row.
 * Output columns are split evenly between torch's intra-op threads (its own OpenMP
 * runtime, `torch.get_num_threads()` of them).
 *
 * Registered as the operator `torch.ops.modal_core_native.skinny_linear`; built with
 * `torch.utils.cpp_extension.load` and loaded by modal_core/generation/native_linear.py.
 */
#include <ATen/Parallel.h>
#include <ATen/core/Tensor.h>
#include <ATen/ops/empty.h>
#include <immintrin.h>
#include <omp.h>
#include <torch/library.h>

#include <optional>

namespace {

constexpr int GROUP = 8;       /* input rows per pass over a weight row */
constexpr long PREFETCH = 512; /* floats ahead of the weight row being read */

/* Lane i of the result: the sum of the eight lanes of a[i]. */
inline __m256 sum_lanes(const __m256 *a) {
    __m256 s01 = _mm256_hadd_ps(a[0], a[1]), s23 = _mm256_hadd_ps(a[2], a[3]);
    __m256 s45 = _mm256_hadd_ps(a[4], a[5]), s67 = _mm256_hadd_ps(a[6], a[7]);
    __m256 s0123 = _mm256_hadd_ps(s01, s23), s4567 = _mm256_hadd_ps(s45, s67);
    return _mm256_add_ps(_mm256_permute2f128_ps(s0123, s4567, 0x20), _mm256_permute2f128_ps(s0123, s4567, 0x31));
}

/* sums[r] = dot(x[r], wn) for r < ROWS. */
template <int ROWS>
inline __attribute__((always_inline)) void dot_rows(const float *x, long ldx, const float *wn, long K, float *sums) {
    __m256 acc[GROUP];
    for (int r = 0; r < GROUP; r++) acc[r] = _mm256_setzero_ps();
    long vectors = K & ~7L;
    for (long k = 0; k < vectors; k += 8) {
        _mm_prefetch((const char *)(wn + k + PREFETCH), _MM_HINT_T0);
        __m256 weights = _mm256_loadu_ps(wn + k);
        for (int r = 0; r < ROWS; r++) acc[r] = _mm256_fmadd_ps(weights, _mm256_loadu_ps(x + r * ldx + k), acc[r]);
    }
    _mm256_storeu_ps(sums, sum_lanes(acc));
    for (long k = vectors; k < K; k++)
        for (int r = 0; r < ROWS; r++) sums[r] += wn[k] * x[r * ldx + k];
}

void dot_group(long rows, const float *x, long ldx, const float *wn, long K, float *sums) {
    switch (rows) {
        case 1: dot_rows<1>(x, ldx, wn, K, sums); break;
        case 2: dot_rows<2>(x, ldx, wn, K, sums); break;
        case 3: dot_rows<3>(x, ldx, wn, K, sums); break;
        case 4: dot_rows<4>(x, ldx, wn, K, sums); break;
        case 5: dot_rows<5>(x, ldx, wn, K, sums); break;
        case 6: dot_rows<6>(x, ldx, wn, K, sums); break;
        case 7: dot_rows<7>(x, ldx, wn, K, sums); break;
        default: dot_rows<8>(x, ldx, wn, K, sums); break;
    }
}

/* x (rows, K) with row stride ldx, w (N, K) row-major, bias (N) or null, out (rows, N). */
void skinny_linear_f32(const float *x, long rows, long ldx, const float *w, long N, long K, const float *bias, float *out,
                       int threads) {
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

/* `F.linear(inputs, weight, bias)` for float32 CPU inputs (..., K), weight (N, K) and bias (N) contiguous. */
at::Tensor skinny_linear(const at::Tensor &inputs, const at::Tensor &weight, const std::optional<at::Tensor> &bias) {
    TORCH_CHECK(weight.dim() == 2 && weight.is_contiguous(), "skinny_linear: weight must be a contiguous (out, in) matrix");
    TORCH_CHECK(inputs.dim() >= 1 && inputs.size(-1) == weight.size(1), "skinny_linear: inputs (..., ", weight.size(1),
                ") expected for a weight of ", weight.sizes(), ", got ", inputs.sizes());
    TORCH_CHECK(inputs.scalar_type() == at::kFloat && weight.scalar_type() == at::kFloat, "skinny_linear: float32 tensors only");
    TORCH_CHECK(inputs.device().is_cpu() && weight.device().is_cpu(), "skinny_linear: CPU tensors only");
    const float *bias_data = nullptr;
    if (bias.has_value()) {
        TORCH_CHECK(bias->scalar_type() == at::kFloat && bias->is_contiguous() && bias->numel() == weight.size(0),
                    "skinny_linear: bias must be a contiguous float32 vector of ", weight.size(0), " values");
        bias_data = bias->data_ptr<float>();
    }
    const at::Tensor rows_in = inputs.contiguous();
    const long out_features = weight.size(0), in_features = weight.size(1);
    std::vector<int64_t> shape = rows_in.sizes().vec();
    shape.back() = out_features;
    at::Tensor out = at::empty(shape, rows_in.options());
    const long rows = out_features ? out.numel() / out_features : 0;
    if (rows)
        skinny_linear_f32(rows_in.data_ptr<float>(), rows, in_features, weight.data_ptr<float>(), out_features, in_features,
                          bias_data, out.data_ptr<float>(), at::get_num_threads());
    return out;
}

}  // namespace

TORCH_LIBRARY(modal_core_native, m) { m.def("skinny_linear(Tensor inputs, Tensor weight, Tensor? bias) -> Tensor"); }

TORCH_LIBRARY_IMPL(modal_core_native, CPU, m) { m.impl("skinny_linear", &skinny_linear); }
