// upfirdn2d CUDA kernels (see upfirdn2d.cpp for the definition of the op).
//
// Notation: an output sample (oy, ox) applies tap (ty, tx) of the flipped kernel, i.e. weight
// k[kh-1-ty, kw-1-tx], to the upsampled image at (uy + ty, ux + tx) with uy = oy*down_y - pad_y0,
// ux = ox*down_x - pad_x0. The upsampled image holds x[iy, ix] at (iy*up_y, ix*up_x) and zeros elsewhere, so only
// the taps with (uy + ty) % up_y == 0 (and likewise in x) that land inside the image contribute.
//
// Two kernels, same result:
// - upfirdn2d_simple_kernel: one thread per output sample, reads x from global memory. Works for any sizes.
// - upfirdn2d_tiled_kernel: one block per output tile of one (n, c) plane; the input samples the tile needs and
//   the flipped kernel are staged in shared memory. Compile-time specialisations for the 4x4 cases StyleGAN2 uses
//   (up 2, down 2, plain blur) let the compiler unroll the tap loops; a runtime-sized instance covers the rest
//   whenever the tile fits in shared memory.
// Both accumulate in float (double for double inputs).

#include <ATen/core/Tensor.h>
#include <ATen/AccumulateType.h>
#include <ATen/Dispatch.h>
#include <ATen/ops/empty.h>
#include <c10/cuda/CUDAException.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>

#include <algorithm>
#include <climits>
#include <cstdint>

