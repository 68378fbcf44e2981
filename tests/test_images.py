"""The image-folder reader: every odd input is built here with PIL/numpy and its outcome checked."""
import io
import json
import os
import pickle
import resource
import struct
import time
import zlib

import numpy as np
import pytest
import torch
from PIL import Image

import clcae.data.images as images
from clcae.data.images import (
    ImageFolderDataset,
    ImageReadError,
    display_path,
    from_tensor,
    list_images,
    load_image,
    probe_image,
    save_image,
    skip_bad_collate,
    to_tensor,
)

# ----------------------------------------------------------------------------------------------------------------
# Builders


def noise_rgb(h, w, seed=0):
    return np.random.default_rng(seed).integers(0, 256, (h, w, 3), dtype=np.uint8)


def write_image(path, arr_or_img, fmt=None, **kwargs):
    img = arr_or_img if isinstance(arr_or_img, Image.Image) else Image.fromarray(arr_or_img)
    img.save(path, format=fmt, **kwargs)
    return path


def write_truncated(path, fmt):
    buf = io.BytesIO()
    Image.fromarray(noise_rgb(64, 64)).save(buf, fmt)
    data = buf.getvalue()
    path.write_bytes(data[: len(data) // 2])
    return path


def png_chunk(tag, data):
    return struct.pack(">I", len(data)) + tag + data + struct.pack(">I", zlib.crc32(tag + data) & 0xFFFFFFFF)


def write_png_header_only(path, width, height):
    """A tiny PNG whose IHDR claims width x height (RGB, 8 bit), with correct CRCs and an empty IDAT."""
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    data = (b"\x89PNG\r\n\x1a\n" + png_chunk(b"IHDR", ihdr) + png_chunk(b"IDAT", zlib.compress(b""))
            + png_chunk(b"IEND", b""))
    path.write_bytes(data)
    return path


def thirds(h, w, horizontal=True):
    """Red | green | blue thirds, left to right (or top to bottom)."""
    arr = np.zeros((h, w, 3), np.uint8)
    n = w if horizontal else h
    for k, color in enumerate([(255, 0, 0), (0, 255, 0), (0, 0, 255)]):
        sl = slice(k * n // 3, (k + 1) * n // 3)
        if horizontal:
            arr[:, sl] = color
        else:
            arr[sl, :] = color
    return arr


def mode_of(path):
    with Image.open(path) as im:
        return im.mode


def read_pixels(path):
    with Image.open(path) as im:
        return np.asarray(im.convert("RGB"))


def close(pixel, expected, tol=6):
    return all(abs(int(a) - int(b)) <= tol for a, b in zip(pixel, expected))


# ----------------------------------------------------------------------------------------------------------------
# Bad files


@pytest.mark.parametrize("fmt,name", [("PNG", "cut.png"), ("JPEG", "cut.jpg")])
def test_truncated_file_is_refused(tmp_path, fmt, name):
    path = write_truncated(tmp_path / name, fmt)
    probe_image(path)  # the header is intact: only decoding finds it
    with pytest.raises(ImageReadError, match="truncated") as info:
        load_image(path, 32)
    assert info.value.path == path
    assert name in str(info.value)


def test_zero_byte_file(tmp_path):
    path = tmp_path / "empty.png"
    path.write_bytes(b"")
    with pytest.raises(ImageReadError, match=r"empty file \(0 bytes\)"):
        load_image(path)


def test_text_file_with_image_extension(tmp_path):
    path = tmp_path / "notes.jpg"
    path.write_text("this is not a JPEG\n")
    with pytest.raises(ImageReadError, match="not an image"):
        load_image(path)


def test_header_bomb_refused_before_decoding(tmp_path):
    path = write_png_header_only(tmp_path / "bomb.png", 20000, 20000)
    assert path.stat().st_size < 100
    rss_before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # KiB on Linux
    start = time.perf_counter()
    with pytest.raises(ImageReadError, match="pixel limit") as info:
        load_image(path, 256)
    assert time.perf_counter() - start < 1.0
    rss_growth_mib = (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - rss_before) / 1024
    assert rss_growth_mib < 100, f"peak memory grew by {rss_growth_mib:.0f} MiB"  # decoding would take 1.2 GB
    assert "400,000,000" in info.value.reason
    with pytest.raises(ImageReadError, match="pixel limit"):
        probe_image(path)
    # Allowing more than Pillow's own global limit names that limit instead of ours.
    with pytest.raises(ImageReadError, match="Pillow's own pixel limit.*MAX_IMAGE_PIXELS"):
        load_image(path, max_pixels=None)


def test_pixel_limit_is_ours_and_checked_from_the_header(tmp_path):
    # 4 MP is below Pillow's own limit; the pixel data is missing, so a decode would fail as truncated instead.
    path = write_png_header_only(tmp_path / "big.png", 2000, 2000)
    with pytest.raises(ImageReadError, match="pixel limit of 1,000,000") as info:
        load_image(path, max_pixels=1_000_000)
    assert "2000x2000" in info.value.reason
    with pytest.raises(ImageReadError, match="cannot decode"):
        load_image(path, max_pixels=None)


def test_tiny_image_refused_or_upscaled(tmp_path):
    path = write_image(tmp_path / "tiny.png", noise_rgb(8, 8))
    with pytest.raises(ImageReadError, match="too small: 8x8.*min_size=16"):
        load_image(path, 64)
    img = load_image(path, 64, min_size=1)
    assert img.size == (64, 64) and img.mode == "RGB"


def test_unreadable_permissions(tmp_path):
    if os.geteuid() == 0:
        pytest.skip("root can read any file")
    path = write_image(tmp_path / "locked.png", noise_rgb(32, 32))
    path.chmod(0)
    try:
        with pytest.raises(ImageReadError, match="permission denied"):
            load_image(path)
    finally:
        path.chmod(0o644)


def test_permission_error_is_reported(tmp_path, monkeypatch):
    # Runs as root too: the OS refusal is simulated at the module's open().
    path = write_image(tmp_path / "locked.png", noise_rgb(32, 32))

    def refuse(name, *args, **kwargs):
        raise PermissionError(13, "Permission denied", name)

    monkeypatch.setattr(images, "open", refuse, raising=False)
    with pytest.raises(ImageReadError, match="permission denied"):
        load_image(path)


def test_broken_symlink_and_fifo(tmp_path):
    (tmp_path / "gone.png").symlink_to(tmp_path / "missing.png")
    with pytest.raises(ImageReadError, match="broken symbolic link"):
        load_image(tmp_path / "gone.png")
    os.mkfifo(tmp_path / "pipe.png")
    with pytest.raises(ImageReadError, match="not a regular file"):
        load_image(tmp_path / "pipe.png")  # must not block


# ----------------------------------------------------------------------------------------------------------------
# Colour modes


def test_grayscale(tmp_path):
    path = write_image(tmp_path / "g.png", np.full((20, 20), 77, np.uint8))
    img = load_image(path)
    assert img.mode == "RGB" and img.getpixel((5, 5)) == (77, 77, 77)


def test_cmyk_jpeg(tmp_path):
    path = tmp_path / "cmyk.jpg"
    Image.new("CMYK", (32, 32), (0, 255, 255, 0)).save(path, quality=95)
    assert mode_of(path) == "CMYK"
    img = load_image(path)
    assert img.mode == "RGB" and close(img.getpixel((16, 16)), (255, 0, 0))


def test_16bit_png_scaled_not_clipped(tmp_path):
    row = np.array([0, 1000, 25700, 65535], np.uint16)
    path = write_image(tmp_path / "deep.png", np.tile(row, (16, 4)))
    assert mode_of(path) == "I;16"
    out = np.asarray(load_image(path))
    assert out[0, :4, 0].tolist() == [0, 4, 100, 255]  # round(v * 255 / 65535)
    assert (out[..., 0] == out[..., 2]).all()


def test_16bit_big_endian_and_32bit_int_tiff(tmp_path):
    row = np.array([0, 1000, 25700, 65535], np.uint16)
    big = write_image(tmp_path / "big_endian.tif", Image.fromarray(np.tile(row, (16, 4)).astype(">u2")))
    assert mode_of(big) == "I;16B"
    assert np.asarray(load_image(big))[0, :4, 0].tolist() == [0, 4, 100, 255]
    int32 = write_image(tmp_path / "int32.tif", np.tile(row.astype(np.int32), (16, 4)))
    assert mode_of(int32) == "I"
    assert np.asarray(load_image(int32))[0, :4, 0].tolist() == [0, 4, 100, 255]
    wide = write_image(tmp_path / "wide.tif", np.tile(np.array([-5, 70000, 0, 0], np.int32), (16, 4)))
    out = np.asarray(load_image(wide))[0, :2, 0].tolist()
    assert out == [0, 255]  # outside 16 bits: min-max normalised


def test_float_tiff(tmp_path):
    path = write_image(tmp_path / "f.tif", np.tile(np.array([0.0, 0.5, 1.0, np.nan], np.float32), (16, 4)))
    assert mode_of(path) == "F"
    assert np.asarray(load_image(path))[0, :4, 0].tolist() == [0, 128, 255, 0]


def test_palette_with_transparency(tmp_path):
    img = Image.new("P", (16, 16), 0)
    img.putpalette([255, 0, 0, 0, 255, 0])
    img.paste(1, (8, 0, 16, 16))
    path = tmp_path / "pal.png"
    img.save(path, transparency=0)
    out = load_image(path)
    assert out.getpixel((2, 2)) == (255, 255, 255) and out.getpixel((12, 2)) == (0, 255, 0)
    assert load_image(path, background=(0, 0, 0)).getpixel((2, 2)) == (0, 0, 0)
    gif = tmp_path / "pal.gif"
    img.save(gif, transparency=0)
    assert load_image(gif).getpixel((2, 2)) == (255, 255, 255)


def test_rgba_composited_onto_background(tmp_path):
    arr = np.zeros((16, 16, 4), np.uint8)
    arr[:, :4] = (255, 0, 0, 0)  # fully transparent red
    arr[:, 4:8] = (255, 0, 0, 255)  # opaque red
    arr[:, 8:] = (0, 0, 255, 128)  # half-transparent blue
    path = write_image(tmp_path / "rgba.png", arr)
    out = load_image(path)
    assert out.getpixel((1, 1)) == (255, 255, 255)
    assert out.getpixel((5, 1)) == (255, 0, 0)
    assert close(out.getpixel((12, 1)), (127, 127, 255), tol=2)
    assert load_image(path, background=(0, 0, 0)).getpixel((1, 1)) == (0, 0, 0)


def test_la(tmp_path):
    arr = np.zeros((16, 16, 2), np.uint8)
    arr[:, 8:] = (100, 255)
    path = tmp_path / "la.png"
    Image.fromarray(arr, "LA").save(path)
    out = load_image(path)
    assert out.getpixel((1, 1)) == (255, 255, 255) and out.getpixel((12, 1)) == (100, 100, 100)


def test_rgb_colour_key_transparency(tmp_path):
    arr = np.zeros((16, 16, 3), np.uint8)
    arr[:, 8:] = (10, 20, 30)
    path = tmp_path / "key.png"
    Image.fromarray(arr).save(path, transparency=(0, 0, 0))
    out = load_image(path)
    assert out.getpixel((1, 1)) == (255, 255, 255) and out.getpixel((12, 1)) == (10, 20, 30)


def test_exif_orientation_applied(tmp_path):
    arr = np.full((20, 40, 3), (40, 40, 200), np.uint8)  # stored 40 wide x 20 tall
    arr[:6, :6] = (255, 0, 0)  # red marker in the stored top-left corner
    exif = Image.Exif()
    exif[0x0112] = 6  # display = stored rotated 90 degrees clockwise
    path = tmp_path / "rot.jpg"
    Image.fromarray(arr).save(path, exif=exif.tobytes(), quality=95)
    out = load_image(path)
    assert out.size == (20, 40)  # now 20 wide x 40 tall
    assert close(out.getpixel((17, 2)), (255, 0, 0), tol=40)  # top-left went to top-right
    assert close(out.getpixel((2, 2)), (40, 40, 200), tol=40)
    assert probe_image(path) == (40, 20)  # (H, W), orientation included


# ----------------------------------------------------------------------------------------------------------------
# Size policies


@pytest.fixture
def wide_thirds(tmp_path):
    return write_image(tmp_path / "wide.png", thirds(100, 600))  # 600 wide x 100 tall: red | green | blue


def test_policy_resize(wide_thirds):
    out = load_image(wide_thirds, (192, 256), "resize")
    assert out.size == (256, 192)
    assert close(out.getpixel((2, 96)), (255, 0, 0)) and close(out.getpixel((128, 96)), (0, 255, 0))
    assert close(out.getpixel((253, 96)), (0, 0, 255))


def test_policy_center_crop(wide_thirds, tmp_path):
    out = load_image(wide_thirds, (192, 256), "center_crop")
    assert out.size == (256, 192)
    for xy in [(0, 0), (255, 0), (0, 191), (255, 191), (128, 96)]:
        assert close(out.getpixel(xy), (0, 255, 0)), xy
    tall = write_image(tmp_path / "tall.png", thirds(600, 100, horizontal=False))
    out = load_image(tall, 64, "center_crop")
    assert out.size == (64, 64) and close(out.getpixel((0, 0)), (0, 255, 0))


def test_policy_pad(wide_thirds):
    out = load_image(wide_thirds, (192, 256), "pad", pad_color=(9, 9, 9))
    assert out.size == (256, 192)
    assert out.getpixel((128, 3)) == (9, 9, 9) and out.getpixel((128, 188)) == (9, 9, 9)
    assert close(out.getpixel((2, 96)), (255, 0, 0)) and close(out.getpixel((128, 96)), (0, 255, 0))


def test_policy_none(wide_thirds):
    with pytest.raises(ImageReadError, match="policy='none'"):
        load_image(wide_thirds, (192, 256), "none")
    same = load_image(wide_thirds, (100, 600), "none")
    assert np.array_equal(np.asarray(same), thirds(100, 600))
    assert load_image(wide_thirds).size == (600, 100)  # size=None keeps it whatever the policy


def test_bad_arguments_are_caller_errors(wide_thirds):
    with pytest.raises(ValueError, match="policy"):
        load_image(wide_thirds, 64, "stretch")
    with pytest.raises(ValueError, match="size"):
        load_image(wide_thirds, (64, 0))


# ----------------------------------------------------------------------------------------------------------------
# Scanning


def test_list_images_sorted_sniffed_and_filtered(tmp_path):
    (tmp_path / "b").mkdir()
    write_image(tmp_path / "b" / "z.PNG", noise_rgb(16, 16))
    write_image(tmp_path / "a.jpg", noise_rgb(16, 16))
    write_image(tmp_path / "no_extension", noise_rgb(16, 16), fmt="PNG")
    (tmp_path / "readme.txt").write_text("hello")
    (tmp_path / "blob.bin").write_bytes(os.urandom(64))
    write_image(tmp_path / ".hidden.png", noise_rgb(16, 16))
    (tmp_path / "._a.jpg").write_bytes(b"\x00\x05\x16\x07 AppleDouble")
    found = list_images(tmp_path)
    assert [p.relative_to(tmp_path).as_posix() for p in found] == ["a.jpg", "b/z.PNG", "no_extension"]
    assert list_images(tmp_path, recursive=False) == [tmp_path / "a.jpg", tmp_path / "no_extension"]
    assert list_images(tmp_path / "a.jpg") == [tmp_path / "a.jpg"]


def test_symlink_loop_terminates(tmp_path):
    sub = tmp_path / "sub"
    sub.mkdir()
    write_image(sub / "img.png", noise_rgb(16, 16))
    write_image(tmp_path / "top.png", noise_rgb(16, 16))
    (sub / "loop").symlink_to(tmp_path, target_is_directory=True)
    (tmp_path / "self").symlink_to(".", target_is_directory=True)
    found = list_images(tmp_path)
    assert [p.relative_to(tmp_path).as_posix() for p in found] == ["sub/img.png", "top.png"]


def test_non_utf8_file_names(tmp_path, capsys):
    root = os.fsencode(tmp_path)
    good = os.path.join(root, b"caf\xff.png")
    Image.fromarray(noise_rgb(20, 20)).save(good)
    with open(os.path.join(root, b"bad\xfe.jpg"), "wb") as fh:
        fh.write(b"not an image")
    found = list_images(root)  # bytes root works too
    assert len(found) == 2
    assert load_image(found[1]).size == (20, 20)
    ds = ImageFolderDataset(tmp_path, 16)
    assert len([item for item in ds]) == 2
    report = ds.summary()
    report.encode("utf-8")  # printable: no lone surrogates
    print(report)
    assert "bad\\xfe.jpg" in report and "not an image" in report
    assert "bad\\xfe.jpg" in capsys.readouterr().out
    assert display_path(found[1]).endswith("caf\\xff.png")


def test_empty_folder_names_the_folder(tmp_path):
    empty = tmp_path / "nothing_here"
    empty.mkdir()
    with pytest.raises(ValueError, match="nothing_here.*empty"):
        list_images(empty)
    assert list_images(empty, allow_empty=True) == []
    with pytest.raises(ValueError, match="nothing_here"):
        ImageFolderDataset(empty, 32)
    (empty / "notes.txt").write_text("x")
    with pytest.raises(ValueError, match=r"1 non-image file\(s\) skipped"):
        list_images(empty)
    with pytest.raises(FileNotFoundError, match="missing_dir"):
        list_images(tmp_path / "missing_dir")


# ----------------------------------------------------------------------------------------------------------------
# Dataset


GOOD = ["good_a.png", "good_b.jpg", "sub/good_c.png"]
BAD = {
    "empty.png": "empty file",
    "text.jpg": "not an image",
    "cut.png": "truncated",
    "tiny.png": "too small",
    "bomb.png": "pixel limit",
}


@pytest.fixture
def mixed_folder(tmp_path):
    root = tmp_path / "mixed"
    (root / "sub").mkdir(parents=True)
    write_image(root / "good_a.png", noise_rgb(40, 60, 1))
    write_image(root / "good_b.jpg", noise_rgb(50, 50, 2))
    write_image(root / "sub" / "good_c.png", np.full((30, 30), 9, np.uint8))
    (root / "empty.png").write_bytes(b"")
    (root / "text.jpg").write_text("hello")
    write_truncated(root / "cut.png", "PNG")
    write_image(root / "tiny.png", noise_rgb(8, 8))
    write_png_header_only(root / "bomb.png", 20000, 20000)
    return root


def count_images(loader):
    total = 0
    for batch in loader:
        if batch is None:
            continue
        images_, indices = batch
        assert images_.shape[1:] == (3, 32, 32) and images_.dtype == torch.float32
        assert images_.min() >= -1 and images_.max() <= 1
        total += len(indices)
    return total


def assert_reports_every_bad_file(report, bad_files):
    names = {p.name for p, _ in bad_files}
    assert names == set(BAD)
    for name, why in BAD.items():
        assert any(name in line and why in line for line in report.splitlines()), (name, report)


def test_dataset_dataloader_single_process(mixed_folder, caplog):
    ds = ImageFolderDataset(mixed_folder, 32)
    assert len(ds) == 8
    loader = torch.utils.data.DataLoader(ds, batch_size=3, num_workers=0)
    with caplog.at_level("WARNING", logger="clcae.data.images"):
        assert count_images(loader) == len(ds)  # bad files substituted, the run goes on
    assert_reports_every_bad_file(ds.summary(), ds.bad_files)
    assert all(name in caplog.text for name in BAD)
    image, index = ds[ds.paths.index(mixed_folder / "empty.png")]
    assert ds.paths[index].name in {p.split("/")[-1] for p in GOOD}  # index names the pixels returned


def test_dataset_dataloader_two_workers(mixed_folder, tmp_path):
    log = tmp_path / "run" / "bad_images.jsonl"
    ds = ImageFolderDataset(mixed_folder, 32, error_log=log)
    loader = torch.utils.data.DataLoader(ds, batch_size=3, num_workers=2)
    assert count_images(loader) == len(ds)
    # The workers' copies found the bad files; the shared log brings them back to the parent.
    assert ds._bad == []
    assert_reports_every_bad_file(ds.summary(), ds.bad_files)
    assert all("path" in json.loads(line) for line in log.read_text().splitlines())


def test_verify_drops_bad_files(mixed_folder):
    ds = ImageFolderDataset(mixed_folder, 32, return_path=True)
    report = ds.verify(progress=False)  # headers only: the truncated file still passes
    assert len(ds) == 4 and "4 unreadable" in report
    report = ds.verify(progress=False, decode=True, workers=2)
    assert len(ds) == 3
    assert_reports_every_bad_file(report, ds.bad_files)
    items = list(torch.utils.data.DataLoader(ds, batch_size=3, num_workers=0))
    assert sorted(os.path.relpath(p, mixed_folder) for p in items[0][2]) == sorted(GOOD)


def test_on_error_none_and_raise(mixed_folder):
    ds = ImageFolderDataset(mixed_folder, 32, on_error="none")
    loader = torch.utils.data.DataLoader(ds, batch_size=4, collate_fn=skip_bad_collate)
    assert count_images(loader) == len(GOOD)
    assert skip_bad_collate([None, None]) is None
    strict = ImageFolderDataset(mixed_folder, 32, on_error="raise")
    with pytest.raises(ImageReadError, match="bomb.png"):
        strict[strict.paths.index(mixed_folder / "bomb.png")]


def test_transform_and_list_of_paths(mixed_folder):
    paths = [mixed_folder / "good_a.png", mixed_folder / "sub" / "good_c.png"]
    ds = ImageFolderDataset(paths, (24, 16), policy="pad", transform=lambda img: img.size)
    assert [ds[i] for i in range(2)] == [((16, 24), 0), ((16, 24), 1)]


def test_error_pickles_and_reraises_with_one_argument(tmp_path):
    err = ImageReadError(tmp_path / "x.png", "empty file (0 bytes)")
    copy = pickle.loads(pickle.dumps(err))
    assert copy.path == err.path and copy.reason == err.reason and str(copy) == str(err)
    plain = ImageReadError("Caught ImageReadError in DataLoader worker process 0")
    assert plain.path is None and "worker" in str(plain)


# ----------------------------------------------------------------------------------------------------------------
# Tensors and saving


def test_tensor_round_trip():
    img = Image.fromarray(noise_rgb(12, 20))
    t = to_tensor(img)
    assert t.shape == (3, 12, 20) and t.dtype == torch.float32
    assert t.min() >= -1 and t.max() <= 1
    assert np.array_equal(np.asarray(from_tensor(t)), np.asarray(img))
    assert np.array_equal(np.asarray(from_tensor(t[None])), np.asarray(img))


def test_from_tensor_clamps_and_rounds():
    t = torch.tensor([-3.0, -1.0, 0.0, 0.999, 2.0, float("nan")]).view(1, 1, 6).expand(3, 1, 6)
    assert np.asarray(from_tensor(t))[0, :, 0].tolist() == [0, 0, 128, 255, 255, 128]
    with pytest.raises(ValueError, match="shape"):
        from_tensor(torch.zeros(2, 3, 4, 4))


def test_save_image_atomic(tmp_path, monkeypatch):
    t = to_tensor(Image.fromarray(noise_rgb(16, 16)))
    dest = save_image(t, tmp_path / "out" / "x.png")
    assert np.array_equal(read_pixels(dest), np.asarray(from_tensor(t)))
    save_image(from_tensor(-t), dest)  # overwrite
    assert np.array_equal(read_pixels(dest), np.asarray(from_tensor(-t)))
    before = dest.read_bytes()

    def failing_save(self, fp, *args, **kwargs):
        fp.write(b"partial")
        raise OSError("disk full")

    monkeypatch.setattr(Image.Image, "save", failing_save)
    with pytest.raises(OSError, match="disk full"):
        save_image(t, dest)
    assert dest.read_bytes() == before  # the old file is intact
    assert os.listdir(dest.parent) == ["x.png"]  # and no temporary file is left


def test_image_grid_is_torchvision_make_grid_with_a_border_and_the_logger_grid_without():
    """One image_grid (clcae.sampling) serves generate.py / edit.py (torchvision's layout) and the training logger
    (no outer border, -1 fill)."""
    import math

    from torchvision.utils import make_grid

    from clcae.sampling import image_grid

    g = torch.Generator().manual_seed(0)
    for n, nrow, pad in [(1, None, 2), (3, None, 2), (5, 2, 2), (7, 3, 0), (4, 10, 3)]:
        x = torch.randn(n, 3, 5, 7, generator=g)
        want = make_grid(x, nrow=nrow or math.ceil(math.sqrt(n)), padding=pad, pad_value=1.0)
        assert torch.equal(image_grid(x, nrow, padding=pad), want)
    x = torch.randn(5, 3, 4, 6, generator=g)
    grid = image_grid(x, 2, padding=1, pad_value=-1.0, border=False)
    assert grid.shape == (3, 3 * 5 - 1, 2 * 7 - 1)
    assert torch.equal(grid[:, :4, 7:], x[1]) and bool((grid[:, 10:, 7:] == -1).all())
