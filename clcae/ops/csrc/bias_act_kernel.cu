// Fused bias + leaky ReLU with gain: CUDA kernels (see bias_act.cpp for the definitions).
//
// Element-wise, memory bound: one grid-stride loop per op, 32-bit indexing when the tensor is small enough (the
// channel of an element, (i / inner) % channels, is much cheaper in 32 bits). Arithmetic in float (double for
// double), in the order of the PyTorch reference: leaky_relu(x + b) * scale.

#include <ATen/core/Tensor.h>
#include <ATen/AccumulateType.h>
#include <ATen/Dispatch.h>
#include <ATen/ops/empty.h>
#include <c10/cuda/CUDAException.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>

#include <algorithm>
#include <cstdint>
#include <optional>

namespace {

constexpr int kThreads = 256;
constexpr int64_t kMaxBlocks = int64_t(1) << 20;
// 32-bit indices are safe when i + grid stride cannot overflow: numel < 2^30 and stride <= 2^28
constexpr int64_t kMaxNumel32 = int64_t(1) << 30;

template <typename scalar_t, typename acc_t, typename index_t>
__global__ void __launch_bounds__(kThreads)
    bias_lrelu_kernel(const scalar_t* __restrict__ x, const scalar_t* __restrict__ bias, scalar_t* __restrict__ y,
                      const index_t numel, const index_t channels, const index_t inner, const acc_t slope,
                      const acc_t scale) {
  const index_t stride = static_cast<index_t>(blockDim.x) * static_cast<index_t>(gridDim.x);
  for (index_t i = static_cast<index_t>(blockIdx.x) * static_cast<index_t>(blockDim.x) + threadIdx.x; i < numel;
       i += stride) {
    acc_t v = static_cast<acc_t>(x[i]);
    if (bias != nullptr) {
      v += static_cast<acc_t>(bias[(i / inner) % channels]);
    }
    v = v > acc_t(0) ? v : v * slope;
    y[i] = static_cast<scalar_t>(v * scale);
  }
}

template <typename scalar_t, typename acc_t, typename index_t>
__global__ void __launch_bounds__(kThreads)
    lrelu_grad_kernel(const scalar_t* __restrict__ grad_y, const scalar_t* __restrict__ y,
                      scalar_t* __restrict__ grad_x, const index_t numel, const acc_t slope, const acc_t scale) {
  const index_t stride = static_cast<index_t>(blockDim.x) * static_cast<index_t>(gridDim.x);
  for (index_t i = static_cast<index_t>(blockIdx.x) * static_cast<index_t>(blockDim.x) + threadIdx.x; i < numel;
       i += stride) {
    const acc_t g = static_cast<acc_t>(grad_y[i]) * scale;
    grad_x[i] = static_cast<scalar_t>(static_cast<acc_t>(y[i]) > acc_t(0) ? g : g * slope);
  }
}

unsigned num_blocks(int64_t numel) {
  return static_cast<unsigned>(std::min<int64_t>((numel + kThreads - 1) / kThreads, kMaxBlocks));
}

}  // namespace

at::Tensor bias_lrelu_cuda(const at::Tensor& x, const std::optional<at::Tensor>& bias, double slope, double scale) {
  const c10::cuda::OptionalCUDAGuard device_guard(x.device());
  at::Tensor y = at::empty(x.sizes(), x.options());
  const int64_t numel = x.numel();
  if (numel == 0) {
    return y;
  }
  int64_t channels = 1, inner = 1;
  const bool has_bias = bias.has_value();
  if (has_bias) {
    channels = x.size(1);
    for (int64_t d = 2; d < x.dim(); ++d) {
      inner *= x.size(d);
    }
  }
  cudaStream_t stream = c10::cuda::getCurrentCUDAStream();
  AT_DISPATCH_FLOATING_TYPES_AND2(at::ScalarType::Half, at::ScalarType::BFloat16, x.scalar_type(), "bias_lrelu_cuda",
                                  [&] {
    using acc_t = at::acc_type<scalar_t, /*is_cuda=*/true>;
    const scalar_t* x_ptr = x.const_data_ptr<scalar_t>();
    const scalar_t* b_ptr = has_bias ? bias->const_data_ptr<scalar_t>() : nullptr;
    scalar_t* y_ptr = y.mutable_data_ptr<scalar_t>();
    const acc_t s = static_cast<acc_t>(slope), g = static_cast<acc_t>(scale);
    if (numel < kMaxNumel32) {
      bias_lrelu_kernel<scalar_t, acc_t, int32_t><<<num_blocks(numel), kThreads, 0, stream>>>(
          x_ptr, b_ptr, y_ptr, static_cast<int32_t>(numel), static_cast<int32_t>(channels),
          static_cast<int32_t>(inner), s, g);
    } else {
      bias_lrelu_kernel<scalar_t, acc_t, int64_t><<<num_blocks(numel), kThreads, 0, stream>>>(
          x_ptr, b_ptr, y_ptr, numel, channels, inner, s, g);
    }
    C10_CUDA_KERNEL_LAUNCH_CHECK();
  });
  return y;
}

at::Tensor lrelu_grad_cuda(const at::Tensor& grad_y, const at::Tensor& y, double slope, double scale) {
  const c10::cuda::OptionalCUDAGuard device_guard(y.device());
  at::Tensor grad_x = at::empty(y.sizes(), y.options());
  const int64_t numel = y.numel();
  if (numel == 0) {
    return grad_x;
  }
  cudaStream_t stream = c10::cuda::getCurrentCUDAStream();
  AT_DISPATCH_FLOATING_TYPES_AND2(at::ScalarType::Half, at::ScalarType::BFloat16, y.scalar_type(), "lrelu_grad_cuda",
                                  [&] {
    using acc_t = at::acc_type<scalar_t, /*is_cuda=*/true>;
    const scalar_t* gy_ptr = grad_y.const_data_ptr<scalar_t>();
    const scalar_t* y_ptr = y.const_data_ptr<scalar_t>();
    scalar_t* gx_ptr = grad_x.mutable_data_ptr<scalar_t>();
    const acc_t s = static_cast<acc_t>(slope), g = static_cast<acc_t>(scale);
    if (numel < kMaxNumel32) {
      lrelu_grad_kernel<scalar_t, acc_t, int32_t><<<num_blocks(numel), kThreads, 0, stream>>>(
          gy_ptr, y_ptr, gx_ptr, static_cast<int32_t>(numel), s, g);
    } else {
      lrelu_grad_kernel<scalar_t, acc_t, int64_t><<<num_blocks(numel), kThreads, 0, stream>>>(
          gy_ptr, y_ptr, gx_ptr, numel, s, g);
    }
    C10_CUDA_KERNEL_LAUNCH_CHECK();
  });
  return grad_x;
}
