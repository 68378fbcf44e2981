"""scripts/invert.py and clcae.inversion.runner on tiny CPU networks (32 px generator, narrow encoders)."""
from __future__ import annotations

import importlib.util
import io
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from clcae.checkpoints import load_inverter, save_generator, save_inverter
from clcae.networks.inverters import build_inverter
from clcae.inversion.runner import RunnerError, invert_folder, list_inputs, load_method, read_input
from clcae.networks.domain import DomainNet, save_domain_net

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "scripts" / "invert.py"
GEN = dict(size=32, style_dim=32, n_mlp=2, channel_base=256, channel_max=16)
TRUNK = dict(num_layers=18, widths=[8, 8, 16, 16], style_dim=32)
GOOD = ["a", "b", "gray", "rgba", "sub/c", "sub/deeper/d", "dup.png", "dup.jpg"]
BAD = {"corrupt.png", "empty.jpg", "fake.png", "trunc.jpg"}


def _load_script():
    spec = importlib.util.spec_from_file_location("invert_script", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


script = _load_script()


def run(*argv) -> int:
    return script.main([*map(str, argv), "--device", "cpu", "--no-progress"])


def _inverter(arch: str, input_size, seed: int, **extra):
    torch.manual_seed(seed)
    enc = dict(TRUNK, **({"nhead": 2, "dim_feedforward": 32, "feature_channels": 16, "feature_downsample": 0}
                         if arch == "clcae" else {}))
    inv = build_inverter(dict(arch=arch, encoder=enc, generator=GEN, input_size=list(input_size), **extra)).eval()
    inv.latent_avg.normal_()
    return inv


def _write_images(folder: Path) -> None:
    rng = np.random.default_rng(0)

    def rgb(h, w):
        return Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8))

    (folder / "sub" / "deeper").mkdir(parents=True)
    rgb(40, 50).save(folder / "a.png")
    rgb(33, 47).save(folder / "b.jpg", quality=90)
    Image.fromarray(rng.integers(0, 256, (30, 30), dtype=np.uint8), "L").save(folder / "gray.png")
    Image.fromarray(rng.integers(0, 256, (36, 28, 4), dtype=np.uint8), "RGBA").save(folder / "rgba.png")
    rgb(20, 64).save(folder / "sub" / "c.png")
    rgb(70, 45).save(folder / "sub" / "deeper" / "d.jpeg")
    rgb(32, 32).save(folder / "dup.png")
    rgb(32, 32).save(folder / "dup.jpg")
    (folder / "corrupt.png").write_bytes(b"\x89PNG\r\n\x1a\n" + bytes(range(256)) * 4)
    (folder / "empty.jpg").write_bytes(b"")
    (folder / "fake.png").write_text("this is text, not an image")
    rgb(64, 64).save(folder / "full.jpg", quality=95)
    data = (folder / "full.jpg").read_bytes()
    (folder / "trunc.jpg").write_bytes(data[: len(data) // 2])
    (folder / "full.jpg").unlink()
    (folder / "notes.txt").write_text("not an image: ignored, not reported")


@pytest.fixture(scope="module")
def assets(tmp_path_factory):
    d = tmp_path_factory.mktemp("invert")
    clcae = _inverter("clcae", (32, 32), 1, idx_k=3)
    save_inverter(clcae, d / "clcae.pt")
    save_inverter(_inverter("psp", (16, 32), 2), d / "psp.pt")
    save_inverter(_inverter("e4e", (32, 32), 3), d / "e4e.pt")
    G = clcae.decoder
    G.latent_avg.copy_(clcae.latent_avg)
    save_generator(G, d / "gen.pt")
    torch.manual_seed(4)
    save_domain_net(DomainNet(input_size=16, stem_channels=4, channels=(8, 8), blocks=(1, 1), embed_dim=8,
                              attr_reduce=4, attr_hidden=8), d / "domain.pt")
    imgs = d / "imgs"
    _write_images(imgs)
    small = d / "small"
    small.mkdir()
    shutil.copy(imgs / "a.png", small / "a.png")
    shutil.copy(imgs / "sub" / "c.png", small / "c.png")
    return d


@pytest.fixture(scope="module")
def clcae_run(assets):
    out = assets / "out_clcae"
    assert run("--checkpoint", assets / "clcae.pt", "--input", assets / "imgs", "--out", out, "--batch", 3) == 0
    return out, json.loads((out / "summary.json").read_text())


def _png(path: Path) -> np.ndarray:
    return np.asarray(Image.open(path).convert("RGB"), dtype=np.int16)


def _quantise(image: torch.Tensor) -> np.ndarray:
    arr = ((image.clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8)
    return arr.permute(1, 2, 0).numpy().astype(np.int16)


def _snapshot(out: Path) -> dict[str, tuple[bytes, int]]:
    files = [p for p in out.rglob("*") if p.is_file() and p.name not in ("summary.json", "run.json")]
    return {p.relative_to(out).as_posix(): (p.read_bytes(), p.stat().st_ino) for p in files}


# ---------------------------------------------------------------------------------------------------- CLCAE
def test_clcae_outputs_failures_and_latents(clcae_run, assets):
    out, summary = clcae_run
    assert summary["done"] == len(GOOD) and summary["skipped"] == 0 and summary["total"] == len(GOOD) + len(BAD)
    failed = {Path(f["path"]).name: f["reason"] for f in summary["failures"]}
    assert set(failed) == BAD and summary["failed"] == len(BAD)
    assert "empty" in failed["empty.jpg"] and "not an image" in failed["fake.png"]
    assert "truncated" in failed["trunc.jpg"]
    assert {r["name"] for r in summary["renamed"]} == {"dup.png", "dup.jpg"}
    assert summary["method"] == "clcae" and summary["device"] == "cpu" and summary["images_per_s"] > 0
    assert summary["avg_image_source"] == "rendered" and summary["output_size"] == [32, 32]
    for name in GOOD:
        for kind in ("w", "wplus", "wplus_f"):
            assert Image.open(out / kind / f"{name}.png").size == (32, 32), (kind, name)
        rec = torch.load(out / "latents" / f"{name}.pt", weights_only=True)
        width, height = Image.open(rec["source"]).size  # the strip shows the input as it was (aspect ratio kept)
        assert Image.open(out / "strips" / f"{name}.jpg").size == (round(width * 32 / height) + 3 * 32, 32)
        assert rec["w"].shape == (32,) and rec["wplus"].shape == (8, 32) and rec["f"].shape == (16, 8, 8)
        assert rec["w"].dtype == torch.float32 and rec["method"] == "clcae" and rec["input_size"] == [32, 32]
        assert rec["checkpoint"] == str(assets / "clcae.pt") and rec["idx_k"] == 3
    assert not any("notes" in p.name or "corrupt" in p.name for p in out.rglob("*"))
    # the two inputs named dup must not overwrite each other
    assert not np.array_equal(_png(out / "wplus_f" / "dup.png.png"), _png(out / "wplus_f" / "dup.jpg.png"))


def test_saved_latents_rerender_the_saved_images(clcae_run, assets):
    out, _ = clcae_run
    inv = load_inverter(assets / "clcae.pt")
    G = inv.decoder
    for name, src in [("a", "a.png"), ("sub/c", "sub/c.png"), ("rgba", "rgba.png")]:
        rec = torch.load(out / "latents" / f"{name}.pt", weights_only=True)
        with torch.no_grad():
            img_f = G.synthesis(rec["wplus"][None], features_in={rec["idx_k"]: rec["f"][None]},
                                feature_scale=rec["feature_scale"])[0]
            img_w = G.synthesis(rec["w"][None])[0]
            img_wp = G.synthesis(rec["wplus"][None])[0]
        for kind, img in (("wplus_f", img_f), ("w", img_w), ("wplus", img_wp)):
            diff = np.abs(_quantise(img) - _png(out / kind / f"{name}.png")).max()
            assert diff <= 1, (name, kind, diff)
        # and the codes are those of a direct inversion of the preprocessed input
        direct = inv.invert(read_input(assets / "imgs" / src, (32, 32))[None])
        torch.testing.assert_close(rec["wplus"], direct["wplus"][0], rtol=1e-5, atol=1e-5)
        torch.testing.assert_close(rec["f"], direct["f"][0], rtol=1e-5, atol=1e-5)


def test_resume_skips_and_overwrite_recomputes(assets):
    out = assets / "out_resume"
    args = ("--checkpoint", assets / "clcae.pt", "--input", assets / "imgs", "--out", out, "--batch", 4)
    assert run(*args) == 0
    first = _snapshot(out)
    assert run(*args) == 0
    summary = json.loads((out / "summary.json").read_text())
    assert (summary["done"], summary["skipped"], summary["failed"]) == (0, len(GOOD), len(BAD))
    assert _snapshot(out) == first  # nothing rewritten: same bytes, same inodes

    # an image with a missing file (a run killed before its last file) is recomputed, alone
    (out / "strips" / "a.jpg").unlink()
    (out / "latents" / ".b.pt.x1y2.tmp").write_bytes(b"left over by a killed write")
    assert run(*args) == 0
    summary = json.loads((out / "summary.json").read_text())
    assert (summary["done"], summary["skipped"]) == (1, len(GOOD) - 1)
    again = _snapshot(out)
    assert again["latents/b.pt"] == first["latents/b.pt"]
    # what the project promises: the same batch gives the same bytes (the --overwrite run below); another batch
    # (here a alone, first inside a batch of 4) may change the convolution algorithm and so the last bits of the
    # floats, so the pixels agree within one 8-bit level
    alone, batched = (np.asarray(Image.open(io.BytesIO(b[0])), np.int16) for b in (again["w/a.png"], first["w/a.png"]))
    assert alone.shape == batched.shape and np.abs(alone - batched).max() <= 1
    codes_alone, codes_batched = (torch.load(io.BytesIO((again if k == "a" else first)["latents/a.pt"][0]),
                                             weights_only=True) for k in ("a", "first"))
    for k, v in codes_batched.items():
        if isinstance(v, torch.Tensor) and v.is_floating_point():
            torch.testing.assert_close(codes_alone[k], v, rtol=1e-4, atol=1e-5)
    assert again["w/a.png"][1] != first["w/a.png"][1]  # a's files were rewritten (atomic replace: new inode)

    assert run(*args, "--overwrite") == 0
    summary = json.loads((out / "summary.json").read_text())
    assert (summary["done"], summary["skipped"]) == (len(GOOD), 0)
    redone = _snapshot(out)
    for key, (data, inode) in first.items():
        assert redone[key][1] != inode, key  # every file was written again
        if key.startswith("latents/"):  # the same codes
            before, after = torch.load(io.BytesIO(data), weights_only=True), torch.load(out / key, weights_only=True)
            assert before.keys() == after.keys()
            for k, v in before.items():
                assert torch.equal(after[k], v) if isinstance(v, torch.Tensor) else after[k] == v, (key, k)
        else:  # the same pixels, encoded the same way
            assert redone[key][0] == data, key


def test_other_settings_into_the_same_folder_are_refused(assets, capsys):
    out = assets / "out_settings"
    base = ("--checkpoint", assets / "clcae.pt", "--input", assets / "small", "--out", out)
    assert run(*base) == 0
    capsys.readouterr()
    assert run(*base, "--size", "full", "--resize", "center_crop") == 2
    err = capsys.readouterr().err
    assert "other settings" in err and "--overwrite" in err and "size" in err and "resize" in err
    assert run(*base, "--size", "full", "--resize", "center_crop", "--overwrite") == 0


def test_avg_image_file_replaces_the_rendered_one(assets):
    avg = assets / "avg.png"
    Image.fromarray(np.random.default_rng(7).integers(0, 256, (48, 48, 3), dtype=np.uint8)).save(avg)
    out = assets / "out_avg"
    assert run("--checkpoint", assets / "clcae.pt", "--avg-image", avg, "--input", assets / "small",
               "--out", out) == 0
    summary = json.loads((out / "summary.json").read_text())
    assert summary["avg_image_source"] == str(avg)
    inv = load_inverter(assets / "clcae.pt")
    x = read_input(assets / "small" / "a.png", (32, 32))[None]
    expected = inv.invert(x, avg_image=read_input(avg, (32, 32))[None])
    rec = torch.load(out / "latents" / "a.pt", weights_only=True)
    torch.testing.assert_close(rec["wplus"], expected["wplus"][0], rtol=1e-5, atol=1e-5)
    assert not torch.allclose(rec["wplus"], inv.invert(x)["wplus"][0], atol=1e-3)  # vs the rendered average


# ---------------------------------------------------------------------------------------------------- pSp / e4e
def test_psp_sizes_and_e4e_codes(assets):
    out, full = assets / "out_psp", assets / "out_psp_full"
    assert run("--checkpoint", assets / "psp.pt", "--input", assets / "small", "--out", out) == 0
    assert run("--checkpoint", assets / "psp.pt", "--input", assets / "small", "--out", full, "--size", "full",
               "--format", "jpg", "--no-strips") == 0
    assert sorted(p.name for p in out.iterdir() if p.is_dir()) == ["latents", "strips", "wplus"]
    assert Image.open(out / "wplus" / "a.png").size == (32, 16)  # official: the 16x32 input's aspect (cars-like)
    assert Image.open(out / "strips" / "a.jpg").size == (20 + 32, 16)  # a.png (50x40) as it was, 16 px tall
    assert Image.open(full / "wplus" / "a.jpg").size == (32, 32) and not (full / "strips").exists()
    rec = torch.load(out / "latents" / "a.pt", weights_only=True)
    assert set(rec) >= {"wplus", "method", "checkpoint", "input_size"} and "w" not in rec and "f" not in rec
    assert rec["method"] == "psp" and rec["input_size"] == [16, 32]

    e4e, e4e_bf16 = assets / "out_e4e", assets / "out_e4e_bf16"
    assert run("--checkpoint", assets / "e4e.pt", "--method", "e4e", "--input", assets / "small", "--out", e4e) == 0
    assert run("--checkpoint", assets / "e4e.pt", "--input", assets / "small", "--out", e4e_bf16, "--bf16") == 0
    rec = torch.load(e4e / "latents" / "c.pt", weights_only=True)
    assert torch.equal(rec["w"], rec["wplus"][0]) and "f" not in rec
    low = torch.load(e4e_bf16 / "latents" / "c.pt", weights_only=True)
    assert low["wplus"].dtype == torch.float32 and torch.isfinite(low["wplus"]).all()
    assert (low["wplus"] - rec["wplus"]).abs().max() <= 0.05 * rec["wplus"].abs().max()
    assert json.loads((e4e_bf16 / "summary.json").read_text())["bf16"] is True


# ---------------------------------------------------------------------------------------------------- projection
def test_projection_runs_is_seeded_and_its_latents_rerender(assets, capsys):
    G = load_inverter(assets / "clcae.pt").decoder
    outs = [assets / "out_proj1", assets / "out_proj2"]
    for out in outs:
        assert run("--method", "projection", "--generator", assets / "gen.pt", "--steps", 3, "--perceptual",
                   "none", "--input", assets / "small", "--out", out, "--batch", 2) == 0
    assert sorted(p.name for p in outs[0].iterdir() if p.is_dir()) == ["latents", "strips", "w", "wplus"]
    for name in ("a", "c"):
        a, b = (torch.load(o / "latents" / f"{name}.pt", weights_only=True) for o in outs)
        assert a["method"] == "projection" and a["checkpoint"] == str(assets / "gen.pt")
        assert a["w"].shape == (32,) and torch.equal(a["wplus"], a["w"].expand(8, -1))
        assert len(a["noise"]) == G.num_layers and a["noise"][-1].shape == (1, 32, 32)
        for k in ("w", "wplus"):
            assert torch.equal(a[k], b[k])  # seeded: two runs agree exactly
        with torch.no_grad():
            img = G.synthesis(a["wplus"][None], noise=[n[None] for n in a["noise"]])[0]
        assert np.abs(_quantise(img) - _png(outs[0] / "wplus" / f"{name}.png")).max() <= 1

    # W+ with the domain network's perceptual distance
    out = assets / "out_proj_domain"
    assert run("--method", "projection", "--generator", assets / "gen.pt", "--steps", 2, "--space", "wplus",
               "--perceptual", "domain", "--domain-net", assets / "domain.pt", "--input", assets / "small" / "a.png",
               "--out", out) == 0
    rec = torch.load(out / "latents" / "a.pt", weights_only=True)
    assert "w" not in rec and rec["wplus"].shape == (8, 32) and not (out / "w").exists()

    # started from e4e's codes: one step has learning rate 0, so the result is e4e's own W+
    out = assets / "out_proj_e4e"
    assert run("--method", "projection", "--checkpoint", assets / "e4e.pt", "--space", "wplus", "--steps", 1,
               "--perceptual", "none", "--input", assets / "small", "--out", out) == 0
    e4e = load_inverter(assets / "e4e.pt")
    expected = e4e.invert(read_input(assets / "small" / "a.png", (32, 32))[None])["wplus"][0]
    torch.testing.assert_close(torch.load(out / "latents" / "a.pt", weights_only=True)["wplus"], expected)

    capsys.readouterr()
    assert run("--method", "projection", "--generator", assets / "gen.pt", "--perceptual", "lpips",
               "--lpips-weights", assets / "no_such_alexnet.pth", "--input", assets / "small",
               "--out", assets / "out_lpips") == 2
    err = capsys.readouterr().err
    assert "no_such_alexnet.pth" in err and "--perceptual none" in err


# ---------------------------------------------------------------------------------------------------- errors
def test_clear_errors_with_exit_code_2(assets, tmp_path, capsys):
    empty = tmp_path / "empty"
    empty.mkdir()
    (empty / "readme.txt").write_text("no images here")
    cases = [
        (("--checkpoint", assets / "clcae.pt", "--input", empty), "no image files"),
        (("--checkpoint", assets / "clcae.pt", "--input", tmp_path / "nowhere"), "no such file or folder"),
        (("--checkpoint", tmp_path / "missing.pt", "--input", assets / "small"), "missing.pt: no such file"),
        (("--checkpoint", assets / "gen.pt", "--input", assets / "small"), "--method projection"),
        (("--checkpoint", assets / "clcae.pt", "--method", "psp", "--input", assets / "small"), "holds a clcae"),
        (("--method", "projection", "--input", assets / "small"), "--generator"),
        (("--method", "projection", "--checkpoint", assets / "psp.pt", "--input", assets / "small"), "--space wplus"),
    ]
    for argv, message in cases:
        capsys.readouterr()
        assert run(*argv, "--out", tmp_path / "o") == 2, argv
        err = capsys.readouterr().err
        assert err.startswith("error:") and message in err, (argv, err)
    assert not (tmp_path / "o").exists()


def test_subprocess_exit_code_on_a_bad_checkpoint(assets, tmp_path):
    bad = tmp_path / "broken_ckpt.pt"
    bad.write_bytes(b"PK\x03\x04 this is not a torch file")
    env = dict(os.environ, OMP_NUM_THREADS="1", OMP_WAIT_POLICY="PASSIVE")
    res = subprocess.run([sys.executable, str(SCRIPT), "--checkpoint", str(bad), "--input", str(assets / "small"),
                          "--out", str(tmp_path / "o"), "--device", "cpu"], capture_output=True, text=True,
                         env=env, timeout=120)
    assert res.returncode == 2, res.stderr
    assert "broken_ckpt.pt" in res.stderr and "Traceback" not in res.stderr


def test_defaults_without_arguments(assets, tmp_path, monkeypatch, capsys):
    pre = tmp_path / "pretrained"
    pre.mkdir()
    monkeypatch.setenv("CLCAE_PRETRAINED_DIR", str(pre))
    monkeypatch.chdir(tmp_path)
    assert script.main([]) == 2
    err = capsys.readouterr().err
    assert "synthfaces64_clcae.pt" in err and "does not exist" in err and "--checkpoint FILE" in err

    shutil.copy(assets / "clcae.pt", pre / "synthfaces64_clcae.pt")
    monkeypatch.setattr(script, "DEFAULT_INPUT", tmp_path / "examples")
    assert script.main([]) == 2
    assert "examples" in capsys.readouterr().err

    monkeypatch.setattr(script, "DEFAULT_INPUT", assets / "small")
    assert script.main(["--no-progress"]) == 0
    summary = json.loads((tmp_path / "outputs" / "invert" / "summary.json").read_text())
    assert summary["done"] == 2 and summary["checkpoint"] == str(pre / "synthfaces64_clcae.pt")


# ---------------------------------------------------------------------------------------------------- runner
def test_list_inputs_names(tmp_path):
    for rel in ["x.png", "x.jpg", "X.PNG", "s/y.png", "s/y.png.png", "out/z.png", "one"]:
        p = tmp_path / rel
        p.parent.mkdir(parents=True, exist_ok=True)
        Image.new("RGB", (16, 16)).save(p, format="PNG")
    items, renamed = list_inputs(tmp_path, exclude=tmp_path / "out")
    names = {it.path.relative_to(tmp_path).as_posix(): it.name for it in items}
    # out/ (the output folder inside the input folder) is not read; clashes keep their extension, then get ~k
    assert names == {"X.PNG": "X.PNG", "one": "one", "s/y.png": "s/y", "s/y.png.png": "s/y.png",
                     "x.jpg": "x.jpg", "x.png": "x.png~2"}
    assert [it.name for it in renamed] == ["X.PNG", "x.jpg", "x.png~2"]
    single, _ = list_inputs(tmp_path / "s" / "y.png")
    assert [it.name for it in single] == ["y"]
    with pytest.raises(RunnerError, match="no image files"):
        list_inputs(tmp_path / "out", exclude=tmp_path / "out")


def test_out_of_memory_halves_the_batch_and_nan_outputs_fail_alone(assets, tmp_path):
    loaded = load_method(assets / "e4e.pt")
    inv = loaded.inverter
    original = inv.invert
    sizes = []

    def flaky(x, avg_image=None, images=None):
        sizes.append(x.shape[0])
        if x.shape[0] > 1:
            raise torch.OutOfMemoryError("fake: CUDA out of memory")
        out = original(x, images=images)
        if torch.equal(x, first):  # the first image comes back with NaN codes
            out["wplus"] = out["wplus"] * float("nan")
        return out

    first = read_input(assets / "small" / "a.png", inv.input_size)[None]
    inv.invert = flaky
    summary = invert_folder(inv, assets / "small", tmp_path / "o", batch=2, method=loaded.method,
                            checkpoint=loaded.checkpoint, settings=loaded.settings, progress=False)
    assert sizes == [2, 1, 1]
    assert summary["done"] == 1 and summary["failed"] == 1
    assert "non-finite" in summary["failures"][0]["reason"] and summary["failures"][0]["path"].endswith("a.png")
    assert (tmp_path / "o" / "latents" / "c.pt").is_file() and not (tmp_path / "o" / "latents" / "a.pt").exists()


def test_read_input_policies(tmp_path):
    rng = np.random.default_rng(3)
    path = tmp_path / "wide.png"
    arr = np.zeros((32, 64, 3), np.uint8)
    arr[:, :16] = (255, 0, 0)
    arr[:, 48:] = (255, 0, 0)
    arr[:, 16:48] = (0, 0, 255)
    Image.fromarray(arr).save(path)
    # 'resize': PIL bilinear to (H, W), exactly what the official transforms.Resize does on a PIL image
    x = read_input(path, (16, 24), "resize")
    ref = np.asarray(Image.open(path).convert("RGB").resize((24, 16), Image.Resampling.BILINEAR), np.float32)
    assert x.shape == (3, 16, 24) and x.dtype == torch.float32
    torch.testing.assert_close(x, torch.from_numpy(ref).permute(2, 0, 1) / 127.5 - 1)
    assert x[0].max() > 0.9  # the red sides are kept
    # 'center_crop': the centred square only (blue; the filter reaches just past the box at the edge columns)
    y = read_input(path, (16, 16), "center_crop")
    assert y.shape == (3, 16, 16) and y[2].min() > 0.5 and y[0, :, 1:-1].max() < -0.99
    gray = tmp_path / "g.png"
    Image.fromarray(rng.integers(0, 256, (20, 20), dtype=np.uint8), "L").save(gray)
    g = read_input(gray, (16, 16))
    assert torch.equal(g[0], g[1]) and torch.equal(g[1], g[2]) and -1 <= g.min() and g.max() <= 1


def test_all_bad_gives_exit_1_and_interrupt_keeps_finished_images(assets, tmp_path):
    bad = tmp_path / "bad"
    bad.mkdir()
    (bad / "x.png").write_bytes(b"garbage")
    assert run("--checkpoint", assets / "psp.pt", "--input", bad, "--out", tmp_path / "o1") == 1
    assert json.loads((tmp_path / "o1" / "summary.json").read_text())["failed"] == 1

    loaded = load_method(assets / "psp.pt")
    inv, original, calls = loaded.inverter, loaded.inverter.invert, []

    def interrupted_on_second_batch(x, avg_image=None, images=None):
        calls.append(x.shape[0])
        if len(calls) == 2:
            raise KeyboardInterrupt
        return original(x, images=images)

    inv.invert = interrupted_on_second_batch
    out = tmp_path / "o2"
    summary = invert_folder(inv, assets / "small", out, batch=1, settings=loaded.settings, progress=False)
    assert summary["interrupted"] and summary["done"] == 1
    assert (out / "latents" / "a.pt").is_file() and not (out / "latents" / "c.pt").exists()
    inv.invert = original
    summary = invert_folder(inv, assets / "small", out, batch=1, settings=loaded.settings, progress=False)
    assert (summary["done"], summary["skipped"], summary["interrupted"]) == (1, 1, False)


# ---------------------------------------------------------------------------------------------------- real photos
def test_crops_with_an_alignment_record_name_it_in_their_latents(assets, tmp_path):
    """An aligned crop (scripts/align.py: NAME.png + NAME.json) carries its record into its latents, so edit.py can
    paste an edit back into the photo; an image without a record (or with another JSON) does not."""
    from clcae.align import align_face, save_alignment

    rng = np.random.default_rng(5)
    photo = Image.fromarray(rng.integers(0, 256, (120, 160, 3), dtype=np.uint8))
    landmarks = np.zeros((68, 2))
    landmarks[36:42], landmarks[42:48], landmarks[48], landmarks[54] = [70, 50], [90, 50], [72, 72], [88, 72]
    crops = tmp_path / "crops"
    _, record = save_alignment(align_face(photo, landmarks, 32), crops / "face.png", source=tmp_path / "photo.png")
    Image.fromarray(rng.integers(0, 256, (32, 32, 3), dtype=np.uint8)).save(crops / "plain.png")
    Image.fromarray(rng.integers(0, 256, (32, 32, 3), dtype=np.uint8)).save(crops / "other.png")
    (crops / "other.json").write_text('{"caption": "a sidecar that is not an alignment record"}')
    out = tmp_path / "out"
    assert run("--checkpoint", assets / "clcae.pt", "--input", crops, "--out", out) == 0
    assert torch.load(out / "latents" / "face.pt", weights_only=True)["alignment"] == str(record.resolve())
    for name in ("plain", "other"):
        assert "alignment" not in torch.load(out / "latents" / f"{name}.pt", weights_only=True)


def test_align_options_errors(assets, tmp_path, monkeypatch, capsys):
    base = ("--checkpoint", assets / "clcae.pt", "--input", assets / "small", "--out", tmp_path / "o")
    assert run(*base, "--align-size", "64") == 2
    assert "need --align" in capsys.readouterr().err
    monkeypatch.setitem(sys.modules, "dlib", None)  # as without the [align] extra
    assert run(*base, "--align") == 2
    err = capsys.readouterr().err
    assert err.startswith("error:") and "pip install -e .[align]" in err
    assert not (tmp_path / "o").exists()
