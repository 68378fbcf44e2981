"""The inference fast path (issue 20) equals the reference arithmetic: batch norms folded into the IR-SE convolutions,
the generator's fused epilogue (gain, bias, noise), the per-shape modulated-convolution form, prepared FIR kernels,
and the inverter as a whole, fp32 within 1e-4."""
import pytest
import torch
from torch import nn

from clcae.networks.backbones import BottleneckIR, IRSEBackbone, fold_batch_norm
from clcae.networks.layers import Blur, ModulatedConv2d
from clcae.networks.stylegan2 import Generator


def _randomise_bn(module: nn.Module, seed: int = 0) -> None:
    g = torch.Generator().manual_seed(seed)
    for m in module.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.running_mean.copy_(torch.randn(m.num_features, generator=g) * 0.3)
            m.running_var.copy_(torch.rand(m.num_features, generator=g) + 0.5)
            m.weight.data.copy_(torch.randn(m.num_features, generator=g))
            m.bias.data.copy_(torch.randn(m.num_features, generator=g) * 0.2)


@pytest.mark.parametrize("in_c,out_c,stride", [(16, 16, 2), (16, 32, 2), (32, 32, 1)])
def test_bottleneck_folded_equals_layers(in_c, out_c, stride):
    torch.manual_seed(0)
    unit = BottleneckIR(in_c, out_c, stride, se_reduction=4)
    _randomise_bn(unit)
    unit.eval()
    x = torch.randn(2, in_c, 12, 12)
    with torch.no_grad():
        fast = unit(x)
        unit.impl = "ref"
        ref = unit(x)
    torch.testing.assert_close(fast, ref, rtol=1e-5, atol=1e-5)
    with torch.enable_grad():  # with gradients (and in training) the layered forward runs
        unit.impl = "auto"
        torch.testing.assert_close(unit(x), ref, rtol=1e-5, atol=1e-5)


def test_backbone_folded_equals_layers_and_cache_follows_weights():
    torch.manual_seed(0)
    net = IRSEBackbone(18, width_mult=0.25).eval()
    _randomise_bn(net)
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        fast = net(x)
        net.impl = "ref"
        for m in net.modules():
            if hasattr(m, "impl"):
                m.impl = "ref"
        ref = net(x)
        for a, b in zip(fast, ref):
            torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-5)
        conv, bn = net.input_layer[0], net.input_layer[1]
        w0, _ = fold_batch_norm(conv, bn)
        bn.running_var.mul_(4)  # an in-place change (a load_state_dict) invalidates the folded weights
        w1, _ = fold_batch_norm(conv, bn)
        torch.testing.assert_close(w1, w0 / 2)


@pytest.mark.parametrize("fused", [True, False])
@pytest.mark.parametrize("upsample", [False, True])
@pytest.mark.parametrize("demodulate", [True, False])
def test_modulated_conv_inference_forms_equal_reference(fused, upsample, demodulate):
    torch.manual_seed(0)
    conv = ModulatedConv2d(8, 6, 3 if demodulate else 1, 16, demodulate=demodulate, upsample=upsample)
    x, style, bias = torch.randn(3, 8, 8, 8), torch.randn(3, 16), torch.randn(6)
    with torch.no_grad():
        conv.impl = "ref"
        ref = conv(x, style) * 1.5 + bias.view(1, -1, 1, 1)
        conv.impl, conv.fused = "auto", fused
        fast = conv(x, style, gain=1.5, bias=bias)
    torch.testing.assert_close(fast, ref, rtol=1e-5, atol=1e-5)


