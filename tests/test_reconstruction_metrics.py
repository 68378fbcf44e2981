"""Reconstruction metrics (clcae.metrics.reconstruction): MSE, PSNR and SSIM against their definitions and against
scikit-image (the library of the official CLCAE evaluation), on random and structured images."""
import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from skimage.metrics import peak_signal_noise_ratio, structural_similarity

from clcae.metrics.reconstruction import mse, psnr, resize_images, ssim, to_unit_range

SETTINGS = {
    # name: (our kwargs, skimage kwargs)
    "wang_gaussian_11": (dict(), dict(gaussian_weights=True, sigma=1.5, use_sample_covariance=False)),
    "clcae_uniform_21": (dict(win_size=21, gaussian=False), dict(win_size=21)),
    "skimage_default_7": (dict(win_size=7, gaussian=False), dict()),
}


pytestmark = pytest.mark.usefixtures("one_thread")


def _random_pair(b=3, h=48, w=40, noise=0.3, seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.rand(b, 3, h, w, generator=g, dtype=torch.float64) * 2 - 1
    y = (x + noise * torch.randn(x.shape, generator=g, dtype=torch.float64)).clamp(-1, 1)
    return x, y


def _structured_pair(b=2, size=64, seed=0):
    """Smooth gradients, a disc and stripes per channel; the partner is blurred, shifted and lightly noised."""
    g = torch.Generator().manual_seed(seed)
    t = torch.linspace(-1, 1, size, dtype=torch.float64)
    yy, xx = torch.meshgrid(t, t, indexing="ij")
    imgs = []
    for i in range(b):
        r = 0.3 + 0.2 * i
        disc = ((xx - 0.2 * i) ** 2 + yy ** 2 < r * r).double()
        stripes = torch.sin(8 * math.pi * xx + i)
        imgs.append(torch.stack([0.6 * xx + 0.3 * disc, 0.5 * stripes * (yy > 0), disc - 0.5 * yy]))
    x = torch.stack(imgs).clamp(-1, 1)
    blurred = F.avg_pool2d(F.pad(x, (1, 1, 1, 1), mode="replicate"), 3, stride=1)
    y = (blurred.roll(2, dims=-1) + 0.05 * torch.randn(x.shape, generator=g, dtype=torch.float64)).clamp(-1, 1)
    return x, y


def _hwc01(t: torch.Tensor) -> np.ndarray:
    return to_unit_range(t).permute(1, 2, 0).numpy()


@pytest.mark.parametrize("setting", sorted(SETTINGS))
@pytest.mark.parametrize("images", ["random", "structured"])
def test_ssim_matches_skimage(setting, images):
    ours_kw, sk_kw = SETTINGS[setting]
    x, y = _random_pair() if images == "random" else _structured_pair()
    got = ssim(x, y, **ours_kw)
    assert got.shape == (x.shape[0],) and got.dtype == torch.float64
    ref = [structural_similarity(_hwc01(a), _hwc01(b), channel_axis=-1, data_range=1.0, **sk_kw)
           for a, b in zip(x, y)]
    assert np.allclose(got.numpy(), ref, atol=1e-4, rtol=0)
    # float32 inputs give the same values (computed in float64 inside)
    assert torch.allclose(ssim(x.float(), y.float(), **ours_kw), got, atol=1e-6)


def test_ssim_properties():
    x, y = _random_pair(seed=1)
    assert torch.allclose(ssim(x, x), torch.ones(3, dtype=torch.float64))
    assert torch.allclose(ssim(x, y, win_size=21, gaussian=False), ssim(y, x, win_size=21, gaussian=False))
    assert torch.all(ssim(x, y) < 0.99)
    # more noise, lower SSIM
    _, y_more = _random_pair(seed=1, noise=0.8)
    assert torch.all(ssim(x, y_more) < ssim(x, y))
    with pytest.raises(ValueError, match="smaller than"):
        ssim(x[..., :16, :16], y[..., :16, :16], win_size=21, gaussian=False)
    with pytest.raises(ValueError, match="odd"):
        ssim(x, y, win_size=8)


def test_psnr_matches_skimage_and_definition():
    x, y = _random_pair(seed=2)
    got = psnr(x, y)
    ref = [peak_signal_noise_ratio(_hwc01(a), _hwc01(b), data_range=1.0) for a, b in zip(x, y)]
    assert np.allclose(got.numpy(), ref, atol=1e-6)
    err = (to_unit_range(x) - to_unit_range(y)).pow(2).mean(dim=(1, 2, 3))
    assert torch.allclose(got, -10 * torch.log10(err))
    assert torch.isinf(psnr(x, x)).all()


def test_quantize_matches_metrics_on_8_bit_files():
    x, y = _structured_pair(seed=3)
    as_uint8 = [np.round(_hwc01(t.clamp(-1, 1)) * 255).astype(np.uint8) for t in (x[0], y[0])]
    ref_psnr = peak_signal_noise_ratio(*as_uint8, data_range=255)
    ref_ssim = structural_similarity(*as_uint8, channel_axis=-1, data_range=255, win_size=21)
    assert abs(psnr(x, y, quantize=True)[0].item() - ref_psnr) < 1e-6
    assert abs(ssim(x, y, quantize=True, win_size=21, gaussian=False)[0].item() - ref_ssim) < 1e-4
    assert psnr(x, y, quantize=True)[0] != psnr(x, y)[0]


def test_mse_resizes_to_256_by_average_pooling():
    g = torch.Generator().manual_seed(4)
    x = torch.rand(2, 3, 512, 512, generator=g) * 2 - 1
    y = torch.rand(2, 3, 512, 512, generator=g) * 2 - 1
    got = mse(x, y)  # default: 256 x 256, adaptive average pool
    x256, y256 = F.avg_pool2d(x.double(), 2), F.avg_pool2d(y.double(), 2)
    assert torch.allclose(got, ((x256 - y256) ** 2).mean(dim=(1, 2, 3)))
    assert torch.allclose(mse(x256, y256, size=None), got)
    assert not torch.allclose(mse(x, y, size=None), got)  # resizing is not a no-op
    assert torch.allclose(mse(x, y, size=None), ((x - y).double() ** 2).mean(dim=(1, 2, 3)))
    assert torch.allclose(mse(x, y, size=256, resize_mode="bilinear"), mse(
        resize_images(x.double(), 256, "bilinear"), resize_images(y.double(), 256, "bilinear"), size=None))
    # [-1, 1] units: opposite constant images differ by 2 everywhere
    ones = torch.ones(1, 3, 32, 32)
    assert mse(ones, -ones, size=None).item() == pytest.approx(4.0)
    # clamped to [-1, 1] like a saved image, unless asked not to
    assert mse(3 * ones, ones, size=None).item() == 0.0
    assert mse(3 * ones, ones, size=None, clamp=False).item() == pytest.approx(4.0)


def test_metrics_are_batched_and_not_differentiated():
    x, y = _random_pair(b=4, h=32, w=32, seed=5)
    x = x.clone().requires_grad_(True)
    for value in (mse(x, y, size=None), psnr(x, y), ssim(x, y)):
        assert value.shape == (4,) and not value.requires_grad
    each = torch.cat([ssim(x[i:i + 1], y[i:i + 1], win_size=21, gaussian=False) for i in range(4)])
    assert torch.allclose(ssim(x, y, win_size=21, gaussian=False), each)
    with pytest.raises(ValueError, match="same shape"):
        mse(x, y[:2])
    with pytest.raises(ValueError, match="resize_mode"):
        mse(x, y, resize_mode="nearest")
