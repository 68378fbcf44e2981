// Fused bias + leaky ReLU with gain: Python binding and argument checks. The kernels are in bias_act_kernel.cu.
//
//   bias_lrelu(x, bias, slope, scale) = (v > 0 ? v : v * slope) * scale,   v = x + bias[c]  (c = index along dim 1)
//   lrelu_grad(gy, y, slope, scale)   = gy * (y > 0 ? scale : slope * scale)
//
// lrelu_grad takes the forward *output*: for scale > 0 and slope >= 0 its sign is that of the pre-activation, so the
// pre-activation need not be kept for the backward pass (it uses slope where v == 0, as torch's leaky_relu does).

#include <torch/extension.h>

#include <optional>

// Defined in bias_act_kernel.cu.
torch::Tensor bias_lrelu_cuda(const torch::Tensor& x, const std::optional<torch::Tensor>& bias, double slope,
                              double scale);
torch::Tensor lrelu_grad_cuda(const torch::Tensor& grad_y, const torch::Tensor& y, double slope, double scale);

namespace {

void check_floating(const torch::Tensor& t, const char* op, const char* name) {
  const auto st = t.scalar_type();
  TORCH_CHECK(st == at::kFloat || st == at::kHalf || st == at::kBFloat16 || st == at::kDouble, op, ": ", name,
              " must be float32, float16, bfloat16 or float64, got ", st);
}

void check_params(double slope, double scale, const char* op) {
  TORCH_CHECK(scale > 0.0, op, ": scale must be > 0 (the backward pass reads the sign of the output), got ", scale);
  TORCH_CHECK(slope >= 0.0, op, ": negative_slope must be >= 0 (the backward pass reads the sign of the output), got ",
              slope);
}

torch::Tensor bias_lrelu(const torch::Tensor& x, const std::optional<torch::Tensor>& bias, double slope,
                         double scale) {
  TORCH_CHECK(x.is_cuda(), "bias_lrelu: x must be a CUDA tensor, got one on ", x.device());
  TORCH_CHECK(x.is_contiguous(), "bias_lrelu: x must be contiguous (the Python wrapper makes it so)");
  check_floating(x, "bias_lrelu", "x");
  check_params(slope, scale, "bias_lrelu");
  if (bias.has_value()) {
    const torch::Tensor& b = *bias;
    TORCH_CHECK(b.device() == x.device(), "bias_lrelu: bias must be on the device of x (", x.device(), "), got ",
                b.device());
    TORCH_CHECK(b.scalar_type() == x.scalar_type(), "bias_lrelu: bias must have the dtype of x (", x.scalar_type(),
                "), got ", b.scalar_type());
    TORCH_CHECK(b.dim() == 1 && x.dim() >= 2 && b.size(0) == x.size(1), "bias_lrelu: bias of shape ", b.sizes(),
                " does not match the channel dimension (dim 1) of x of shape ", x.sizes());
    TORCH_CHECK(b.is_contiguous(), "bias_lrelu: bias must be contiguous");
  }
  return bias_lrelu_cuda(x, bias, slope, scale);
}

torch::Tensor lrelu_grad(const torch::Tensor& grad_y, const torch::Tensor& y, double slope, double scale) {
  TORCH_CHECK(grad_y.is_cuda() && y.is_cuda(), "lrelu_grad: grad_y and y must be CUDA tensors");
  TORCH_CHECK(grad_y.device() == y.device(), "lrelu_grad: grad_y and y must be on the same device, got ",
              grad_y.device(), " and ", y.device());
  TORCH_CHECK(grad_y.sizes() == y.sizes(), "lrelu_grad: grad_y of shape ", grad_y.sizes(),
              " does not match y of shape ", y.sizes());
  TORCH_CHECK(grad_y.scalar_type() == y.scalar_type(), "lrelu_grad: grad_y (", grad_y.scalar_type(),
              ") and y (", y.scalar_type(), ") must have the same dtype");
  TORCH_CHECK(grad_y.is_contiguous() && y.is_contiguous(), "lrelu_grad: grad_y and y must be contiguous");
  check_floating(y, "lrelu_grad", "y");
  check_params(slope, scale, "lrelu_grad");
  return lrelu_grad_cuda(grad_y, y, slope, scale);
}

}  // namespace

PYBIND11_MODULE(TORCH_EXTENSION_NAME, m) {
  m.def("bias_lrelu", &bias_lrelu,
        "bias_lrelu(x [N,C,...] contiguous, bias [C] of x's dtype or None, slope, scale) -> "
        "(v > 0 ? v : v*slope) * scale with v = x + bias along dim 1",
        py::arg("x"), py::arg("bias"), py::arg("slope"), py::arg("scale"));
  m.def("lrelu_grad", &lrelu_grad, "lrelu_grad(grad_y, y, slope, scale) -> grad_y * (y > 0 ? scale : slope*scale)",
        py::arg("grad_y"), py::arg("y"), py::arg("slope"), py::arg("scale"));
}
