"""benchmarks/claims_runs.py (issue 23): the queue resumes started runs, skips finished ones, lists its state."""
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
SCRIPT = REPO / "benchmarks" / "claims_runs.py"


def _run(*args):
    out = subprocess.run([sys.executable, str(SCRIPT), *args], cwd=REPO, capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    return out.stdout


def test_queue_starts_resumes_and_skips(tmp_path):
    root = tmp_path / "claims"
    fresh = _run("--root", str(root), "--dry-run")
    assert "--config synthfaces64 --method clcae" in fresh and "--seed 1" in fresh
    assert "clcae_s0" not in fresh                      # seed 0 of the main rows is the shipped model
    started = root / "psp_s1" / "checkpoints"
    started.mkdir(parents=True)
    (started / "latest.pt").write_bytes(b"")
    (root / "e4e_s1").mkdir()
    (root / "e4e_s1" / "log.txt").write_text("2026-12-07 06:22:34 done: 1200 steps; best validation loss 1\n")
    lines = {line.split(":")[0]: line for line in _run("--root", str(root), "--dry-run").splitlines()}
    assert f"--resume {root / 'psp_s1'}" in lines["[claims] psp_s1"]
    assert lines["[claims] e4e_s1"].endswith("done")
    listing = _run("--root", str(root), "--list")
    assert "psp_s1" in listing and "started" in listing and "shipped: pretrained/synthfaces64_psp.pt" in listing
    assert "--method e4e_s1=" in _run("--root", str(root), "--print-eval")


def test_unknown_run_is_named():
    out = subprocess.run([sys.executable, str(SCRIPT), "--only", "nope"], cwd=REPO, capture_output=True, text=True)
    assert out.returncode == 2 and "nope" in out.stderr


def test_fine_tune_starts_from_the_run_it_names(tmp_path):
    root = tmp_path / "claims"
    lines = {line.split(":")[0]: line for line in _run("--root", str(root), "--dry-run").splitlines()}
    sharpen = lines["[claims] clcae_sharpen_s1"]
    assert f"--init-weights {root / 'clcae_s1' / 'checkpoints' / 'best_model.pt'}" in sharpen
    assert "--adv-lambda 0.05" in sharpen and "--steps 200" in sharpen and "--seed 1" in sharpen
    steps = {line.split(":")[0]: line for line in _run("--root", str(root), "--dry-run", "--steps", "50").splitlines()}
    assert "--steps 50" in steps["[claims] clcae_s1"] and "--steps 50" not in steps["[claims] clcae_sharpen_s1"]
    printed = _run("--root", str(root), "--print-eval")
    assert f"git show 4514919:pretrained/synthfaces64_clcae.pt > {root / 'clcae_s0.pt'}" in printed
    assert "--method clcae_sharpen_s0=pretrained/synthfaces64_clcae.pt" in printed
