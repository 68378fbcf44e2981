"""scripts/demo.py, the README's main-job command, on tiny stand-ins for the shipped models placed in a temporary
``$CLCAE_PRETRAINED_DIR``: samples -> invert examples/ -> edit -> report, and what it says when files are missing."""
from __future__ import annotations

import importlib.util
import json
import re
import shutil
import sys
import urllib.parse
from pathlib import Path

import pytest
import torch

from clcae.checkpoints import save_generator, save_inverter
from clcae.editing import save_direction
from clcae.networks.inverters import build_inverter
from clcae.networks.stylegan2 import Generator
from clcae.pretrained import (SYNTHFACES_CLCAE, SYNTHFACES_DIRECTIONS, SYNTHFACES_DOMAIN_NET, SYNTHFACES_GENERATOR,
                              SYNTHFACES_PSP)

ROOT = Path(__file__).resolve().parents[1]
GEN = dict(size=32, style_dim=32, n_mlp=2, channel_base=256, channel_max=16)
ENCODER = dict(num_layers=18, widths=[8, 8, 16, 16], style_dim=32, nhead=2, dim_feedforward=32, feature_channels=16,
               feature_downsample=0)

pytestmark = pytest.mark.usefixtures("one_thread")


def _demo():
    spec = importlib.util.spec_from_file_location("demo_under_test", ROOT / "scripts" / "demo.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


demo = _demo()


@pytest.fixture(scope="module")
def models(tmp_path_factory) -> dict[str, Path]:
    """Tiny models saved under the shipped names (a 32 px generator, its CLCAE and pSp inverters, directions)."""
    d = tmp_path_factory.mktemp("models")
    torch.manual_seed(1)
    inv = build_inverter(dict(arch="clcae", encoder=ENCODER, generator=GEN, input_size=[32, 32], idx_k=3)).eval()
    inv.latent_avg.copy_(inv.decoder.mean_latent(256))
    G = Generator(**GEN).eval()
    G.load_state_dict(inv.decoder.state_dict())
    G.latent_avg.copy_(inv.latent_avg)
    save_generator(G, d / SYNTHFACES_GENERATOR)
    save_inverter(inv, d / SYNTHFACES_CLCAE)
    torch.manual_seed(2)
    psp = build_inverter(dict(arch="psp", encoder=dict(num_layers=18, widths=[8, 8, 16, 16], style_dim=32),
                              generator=GEN, input_size=[32, 32])).eval()
    psp.decoder.load_state_dict(inv.decoder.state_dict())
    psp.latent_avg.copy_(inv.latent_avg)
    save_inverter(psp, d / SYNTHFACES_PSP)
    (d / SYNTHFACES_DIRECTIONS).mkdir()
    for i, attribute in enumerate(demo.DEMO_EDITS):
        vec = torch.randn(32, generator=torch.Generator().manual_seed(10 + i))
        save_direction(d / SYNTHFACES_DIRECTIONS / f"{attribute}.pt", vec / vec.norm(), attribute=attribute,
                       generator=G)
    shutil.copy(ROOT / "pretrained" / SYNTHFACES_DOMAIN_NET, d / SYNTHFACES_DOMAIN_NET)
    return {"dir": d}


def _pretrained(tmp_path: Path, models: dict, names: list[str]) -> Path:
    pre = tmp_path / "pretrained"
    pre.mkdir()
    for name in names:
        src = models["dir"] / name
        (shutil.copytree if src.is_dir() else shutil.copy)(src, pre / name)
    return pre


def test_demo_inverts_edits_and_reports(models, tmp_path, monkeypatch, capsys):
    pre = _pretrained(tmp_path, models, [SYNTHFACES_GENERATOR, SYNTHFACES_CLCAE, SYNTHFACES_PSP,
                                         SYNTHFACES_DIRECTIONS, SYNTHFACES_DOMAIN_NET])
    monkeypatch.setenv("CLCAE_PRETRAINED_DIR", str(pre))
    out = tmp_path / "demo"
    assert demo.main(["--out", str(out), "--device", "cpu", "--n", "4", "--no-progress"]) == 0
    printed = capsys.readouterr().out
    report = out / "report" / "report.html"
    assert printed.strip().splitlines()[-1] == f"Report: {report.resolve()}"
    for cmd in ("generate.py", "invert.py", "edit.py", "eval.py"):
        assert f"$ python scripts/{cmd}" in printed, cmd
    assert "NOTE" not in printed

    examples = sorted(p.stem for p in (ROOT / "examples").glob("*.png"))
    assert (out / "samples" / "grid.png").is_file()
    summary = json.loads((out / "invert" / "summary.json").read_text())
    assert summary["done"] == len(examples) == 8, summary
    assert sorted(p.stem for p in (out / "invert" / "latents").glob("*.pt")) == examples
    for attribute in demo.DEMO_EDITS:  # every image, every representation, every strength
        grids = sorted(p.stem for p in (out / "edit" / f"interfacegan_{attribute}" / "grids").glob("*.jpg"))
        assert grids == examples, attribute
        shots = list((out / "edit" / f"interfacegan_{attribute}" / "wplus_f" / examples[0]).glob("s*.png"))
        assert len(shots) == len(demo.DEMO_STRENGTHS)

    results = json.loads((out / "report" / "results.json").read_text())
    methods = {r["method"] for r in results["results"]}
    assert methods == {"clcae", "psp"}
    edited = {e["target_attribute"] for e in results["editing"]}
    assert edited == set(demo.DEMO_EDITS)
    page = report.read_text(encoding="utf-8")
    sources = [urllib.parse.unquote(s) for s in re.findall(r'<img src="([^"]+)"', page)]
    assert sources and all((report.parent / s).is_file() for s in sources)

    # a second run skips the finished inversions and edits, and rewrites the report
    assert demo.main(["--out", str(out), "--device", "cpu", "--n", "4", "--no-progress"]) == 0
    summary = json.loads((out / "invert" / "summary.json").read_text())
    assert summary["skipped"] == 8 and summary["done"] == 0, summary


def test_demo_says_what_is_missing(models, tmp_path, monkeypatch, capsys):
    pre = _pretrained(tmp_path, models, [])
    monkeypatch.setenv("CLCAE_PRETRAINED_DIR", str(pre))
    assert demo.main(["--out", str(tmp_path / "none"), "--device", "cpu", "--n", "2"]) == 0
    printed = capsys.readouterr().out
    assert "RANDOMLY INITIALISED" in printed and "Report:" not in printed
    assert (tmp_path / "none" / "samples" / "grid.png").is_file()

    shutil.copy(models["dir"] / SYNTHFACES_GENERATOR, pre / SYNTHFACES_GENERATOR)
    assert demo.main(["--out", str(tmp_path / "gen"), "--device", "cpu", "--n", "2"]) == 0
    printed = capsys.readouterr().out
    assert SYNTHFACES_CLCAE in printed and "Report:" not in printed and "RANDOMLY" not in printed

    shutil.copy(models["dir"] / SYNTHFACES_CLCAE, pre / SYNTHFACES_CLCAE)
    shutil.copy(models["dir"] / SYNTHFACES_DOMAIN_NET, pre / SYNTHFACES_DOMAIN_NET)
    out = tmp_path / "nodirs"
    assert demo.main(["--out", str(out), "--device", "cpu", "--n", "2", "--no-progress"]) == 0
    printed = capsys.readouterr().out
    assert "no shipped direction for smile, age, yaw" in printed and "Report:" in printed
    assert not (out / "edit").exists()
    results = json.loads((out / "report" / "results.json").read_text())
    assert {r["method"] for r in results["results"]} == {"clcae"} and not results.get("editing")
