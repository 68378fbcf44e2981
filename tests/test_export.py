"""ONNX export (issue 20): the shipped 64 px models exported, run in ONNX Runtime and compared with PyTorch (<= 1e-3);
skips cleanly without the [export] extra."""
import warnings

import pytest
import torch

pytest.importorskip("onnx")
ort = pytest.importorskip("onnxruntime")

import clcae  # noqa: E402
from clcae.export import check_export, export_onnx, ort_session  # noqa: E402
from clcae.pretrained import pretrained_dir  # noqa: E402


def _shipped(name):
    path = pretrained_dir() / f"synthfaces64_{name}.pt"
    if not path.exists():
        pytest.skip(f"{path.name} not shipped here")
    return clcae.load_inverter(path)


@pytest.mark.parametrize("impl", ["fast", "ref"])
def test_clcae64_export_matches_pytorch(tmp_path, impl):
    inv = _shipped("clcae")
    path = tmp_path / "clcae.onnx"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        names = export_onnx(inv, path, batch=2, impl=impl)
    assert names == ("w", "wplus", "f", "image_wplus_f")
    assert inv.memory_format is None and inv.decoder.conv1.conv.impl == "auto"  # left as it was
    x = torch.rand(2, 3, 64, 64, generator=torch.Generator().manual_seed(3)) * 2 - 1
    diffs = check_export(inv, path, x)
    assert max(diffs.values()) <= 1e-3, diffs
    out = inv.invert(x)  # and against the inverter's own (channels-last, fast) output
    got = ort_session(path).run(None, {"image": x.numpy()})
    torch.testing.assert_close(torch.from_numpy(got[-1]), out["image_wplus_f"], rtol=0, atol=1e-3)
    graph_ops = {n.op_type for n in __import__("onnx").load(str(path)).graph.node}
    assert "Conv" in graph_ops and not any("svd" in op.lower() for op in graph_ops)


def test_psp64_export_and_wrong_batch_is_refused(tmp_path):
    inv = _shipped("psp")
    path = tmp_path / "psp.onnx"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        assert export_onnx(inv, path, batch=1) == ("wplus", "image_wplus")
    x = torch.rand(1, 3, 64, 64) * 2 - 1
    assert max(check_export(inv, path, x).values()) <= 1e-3
    with pytest.raises(Exception):  # the batch size is fixed in the graph
        ort_session(path).run(None, {"image": torch.rand(2, 3, 64, 64).numpy()})


def test_export_script_through_the_clcae_command(tmp_path, capsys):
    if not (pretrained_dir() / "synthfaces64_e4e.pt").exists():
        pytest.skip("shipped e4e model not present")
    from clcae.console import main

    threads = torch.get_num_threads()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        rc = main(["export", "--checkpoint", str(pretrained_dir() / "synthfaces64_e4e.pt"),
                   "--out", str(tmp_path / "e4e.onnx"), "--threads", "1"])
    out = capsys.readouterr().out
    assert rc == 0 and (tmp_path / "e4e.onnx").exists()
    assert "outputs w, wplus, image_wplus" in out and "ONNX Runtime vs PyTorch" in out
    rc = main(["export", "--checkpoint", str(pretrained_dir() / "synthfaces64_e4e.pt"), "--image", "wplus_f",
               "--out", str(tmp_path / "bad.onnx")])
    assert rc == 2 and not (tmp_path / "bad.onnx").exists()
    torch.set_num_threads(threads)


def test_invert_script_onnxruntime_backend_matches_torch(tmp_path, monkeypatch):
    if not (pretrained_dir() / "synthfaces64_clcae.pt").exists():
        pytest.skip("shipped 64 px CLCAE model not present")
    import importlib.util
    from pathlib import Path

    from PIL import Image
    import numpy as np

    repo = Path(__file__).resolve().parents[1]
    spec = importlib.util.spec_from_file_location("clcae_script_invert_t", repo / "scripts" / "invert.py")
    invert = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(invert)
    monkeypatch.setenv("CLCAE_ONNX_CACHE", str(tmp_path / "cache"))
    inputs = tmp_path / "in"
    inputs.mkdir()
    for name in sorted((repo / "examples").glob("*.png"))[:3]:
        (inputs / name.name).write_bytes(name.read_bytes())
    threads = torch.get_num_threads()
    common = ["--checkpoint", str(pretrained_dir() / "synthfaces64_clcae.pt"), "--input", str(inputs), "--batch", "2",
              "--no-progress"]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        assert invert.main(common + ["--out", str(tmp_path / "ort"), "--backend", "onnxruntime"]) == 0
    assert invert.main(common + ["--out", str(tmp_path / "pt")]) == 0
    torch.set_num_threads(threads)
    assert len(list((tmp_path / "cache").glob("*.onnx"))) == 1  # one graph for the model and batch, reused
    lat = sorted((tmp_path / "ort" / "latents").glob("*.pt"))
    assert len(lat) == 3  # 3 images through a batch-2 graph: the last chunk was padded
    for f in lat:
        a, b = torch.load(f, weights_only=True), torch.load(tmp_path / "pt" / "latents" / f.name, weights_only=True)
        for k in ("w", "wplus", "f"):
            torch.testing.assert_close(a[k], b[k], rtol=0, atol=1e-4, msg=k)
    for kind in ("wplus_f", "wplus", "w"):
        for f in sorted((tmp_path / "ort" / kind).glob("*.png")):
            x = np.asarray(Image.open(f)).astype(int)
            y = np.asarray(Image.open(tmp_path / "pt" / kind / f.name)).astype(int)
            assert np.abs(x - y).max() <= 1
    rc = invert.main(common + ["--out", str(tmp_path / "bad"), "--backend", "onnxruntime", "--precision", "bf16"])
    assert rc == 2