namespace {

constexpr int kThreads = 256;
constexpr size_t kMaxSharedBytes = 48 * 1024;  // available to every block without an opt-in

struct Params {
  int64_t planes;  // N * C
  int in_h, in_w, out_h, out_w;
  int up_x, up_y, down_x, down_y;
  int pad_x0, pad_y0;  // only the leading pads enter the index arithmetic; out_h / out_w carry the trailing ones
  int k_h, k_w;
};

__device__ __forceinline__ int floor_div(int a, int b) {  // b > 0, rounds towards -inf
  return a >= 0 ? a / b : -((-a + b - 1) / b);
}

__device__ __forceinline__ int ceil_div(int a, int b) {  // b > 0, rounds towards +inf
  return -floor_div(-a, b);
}

__device__ __forceinline__ int pos_mod(int a, int b) {  // b > 0, result in [0, b)
  const int r = a % b;
  return r < 0 ? r + b : r;
}

// ------------------------------------------------------------------------------------------------ simple kernel
template <typename scalar_t, typename acc_t>
__global__ void __launch_bounds__(kThreads)
    upfirdn2d_simple_kernel(const scalar_t* __restrict__ x, const acc_t* __restrict__ k, scalar_t* __restrict__ y,
                            const Params p) {
  const int64_t total = p.planes * static_cast<int64_t>(p.out_h) * p.out_w;
  const int64_t in_plane = static_cast<int64_t>(p.in_h) * p.in_w;
  for (int64_t idx = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x; idx < total;
       idx += static_cast<int64_t>(blockDim.x) * gridDim.x) {
    const int ox = static_cast<int>(idx % p.out_w);
    const int64_t rest = idx / p.out_w;
    const int oy = static_cast<int>(rest % p.out_h);
    const int64_t plane = rest / p.out_h;
    const scalar_t* xp = x + plane * in_plane;

    const int uy = oy * p.down_y - p.pad_y0;
    const int ux = ox * p.down_x - p.pad_x0;
    // first input sample at or after max(u, 0), and the tap that reads it (>= 0 because iy0 * up >= uy)
    const int iy0 = ceil_div(max(uy, 0), p.up_y);
    const int ix0 = ceil_div(max(ux, 0), p.up_x);
    const int ty0 = iy0 * p.up_y - uy;
    const int tx0 = ix0 * p.up_x - ux;

    acc_t acc = acc_t(0);
    for (int ty = ty0, iy = iy0; ty < p.k_h && iy < p.in_h; ty += p.up_y, ++iy) {
      const scalar_t* x_row = xp + static_cast<int64_t>(iy) * p.in_w;
      const acc_t* k_row = k + static_cast<int64_t>(p.k_h - 1 - ty) * p.k_w;
      for (int tx = tx0, ix = ix0; tx < p.k_w && ix < p.in_w; tx += p.up_x, ++ix) {
        acc += static_cast<acc_t>(x_row[ix]) * k_row[p.k_w - 1 - tx];
      }
    }
    y[idx] = static_cast<scalar_t>(acc);
  }
}

// ------------------------------------------------------------------------------------------------ tiled kernel
// UP, DOWN, KSIZE > 0 fix up_x = up_y, down_x = down_y, k_h = k_w at compile time; 0 reads them from `p`.
template <typename scalar_t, typename acc_t, int UP, int DOWN, int KSIZE>
__global__ void __launch_bounds__(kThreads)
    upfirdn2d_tiled_kernel(const scalar_t* __restrict__ x, const acc_t* __restrict__ k, scalar_t* __restrict__ y,
                           const Params p, const int tile_h, const int tile_w) {
  const int up_x = UP > 0 ? UP : p.up_x;
  const int up_y = UP > 0 ? UP : p.up_y;
  const int down_x = DOWN > 0 ? DOWN : p.down_x;
  const int down_y = DOWN > 0 ? DOWN : p.down_y;
  const int k_h = KSIZE > 0 ? KSIZE : p.k_h;
  const int k_w = KSIZE > 0 ? KSIZE : p.k_w;

  // layout: [k_h * k_w flipped kernel][input tile]; sized by the host (see make_tile_config)
  extern __shared__ __align__(16) unsigned char smem_raw[];
  acc_t* s_k = reinterpret_cast<acc_t*>(smem_raw);
  acc_t* s_x = s_k + k_h * k_w;

  // flipping both axes of a row-major [k_h, k_w] array reverses it: s_k[ty * k_w + tx] = k[k_h-1-ty, k_w-1-tx]
  const int k_size = k_h * k_w;
  for (int i = threadIdx.x; i < k_size; i += blockDim.x) {
    s_k[i] = k[k_size - 1 - i];
  }

  const int ox0 = blockIdx.x * tile_w;
  const int oy0 = blockIdx.y * tile_h;
  const int tw = min(tile_w, p.out_w - ox0);
  const int th = min(tile_h, p.out_h - oy0);
  // The tile's taps cover upsampled positions [u_lo, u_hi]; the input samples among them are [i_lo, i_hi]. Every
  // tap of every output of the tile reads a sample in this range, so no bounds check is needed below. The range
  // is empty (clamped to 0) only when no tap of the tile lands on a sample.
  const int ix_lo = ceil_div(ox0 * down_x - p.pad_x0, up_x);
  const int iy_lo = ceil_div(oy0 * down_y - p.pad_y0, up_y);
  const int ix_hi = floor_div((ox0 + tw - 1) * down_x - p.pad_x0 + k_w - 1, up_x);
  const int iy_hi = floor_div((oy0 + th - 1) * down_y - p.pad_y0 + k_h - 1, up_y);
  const int in_tw = max(ix_hi - ix_lo + 1, 0);
  const int in_th = max(iy_hi - iy_lo + 1, 0);
  const int in_tile = in_tw * in_th;

  const int64_t in_plane = static_cast<int64_t>(p.in_h) * p.in_w;
  const int64_t out_plane = static_cast<int64_t>(p.out_h) * p.out_w;
  for (int64_t plane = blockIdx.z; plane < p.planes; plane += gridDim.z) {
    const scalar_t* xp = x + plane * in_plane;
    scalar_t* yp = y + plane * out_plane;

    __syncthreads();  // s_k is written (first plane); nobody still reads the previous plane's tile
    for (int i = threadIdx.x; i < in_tile; i += blockDim.x) {
      const int r = i / in_tw;
      const int c = i - r * in_tw;
      const int iy = iy_lo + r;
      const int ix = ix_lo + c;
      const bool inside = iy >= 0 && iy < p.in_h && ix >= 0 && ix < p.in_w;
      s_x[i] = inside ? static_cast<acc_t>(xp[static_cast<int64_t>(iy) * p.in_w + ix]) : acc_t(0);
    }
    __syncthreads();

    for (int i = threadIdx.x; i < th * tw; i += blockDim.x) {
      const int r = i / tw;
      const int c = i - r * tw;
      const int oy = oy0 + r;
      const int ox = ox0 + c;
      const int uy = oy * down_y - p.pad_y0;
      const int ux = ox * down_x - p.pad_x0;
      // first tap on the sample grid (it may lie outside the image: those samples are zeros in s_x)
      const int ty0 = pos_mod(-uy, up_y);
      const int tx0 = pos_mod(-ux, up_x);
      const int sy0 = (uy + ty0) / up_y - iy_lo;  // exact: uy + ty0 is a multiple of up_y
      const int sx0 = (ux + tx0) / up_x - ix_lo;

      acc_t acc = acc_t(0);
#pragma unroll
      for (int ty = ty0, sy = sy0; ty < k_h; ty += up_y, ++sy) {
        const acc_t* x_row = s_x + sy * in_tw;
        const acc_t* k_row = s_k + ty * k_w;
#pragma unroll
        for (int tx = tx0, sx = sx0; tx < k_w; tx += up_x, ++sx) {
          acc += x_row[sx] * k_row[tx];
        }
      }
      yp[static_cast<int64_t>(oy) * p.out_w + ox] = static_cast<scalar_t>(acc);
    }
  }
}

struct TileConfig {
  int tile_h = 0, tile_w = 0;
  size_t smem_bytes = 0;
  dim3 grid;
  bool fits = false;
};

TileConfig make_tile_config(const Params& p, size_t acc_bytes) {
  TileConfig t;
  // 32x32 outputs when not downsampling, fewer when the input footprint per output grows
  t.tile_w = std::max(8, 32 / p.down_x);
  t.tile_h = std::max(8, 32 / p.down_y);
  // most samples an interval of L upsampled positions can hold: ceil(L / up)
  const int64_t in_w_max = ((t.tile_w - 1) * static_cast<int64_t>(p.down_x) + p.k_w + p.up_x - 1) / p.up_x;
  const int64_t in_h_max = ((t.tile_h - 1) * static_cast<int64_t>(p.down_y) + p.k_h + p.up_y - 1) / p.up_y;
  const int64_t elems = static_cast<int64_t>(p.k_h) * p.k_w + in_w_max * in_h_max;
  const int64_t grid_x = (p.out_w + t.tile_w - 1) / t.tile_w;
  const int64_t grid_y = (p.out_h + t.tile_h - 1) / t.tile_h;
  t.smem_bytes = static_cast<size_t>(elems) * acc_bytes;
  t.fits = elems > 0 && t.smem_bytes <= kMaxSharedBytes && grid_x <= INT_MAX && grid_y <= 65535;
  t.grid = dim3(static_cast<unsigned>(grid_x), static_cast<unsigned>(grid_y),
                static_cast<unsigned>(std::min<int64_t>(p.planes, 65535)));
  return t;
}

template <typename scalar_t, typename acc_t, int UP, int DOWN, int KSIZE>
void launch_tiled(const scalar_t* x, const acc_t* k, scalar_t* y, const Params& p, const TileConfig& t,
                  cudaStream_t stream) {
  upfirdn2d_tiled_kernel<scalar_t, acc_t, UP, DOWN, KSIZE>
      <<<t.grid, kThreads, t.smem_bytes, stream>>>(x, k, y, p, t.tile_h, t.tile_w);
  C10_CUDA_KERNEL_LAUNCH_CHECK();
}

template <typename scalar_t, typename acc_t>
void launch_simple(const scalar_t* x, const acc_t* k, scalar_t* y, const Params& p, cudaStream_t stream) {
  const int64_t total = p.planes * static_cast<int64_t>(p.out_h) * p.out_w;
  const int64_t blocks = std::min<int64_t>((total + kThreads - 1) / kThreads, int64_t(1) << 20);
  upfirdn2d_simple_kernel<scalar_t, acc_t>
      <<<static_cast<unsigned>(blocks), kThreads, 0, stream>>>(x, k, y, p);
  C10_CUDA_KERNEL_LAUNCH_CHECK();
}

bool is_case(const Params& p, int up, int down, int ksize) {
  return p.up_x == up && p.up_y == up && p.down_x == down && p.down_y == down && p.k_h == ksize && p.k_w == ksize;
}

}  // namespace

