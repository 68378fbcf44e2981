// upfirdn2d: Python binding and argument checks. The kernels are in upfirdn2d_kernel.cu.
//
// y[n, c, oy, ox] = sum_{ty, tx} k[kh-1-ty, kw-1-tx] * u[n, c, oy*down_y + ty - pad_y0, ox*down_x + tx - pad_x0]
// where u is x upsampled by zero insertion (u[i*up] = x[i], zero elsewhere and outside the image), i.e. the
// kernel is applied as a true (flipped) convolution, as in rosinality's and NVIDIA's StyleGAN2.

#include <torch/extension.h>

#include <climits>
#include <cstdlib>

// Defined in upfirdn2d_kernel.cu. `variant`: 0 = automatic, 1 = simple kernel, 2 = tiled kernel without
// compile-time specialisation (1 and 2 exist so that tests can check every code path against the reference).
torch::Tensor upfirdn2d_cuda(const torch::Tensor& x, const torch::Tensor& kernel, int up_x, int up_y, int down_x,
                             int down_y, int pad_x0, int pad_x1, int pad_y0, int pad_y1, int out_h, int out_w,
                             int variant);

namespace {

int64_t floor_div(int64_t a, int64_t b) {  // b > 0
  return a >= 0 ? a / b : -((-a + b - 1) / b);
}

torch::Tensor upfirdn2d(const torch::Tensor& x, const torch::Tensor& kernel, int64_t up_x, int64_t up_y,
                        int64_t down_x, int64_t down_y, int64_t pad_x0, int64_t pad_x1, int64_t pad_y0,
                        int64_t pad_y1, int64_t variant) {
  TORCH_CHECK(x.is_cuda(), "upfirdn2d: x must be a CUDA tensor, got one on ", x.device());
  TORCH_CHECK(kernel.device() == x.device(), "upfirdn2d: kernel must be on the device of x (", x.device(),
              "), got ", kernel.device());
  TORCH_CHECK(x.dim() == 4, "upfirdn2d: x must have shape [N, C, H, W], got ", x.sizes());
  TORCH_CHECK(kernel.dim() == 2, "upfirdn2d: kernel must have shape [kh, kw], got ", kernel.sizes());
  TORCH_CHECK(x.is_contiguous(), "upfirdn2d: x must be contiguous (the Python wrapper makes it so)");
  TORCH_CHECK(kernel.is_contiguous(), "upfirdn2d: kernel must be contiguous");
  const auto st = x.scalar_type();
  TORCH_CHECK(st == at::kFloat || st == at::kHalf || st == at::kBFloat16 || st == at::kDouble,
              "upfirdn2d: x must be float32, float16, bfloat16 or float64, got ", st);
  const auto kt = st == at::kDouble ? at::kDouble : at::kFloat;
  TORCH_CHECK(kernel.scalar_type() == kt, "upfirdn2d: kernel must be ", kt, " for x of type ", st, ", got ",
              kernel.scalar_type());
  TORCH_CHECK(kernel.size(0) >= 1 && kernel.size(1) >= 1, "upfirdn2d: kernel must not be empty");
  TORCH_CHECK(up_x >= 1 && up_y >= 1, "upfirdn2d: up factors must be >= 1, got (", up_x, ", ", up_y, ")");
  TORCH_CHECK(down_x >= 1 && down_y >= 1, "upfirdn2d: down factors must be >= 1, got (", down_x, ", ", down_y, ")");
  TORCH_CHECK(variant >= 0 && variant <= 2, "upfirdn2d: variant must be 0, 1 or 2, got ", variant);

  const int64_t in_h = x.size(2), in_w = x.size(3), k_h = kernel.size(0), k_w = kernel.size(1);
  // every index the kernels form (upsampled and padded coordinates) must fit in an int
  const int64_t span_y = in_h * up_y + std::abs(pad_y0) + std::abs(pad_y1) + k_h;
  const int64_t span_x = in_w * up_x + std::abs(pad_x0) + std::abs(pad_x1) + k_w;
  TORCH_CHECK(span_y < INT_MAX / 2 && span_x < INT_MAX / 2 && up_y < INT_MAX / 2 && up_x < INT_MAX / 2 &&
                  down_y < INT_MAX / 2 && down_x < INT_MAX / 2,
              "upfirdn2d: sizes too large for 32-bit indexing");
  const int64_t full_h = in_h * up_y + pad_y0 + pad_y1 - k_h;  // (last valid start of the kernel) in padded coords
  const int64_t full_w = in_w * up_x + pad_x0 + pad_x1 - k_w;
  TORCH_CHECK(full_h >= 0 && full_w >= 0, "upfirdn2d: the kernel (", k_h, "x", k_w,
              ") is larger than the upsampled and padded input (", in_h * up_y + pad_y0 + pad_y1, "x",
              in_w * up_x + pad_x0 + pad_x1, ")");
  const int64_t out_h = floor_div(full_h, down_y) + 1;
  const int64_t out_w = floor_div(full_w, down_x) + 1;

  return upfirdn2d_cuda(x, kernel, static_cast<int>(up_x), static_cast<int>(up_y), static_cast<int>(down_x),
                        static_cast<int>(down_y), static_cast<int>(pad_x0), static_cast<int>(pad_x1),
                        static_cast<int>(pad_y0), static_cast<int>(pad_y1), static_cast<int>(out_h),
                        static_cast<int>(out_w), static_cast<int>(variant));
}

}  // namespace

PYBIND11_MODULE(TORCH_EXTENSION_NAME, m) {
  m.def("upfirdn2d", &upfirdn2d,
        "upfirdn2d(x [N,C,H,W] contiguous, kernel [kh,kw] float32 (float64 for float64 x), up_x, up_y, down_x, "
        "down_y, pad_x0, pad_x1, pad_y0, pad_y1, variant) -> [N,C,H',W']",
        py::arg("x"), py::arg("kernel"), py::arg("up_x"), py::arg("up_y"), py::arg("down_x"), py::arg("down_y"),
        py::arg("pad_x0"), py::arg("pad_x1"), py::arg("pad_y0"), py::arg("pad_y1"), py::arg("variant") = 0);
}
