// FlyLoRA's frozen sparse A (per_row non-zeros in each of its r rows) used directly, without
// expanding it to a dense [r, in] matrix: a gather per output in the forward, a scatter-add in
// the backward. Its top-k rank gates are here too (FlyLoRA routes on H itself, no router).
#include "check.h"
#include "kernels.h"
#include "reduce.cuh"

namespace et::cuda {

namespace {

// One warp per (token, rank row): lanes stride over the row's non-zeros.
template <typename X>
__global__ void sparse_forward_kernel(const X* x, long ldx, const int32_t* column, const float* value, long r,
                                      long per_row, float* h, long ldh, long rows) {
  const long item = blockIdx.x * static_cast<long>(blockDim.x / 32) + (threadIdx.x >> 5);
  if (item >= rows * r) return;
  const int lane = threadIdx.x & 31;
  const long t = item / r, i = item % r;
  float sum = 0.0f;
  for (long q = lane; q < per_row; q += 32) sum += value[i * per_row + q] * to_float(x[t * ldx + column[i * per_row + q]]);
  sum = warp_sum(sum);
  if (lane == 0) h[t * ldh + i] = sum;
}

// Columns of different rank rows may coincide, hence the atomics (fp32, into the fp32 dx).
__global__ void sparse_backward_kernel(const float* dh, long lddh, const int32_t* column, const float* value, long r,
                                       long per_row, float* dx, long lddx, long rows) {
  const long item = blockIdx.x * static_cast<long>(blockDim.x / 32) + (threadIdx.x >> 5);
  if (item >= rows * r) return;
  const int lane = threadIdx.x & 31;
  const long t = item / r, i = item % r;
  const float d = dh[t * lddh + i];
  if (d == 0.0f) return;  // unselected ranks (gate 0) contribute nothing
  for (long q = lane; q < per_row; q += 32) atomicAdd(dx + t * lddx + column[i * per_row + q], d * value[i * per_row + q]);
}

__global__ void flylora_gates_kernel(const float* h, long ldh, const float* bias, long r, long k, bool by_magnitude,
                                     float* gate, uint8_t* selected, long rows) {
  const long t = blockIdx.x * static_cast<long>(blockDim.x) + threadIdx.x;
  if (t >= rows) return;
  const float* a = h + t * ldh;
  uint8_t* sel = selected + t * r;
  for (long i = 0; i < r; ++i) sel[i] = 0;
  for (long pick = 0; pick < k && pick < r; ++pick) {
    long best = -1;
    float best_score = 0.0f;
    for (long i = 0; i < r; ++i) {
      if (sel[i]) continue;
      const float v = by_magnitude ? fabsf(a[i] + bias[i]) : a[i] + bias[i];
      if (best < 0 || v > best_score) {  // strict: ties keep the lower index
        best = i;
        best_score = v;
      }
    }
    sel[best] = 1;
  }
  for (long i = 0; i < r; ++i) gate[t * r + i] = sel[i] ? 1.0f : 0.0f;
}

template <typename X>
void forward(cudaStream_t s, const X* x, long ldx, const int32_t* column, const float* value, long r, long per_row,
             float* h, long ldh, long rows) {
  if (rows == 0) return;
  sparse_forward_kernel<<<blocks_for(rows * r, 8), 256, 0, s>>>(x, ldx, column, value, r, per_row, h, ldh, rows);
  ET_CUDA_CHECK_LAUNCH();
}

}  // namespace

void sparse_a_forward(cudaStream_t s, const bf16* x, long ldx, const int32_t* column, const float* value, long r,
                      long per_row, float* h, long ldh, long rows) {
  forward(s, x, ldx, column, value, r, per_row, h, ldh, rows);
}
void sparse_a_forward(cudaStream_t s, const float* x, long ldx, const int32_t* column, const float* value, long r,
                      long per_row, float* h, long ldh, long rows) {
  forward(s, x, ldx, column, value, r, per_row, h, ldh, rows);
}

void sparse_a_backward(cudaStream_t s, const float* dh, long lddh, const int32_t* column, const float* value, long r,
                       long per_row, float* dx, long lddx, long rows) {
  if (rows == 0) return;
  sparse_backward_kernel<<<blocks_for(rows * r, 8), 256, 0, s>>>(dh, lddh, column, value, r, per_row, dx, lddx, rows);
  ET_CUDA_CHECK_LAUNCH();
}

void flylora_gates(cudaStream_t s, const float* h, long ldh, const float* bias, long r, long k, bool by_magnitude,
                   float* gate, uint8_t* selected, long rows) {
  if (rows == 0) return;
  flylora_gates_kernel<<<blocks_for(rows, 128), 128, 0, s>>>(h, ldh, bias, r, k, by_magnitude, gate, selected, rows);
  ET_CUDA_CHECK_LAUNCH();
}

}  // namespace et::cuda