at::Tensor upfirdn2d_cuda(const at::Tensor& x, const at::Tensor& kernel, int up_x, int up_y, int down_x, int down_y,
                          int pad_x0, int pad_x1, int pad_y0, int pad_y1, int out_h, int out_w, int variant) {
  (void)pad_x1;  // the trailing pads only determine out_h / out_w, computed by the caller
  (void)pad_y1;
  const c10::cuda::OptionalCUDAGuard device_guard(x.device());
  at::Tensor y = at::empty({x.size(0), x.size(1), out_h, out_w}, x.options());
  if (y.numel() == 0) {
    return y;
  }
  if (x.numel() == 0) {  // zero-sized image: the output sees only padding
    return y.zero_();
  }

  Params p;
  p.planes = x.size(0) * x.size(1);
  p.in_h = static_cast<int>(x.size(2));
  p.in_w = static_cast<int>(x.size(3));
  p.out_h = out_h;
  p.out_w = out_w;
  p.up_x = up_x;
  p.up_y = up_y;
  p.down_x = down_x;
  p.down_y = down_y;
  p.pad_x0 = pad_x0;
  p.pad_y0 = pad_y0;
  p.k_h = static_cast<int>(kernel.size(0));
  p.k_w = static_cast<int>(kernel.size(1));

  cudaStream_t stream = c10::cuda::getCurrentCUDAStream();
  AT_DISPATCH_FLOATING_TYPES_AND2(at::ScalarType::Half, at::ScalarType::BFloat16, x.scalar_type(), "upfirdn2d_cuda",
                                  [&] {
    using acc_t = at::acc_type<scalar_t, /*is_cuda=*/true>;
    const scalar_t* x_ptr = x.const_data_ptr<scalar_t>();
    const acc_t* k_ptr = kernel.const_data_ptr<acc_t>();
    scalar_t* y_ptr = y.mutable_data_ptr<scalar_t>();
    const TileConfig t = make_tile_config(p, sizeof(acc_t));
    TORCH_CHECK(variant != 2 || t.fits, "upfirdn2d: the tiled kernel was requested but the tile needs ",
                t.smem_bytes, " bytes of shared memory (at most ", kMaxSharedBytes, ")");
    if (variant == 1 || !t.fits) {
      launch_simple<scalar_t, acc_t>(x_ptr, k_ptr, y_ptr, p, stream);
    } else if (variant == 0 && is_case(p, 2, 1, 4)) {
      launch_tiled<scalar_t, acc_t, 2, 1, 4>(x_ptr, k_ptr, y_ptr, p, t, stream);
    } else if (variant == 0 && is_case(p, 1, 2, 4)) {
      launch_tiled<scalar_t, acc_t, 1, 2, 4>(x_ptr, k_ptr, y_ptr, p, t, stream);
    } else if (variant == 0 && is_case(p, 1, 1, 4)) {
      launch_tiled<scalar_t, acc_t, 1, 1, 4>(x_ptr, k_ptr, y_ptr, p, t, stream);
    } else {
      launch_tiled<scalar_t, acc_t, 0, 0, 0>(x_ptr, k_ptr, y_ptr, p, t, stream);
    }
  });
  return y;
}
