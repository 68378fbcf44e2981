"""Checkpoint I/O: formats, strictness, safety (no code from a file ever runs), atomic writes."""
import builtins
import os
import pickle
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from clcae import checkpoints as ck
from clcae.checkpoints import CheckpointError, load_generator
from clcae.networks.stylegan2 import Generator

ROOT = Path(__file__).resolve().parents[1]


def _tiny(seed=0):
    torch.manual_seed(seed)
    return Generator(16, 32, 2, channel_base=128, channel_max=32).eval()


def test_our_format_roundtrip_weights_only(tmp_path):
    G = _tiny()
    G.latent_avg.normal_()
    path = ck.save_generator(G, tmp_path / "g.pt")
    raw = torch.load(path, weights_only=True)
    assert raw["format"] == "clcae.generator" and raw["format_version"] == ck.FORMAT_VERSION
    assert raw["kwargs"]["channel_base"] == 128
    G2 = load_generator(path)
    assert G2.latent_avg_source == "file" and torch.equal(G2.latent_avg, G.latent_avg)
    w = torch.randn(2, 32)
    assert torch.equal(G.synthesis(w), G2.synthesis(w))


def test_rosinality_and_official_layouts(tmp_path):
    G = _tiny()
    la = torch.randn(32)
    torch.save({"g_ema": G.state_dict(), "g": G.state_dict(), "latent_avg": la}, tmp_path / "ros.pt")
    G2 = load_generator(tmp_path / "ros.pt")
    assert G2.config["size"] == 16 and G2.config["channel_base"] == 128 and torch.equal(G2.latent_avg, la)
    # an official pSp/e4e/CLCAE checkpoint: the generator is decoder.*; latent_avg repeated over 4 rows
    sd = {"encoder.x": torch.zeros(1), **{"decoder." + k: v for k, v in G.state_dict().items()}}
    torch.save({"state_dict": sd, "opts": {"output_size": 16}, "latent_avg": la.repeat(4, 1)}, tmp_path / "psp.pt")
    G3 = load_generator(tmp_path / "psp.pt")
    assert torch.equal(G3.latent_avg, la)
    w = torch.randn(1, 32)
    assert torch.equal(G.synthesis(w), G3.synthesis(w))
    # a training checkpoint's stored constructor arguments (e.g. lr_mlp) win over the defaults
    torch.save({"g_ema": G.state_dict(), "latent_avg": la, "g_kwargs": dict(G.config, lr_mlp=0.05)}, tmp_path / "t.pt")
    assert load_generator(tmp_path / "t.pt").config["lr_mlp"] == 0.05
    torch.save({"g_ema": G.state_dict(), "g_kwargs": dict(G.config, size=64)}, tmp_path / "clash.pt")
    with pytest.raises(CheckpointError, match="size: shapes say 16, file says 64"):
        load_generator(tmp_path / "clash.pt")
    # no latent_avg in the file: estimated, and the generator says so
    torch.save({"g_ema": G.state_dict()}, tmp_path / "noavg.pt")
    assert load_generator(tmp_path / "noavg.pt").latent_avg_source == "estimated"


def test_strict_missing_and_unexpected_keys_are_named(tmp_path):
    sd = dict(_tiny().state_dict())
    sd.pop("to_rgb1.bias")
    sd["extra.thing"] = torch.zeros(2)
    torch.save({"g_ema": sd}, tmp_path / "bad.pt")
    with pytest.raises(CheckpointError, match=r"bad\.pt.*to_rgb1\.bias.*extra\.thing"):
        load_generator(tmp_path / "bad.pt")


def test_non_finite_and_version_checks(tmp_path):
    G = _tiny()
    raw = ck.generator_checkpoint(G)
    raw["state_dict"]["conv1.conv.weight"][0, 0, 0, 0, 0] = float("nan")
    torch.save(raw, tmp_path / "nan.pt")
    with pytest.raises(CheckpointError, match="conv1.conv.weight"):
        load_generator(tmp_path / "nan.pt")
    raw = ck.generator_checkpoint(G)
    raw["format_version"] = 99
    torch.save(raw, tmp_path / "future.pt")
    with pytest.raises(CheckpointError, match="format_version 99"):
        load_generator(tmp_path / "future.pt")


@pytest.mark.parametrize("content,msg", [(b"", "empty"), (b"not a checkpoint at all", "not a readable")])
def test_garbage_files(tmp_path, content, msg):
    p = tmp_path / "x.pt"
    p.write_bytes(content)
    with pytest.raises(CheckpointError, match=msg):
        load_generator(p)
    with pytest.raises(CheckpointError, match="no such file"):
        load_generator(tmp_path / "missing.pt")


