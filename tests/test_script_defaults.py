"""What the scripts choose when a new user does not say: where a config's paths point (from any folder, with or
without $CLCAE_PRETRAINED_DIR), how much make_synthfaces.py renders for a small --n, and --threads on every script
that does heavy work."""
from __future__ import annotations

import importlib.util
import shutil
import sys
from pathlib import Path

import pytest
import torch

from clcae.pretrained import SYNTHFACES_DOMAIN_NET, SYNTHFACES_GENERATOR, pretrained_dir
from clcae.training.encoder_options import PATH_OPTIONS, EncoderTrainOptions
from clcae.training.encoder_loop import resolve_encoder_options
from clcae.training.options import ConfigError, load_config, resolve_config_path

ROOT = Path(__file__).resolve().parents[1]

pytestmark = pytest.mark.usefixtures("one_thread")


def _script(name: str):
    spec = importlib.util.spec_from_file_location(f"{name}_defaults_test", ROOT / "scripts" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


# ------------------------------------------------------------------------------------------- config paths (item 3)
def test_shipped_config_paths_do_not_depend_on_the_working_folder(tmp_path, monkeypatch):
    monkeypatch.delenv("CLCAE_PRETRAINED_DIR", raising=False)
    monkeypatch.chdir(tmp_path)  # not the checkout
    opts, _, _ = resolve_encoder_options({"method": "psp"}, config="synthfaces64")
    assert Path(opts.generator) == pretrained_dir() / SYNTHFACES_GENERATOR and Path(opts.generator).is_file()
    assert Path(opts.domain_net) == pretrained_dir() / SYNTHFACES_DOMAIN_NET and Path(opts.domain_net).is_file()
    assert opts.data == "synthfaces"  # a word, not a path
    # the command line still wins, relative to the working folder as usual
    opts, _, _ = resolve_encoder_options({"method": "psp", "generator": "mine.pt"}, config="synthfaces64")
    assert opts.generator == "mine.pt"


def test_config_paths_follow_clcae_pretrained_dir(tmp_path, monkeypatch):
    moved = tmp_path / "models"
    moved.mkdir()
    monkeypatch.setenv("CLCAE_PRETRAINED_DIR", str(moved))
    monkeypatch.chdir(tmp_path)
    opts, _, _ = resolve_encoder_options({"method": "psp"}, config="synthfaces64")
    assert Path(opts.generator) == moved / SYNTHFACES_GENERATOR
    assert Path(opts.domain_net) == moved / SYNTHFACES_DOMAIN_NET


def test_own_config_paths_are_relative_to_the_config_file(tmp_path, monkeypatch):
    folder = tmp_path / "project"
    (folder / "weights").mkdir(parents=True)
    config = folder / "mine.yaml"
    config.write_text("generator: weights/G.pt\ndata: faces\nval_data: /abs/val\nlpips_weights: ''\n"
                      "domain_net: pretrained/synthfaces64_domain_net.pt\nmethods:\n  psp:\n    arcface_weights: a.pth\n")
    monkeypatch.delenv("CLCAE_PRETRAINED_DIR", raising=False)
    monkeypatch.chdir(tmp_path)
    got = load_config(config, method="psp", known=[f for f in EncoderTrainOptions.__dataclass_fields__],
                      paths=PATH_OPTIONS)
    assert got["generator"] == str(folder / "weights" / "G.pt")
    assert got["data"] == str(folder / "faces") and got["val_data"] == "/abs/val" and got["lpips_weights"] == ""
    assert got["domain_net"] == str(pretrained_dir() / SYNTHFACES_DOMAIN_NET)
    assert got["arcface_weights"] == str(folder / "a.pth")  # a section's path too
    assert resolve_config_path("~/x.pt", config) == str(Path.home() / "x.pt")
    bad = folder / "bad.yaml"
    bad.write_text("generator: 3\n")
    with pytest.raises(ConfigError, match=r"bad.yaml: generator must be a path"):
        load_config(bad, paths=PATH_OPTIONS)


def test_train_dry_run_with_the_shipped_config_from_another_folder(tmp_path, monkeypatch, capsys):
    """The issue's command: from outside the checkout, also with CLCAE_PRETRAINED_DIR set."""
    if not (pretrained_dir() / SYNTHFACES_GENERATOR).is_file():
        pytest.skip("the shipped generator is not there")
    moved = tmp_path / "models"
    moved.mkdir()
    for name in (SYNTHFACES_GENERATOR, SYNTHFACES_DOMAIN_NET):
        shutil.copy(pretrained_dir() / name, moved / name)
    monkeypatch.setenv("CLCAE_PRETRAINED_DIR", str(moved))
    monkeypatch.chdir(tmp_path)
    train = _script("train")
    assert train.main(["--config", "synthfaces64", "--method", "psp", "--dry-run", "--threads", "1",
                       "--num-layers", "18", "--widths", "8,8,16,16", "--batch", "2", "--val-n", "2"]) == 0
    assert "dry run OK" in capsys.readouterr().err
    (moved / SYNTHFACES_GENERATOR).unlink()  # a missing shipped file is named where it was looked for
    assert train.main(["--config", "synthfaces64", "--method", "psp", "--dry-run"]) == 2
    assert str(moved / SYNTHFACES_GENERATOR) in capsys.readouterr().err


# -------------------------------------------------------------------------------- make_synthfaces.py (item 4)
def test_make_synthfaces_small_n_writes_what_it_asks_for(tmp_path, capsys):
    make = _script("make_synthfaces")
    out = tmp_path / "sf"
    assert make.main(["--n", "6", "--out", str(out), "--workers", "8"]) == 0
    printed = capsys.readouterr().out.splitlines()
    assert printed[0].startswith("writing 6 train image(s) at 64px") and "no test split" in printed[0]
    assert "with 1 worker process(es)" in printed[0]  # 6 images are one chunk: no pool of 8
    assert sorted(p.name for p in (out / "images" / "train").iterdir()) == [f"{i:06d}.png" for i in range(6)]
    assert not (out / "images" / "test").exists() and not (out / "labels_test.csv").exists()
    # the default test split is a tenth of --n; an explicit --test-n is kept
    assert make.parse_args(["--n", "50000"]).test_n is None
    out2 = tmp_path / "sf2"
    assert make.main(["--n", "20", "--out", str(out2), "--workers", "1"]) == 0
    assert "20 train image(s) and 2 test image(s)" in capsys.readouterr().out
    assert len(list((out2 / "images" / "test").iterdir())) == 2
    with pytest.raises(SystemExit):
        make.parse_args(["--workers", "0"])


# ---------------------------------------------------------------------------------------- --threads (item 5)
@pytest.mark.parametrize("name", ["invert", "edit", "photo", "eval", "train"])
def test_scripts_that_compute_take_threads(name):
    parser = _script(name).build_parser()
    assert "--threads" in parser.format_help()


def test_eval_threads_sets_torch_threads(tmp_path, monkeypatch, capsys):
    from clcae.checkpoints import save_inverter
    from clcae.inversion import build_inverter

    torch.manual_seed(0)
    psp = build_inverter(dict(arch="psp", encoder=dict(num_layers=18, widths=[8, 8, 16, 16], style_dim=32),
                              generator=dict(size=32, style_dim=32, n_mlp=2, channel_base=256, channel_max=16),
                              input_size=[32, 32])).eval()
    save_inverter(psp, tmp_path / "psp.pt")
    images = tmp_path / "images"
    images.mkdir()
    from PIL import Image

    Image.new("RGB", (32, 32), (90, 120, 200)).save(images / "a.png")
    import clcae.metrics.job as eval_job  # the job that scripts/eval.py calls runs the measuring

    evaluation = _script("eval")
    seen = []
    real = eval_job.evaluate

    def spy(*args, **kwargs):
        seen.append(torch.get_num_threads())
        return real(*args, **kwargs)

    monkeypatch.setattr(eval_job, "evaluate", spy)
    torch.set_num_threads(2)
    argv = ["--method", f"psp={tmp_path / 'psp.pt'}", "--data", str(images), "--no-hub-cache", "--no-progress",
            "--save-images", "0", "--device", "cpu", "--out", str(tmp_path / "out")]
    assert evaluation.main([*argv, "--threads", "1"]) == 0
    assert seen == [1]
    with pytest.raises(SystemExit):
        evaluation.main([*argv, "--threads", "0"])
    assert "expected an integer >= 1" in capsys.readouterr().err