def test_blur_prepares_its_kernel_once_and_follows_a_new_one():
    blur = Blur([1, 3, 3, 1], pad=(2, 1))
    x = torch.randn(1, 4, 9, 9)
    y = blur(x)
    assert blur._factors_key is not None
    first = blur._factors_cache
    blur(x)
    assert blur._factors_cache is first  # no new factorisation per call
    blur.kernel.mul_(2)
    torch.testing.assert_close(blur(x), 2 * y, rtol=1e-5, atol=1e-6)
    blur.impl = "ref"
    torch.testing.assert_close(blur(x), 2 * y, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("batch", [1, 3])
@pytest.mark.parametrize("conv_clamp", [None, 0.5])
@pytest.mark.parametrize("memory_format", [torch.contiguous_format, torch.channels_last])
def test_generator_inference_equals_reference(batch, conv_clamp, memory_format):
    torch.manual_seed(0)
    G = Generator(32, style_dim=32, n_mlp=2, channel_base=512, channel_max=64, conv_clamp=conv_clamp).eval()
    for i in range(G.num_layers):
        getattr(G.noises, f"noise_{i}").normal_()
    for m in G.modules():
        if hasattr(m, "weight") and m.weight is not None and m.weight.numel() == 1:
            m.weight.data.fill_(0.3)  # noise strengths, zero at init
    ws = torch.randn(batch, G.n_latent, 32)
    f = torch.randn(batch, 32, 16, 16)
    with torch.no_grad():
        ref = G.set_impl("ref").synthesis(ws, features_in={5: f}, feature_scale=0.5)
        G.set_impl("auto").set_memory_format(memory_format)
        fast = G.synthesis(ws, features_in={5: f}, feature_scale=0.5)
        fast_full = G.synthesis(ws, features_in={5: f}, feature_scale=1.0)
        ref_full = G.set_impl("ref").synthesis(ws, features_in={5: f}, feature_scale=1.0)
        none_ref = G.synthesis(ws, noise_mode="none")
        none_fast = G.set_impl("auto").synthesis(ws, noise_mode="none")
    torch.testing.assert_close(fast, ref, rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(fast_full, ref_full, rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(none_fast, none_ref, rtol=1e-4, atol=1e-4)


def test_shipped_inverter_fast_equals_reference():
    from clcae.pretrained import pretrained_dir
    import clcae

    path = pretrained_dir() / "synthfaces64_clcae.pt"
    if not path.exists():
        pytest.skip("shipped 64 px CLCAE model not present")
    inv = clcae.load_inverter(path)
    x = torch.rand(2, 3, *inv.input_size, generator=torch.Generator().manual_seed(0)) * 2 - 1
    fast = inv.invert(x)
    ref = inv.set_impl("ref").invert(x)
    for k in ("w", "wplus", "f", "f_gen", "image_wplus_f", "image_wplus", "image_w"):
        torch.testing.assert_close(fast[k], ref[k], rtol=1e-4, atol=1e-4, msg=k)


def test_bf16_precision_is_opt_in_float32_out_and_close():
    from clcae.pretrained import pretrained_dir
    import clcae
    import math

    path = pretrained_dir() / "synthfaces64_clcae.pt"
    if not path.exists():
        pytest.skip("shipped 64 px CLCAE model not present")
    inv = clcae.load_inverter(path)
    assert inv.precision == "fp32"
    x = torch.rand(2, 3, *inv.input_size, generator=torch.Generator().manual_seed(0)) * 2 - 1
    ref = inv.invert(x)["image_wplus_f"]
    low = clcae.load_inverter(path, precision="bf16").invert(x)["image_wplus_f"]
    assert low.dtype == torch.float32 and not torch.equal(low, ref)  # it did run in reduced precision
    mse = (low - ref).pow(2).mean().item()
    assert 10 * math.log10(ref.abs().max().item() ** 2 / mse) > 35
    with pytest.raises(ValueError, match="precision"):
        inv.set_precision("fp16")


@pytest.mark.parametrize("up,down,pad,taps", [(2, 1, (2, 1, 2, 1), 4), (2, 1, (1, 1, 1, 1), 4), (4, 1, (3, 3, 3, 3), 4),
                                              (2, 1, (2, 1, 2, 1), 3), (1, 1, (1, 1, 1, 1), 4), (1, 1, (2, 1, 0, 1), 4),
                                              (1, 2, (1, 1, 1, 1), 4), (2, 1, (-1, 2, 0, 0), 4)])
def test_upfirdn2d_separable_equals_reference(up, down, pad, taps):
    from clcae.ops import upfirdn2d_ref, upfirdn2d_separable

    g = torch.Generator().manual_seed(taps + up)
    ky, kx = torch.rand(taps, generator=g), torch.rand(taps, generator=g)
    x, bias = torch.randn(2, 5, 9, 8, generator=g), torch.randn(5, generator=g)
    ref = upfirdn2d_ref(x, torch.outer(ky, kx), up=up, down=down, pad=pad) + bias.view(1, -1, 1, 1)
    torch.testing.assert_close(upfirdn2d_separable(x, ky, kx, up=up, down=down, pad=pad, bias=bias), ref,
                               rtol=1e-5, atol=1e-5)
    cl = upfirdn2d_separable(x.contiguous(memory_format=torch.channels_last), ky, kx, up=up, down=down, pad=pad,
                             bias=bias)
    torch.testing.assert_close(cl, ref, rtol=1e-5, atol=1e-5)