def test_atomic_save_keeps_previous_file_on_failure(tmp_path, monkeypatch):
    path = tmp_path / "ckpt.pt"
    ck.atomic_save({"step": 1}, path)

    def broken_save(obj, f, *a, **k):
        f.write(b"partial")
        raise KeyboardInterrupt("killed mid-save")

    monkeypatch.setattr(ck.torch, "save", broken_save)
    with pytest.raises(KeyboardInterrupt):
        ck.atomic_save({"step": 2}, path)
    monkeypatch.undo()
    assert torch.load(path, weights_only=True) == {"step": 1}
    assert [p.name for p in tmp_path.iterdir()] == ["ckpt.pt"]  # no temporary file left behind


class _Evil:
    def __reduce__(self):
        return (os.system, ("echo pwned > /dev/null",))


def test_hostile_pickles_are_refused(tmp_path):
    # a raw pickle with an os.system payload, and one disguised inside a torch.save file
    (tmp_path / "evil.pkl").write_bytes(pickle.dumps({"G_ema": _Evil()}))
    with pytest.raises(CheckpointError, match="refused"):
        load_generator(tmp_path / "evil.pkl")
    torch.save({"g_ema": _Evil()}, tmp_path / "evil.pt")
    with pytest.raises(CheckpointError, match="refused"):
        load_generator(tmp_path / "evil.pt")
    (tmp_path / "eval.pkl").write_bytes(
        b"\x80\x04cbuiltins\neval\n(V__import__('os').system('true')\ntR.")
    with pytest.raises(CheckpointError, match="builtins.eval"):
        ck.load_file(tmp_path / "eval.pkl")


def test_nvidia_pickle_converts_without_running_code(compat_dir, monkeypatch):
    calls = []
    real_import = builtins.__import__

    def tracking_import(name, *a, **k):
        calls.append(("import", name))
        return real_import(name, *a, **k)

    def forbidden(kind):
        def f(*a, **k):
            calls.append((kind, a[:1]))
            raise AssertionError(f"{kind} called while loading a checkpoint")
        return f

    monkeypatch.setattr(builtins, "__import__", tracking_import)
    monkeypatch.setattr(builtins, "exec", forbidden("exec"))
    monkeypatch.setattr(builtins, "eval", forbidden("eval"))
    monkeypatch.setattr(builtins, "compile", forbidden("compile"))
    sys.modules.pop("torch_utils", None)
    G = load_generator(compat_dir / "nvidia_ada_32px.pkl")
    monkeypatch.undo()
    assert not [c for c in calls if c[0] != "import"], calls
    imported = {c[1] for c in calls}
    assert not any(n.split(".")[0] in ("torch_utils", "dnnlib", "training") for n in imported), imported
    assert "torch_utils" not in sys.modules

    cases = torch.load(compat_dir / "nvidia_ada_32px_cases.pt", weights_only=True)
    assert torch.equal(G.latent_avg, cases["w_avg"])
    with torch.no_grad():
        w = G.mapping(cases["z"])
        assert (w - cases["ws"][:, 0]).abs().max() <= 1e-4
        assert (G.synthesis(w) - cases["img"]).abs().max() <= 1e-4
        assert (G.synthesis(G.truncate(w, cases["truncation"])) - cases["img_trunc"]).abs().max() <= 1e-4


def test_nvidia_pickle_keeps_module_src_as_data(compat_dir):
    obj = ck.load_nvidia_pickle(compat_dir / "nvidia_ada_32px.pkl")
    assert ck.detect_format(obj) == "nvidia"
    assert isinstance(obj["G_ema"].meta["module_src"], str)


def test_convert_cli(compat_dir, tmp_path):
    out = tmp_path / "ros.pt"
    r = subprocess.run([sys.executable, str(ROOT / "scripts" / "convert_checkpoint.py"),
                        str(compat_dir / "nvidia_ada_32px.pkl"), str(out), "--to", "rosinality"],
                       capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    assert "differ by at most 0" in r.stdout
    raw = torch.load(out, weights_only=True)
    assert set(raw) == {"g_ema", "latent_avg"}
    r = subprocess.run([sys.executable, str(ROOT / "scripts" / "convert_checkpoint.py"),
                        str(tmp_path / "nope.pkl"), str(tmp_path / "o.pt")], capture_output=True, text=True)
    assert r.returncode == 2 and "no such file" in r.stderr


def test_legacy_torch_format_is_read_weights_only(tmp_path):
    """Pre-1.6 torch.save files (e.g. ArcFace model_ir_se50.pth, torchvision's AlexNet) load as state dicts."""
    path = tmp_path / "legacy.pth"
    sd = {"a.weight": torch.randn(3, 2), "b": torch.arange(4)}
    torch.save(sd, path, _use_new_zipfile_serialization=False)
    got = ck.load_file(path)
    assert set(got) == set(sd) and all(torch.equal(got[k], sd[k]) for k in sd)
