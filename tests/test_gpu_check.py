"""benchmarks/gpu_check.sh --dry-run on the CPU: every step's command works and the one report file is written."""
import shutil
import subprocess
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


def test_gpu_check_dry_run_writes_the_report(tmp_path):
    if shutil.which("bash") is None or shutil.which("timeout") is None:
        pytest.skip("needs bash and timeout")
    if not (REPO / "pretrained" / "synthfaces64_clcae.pt").exists():
        pytest.skip("shipped 64 px CLCAE model not present")
    report = tmp_path / "report.md"
    res = subprocess.run(["bash", str(REPO / "benchmarks" / "gpu_check.sh"), "--dry-run", "--out", str(report)],
                         capture_output=True, text=True, timeout=600)
    text = report.read_text()
    assert res.returncode == 0, res.stdout + res.stderr + text
    assert text.startswith("# GPU check (DRY RUN on the CPU)")
    for title in ("1. machine", "2. CUDA ops vs reference", "3. official-checkpoint parity on CUDA",
                  "4. bench_inversion"):
        assert f"## {title}" in text
    assert text.count("-> exit status 0") == 4 and "0 step(s) failed" in text
    assert "test_clcae_ffhq1024_matches_official" in text  # the parity selection is not empty
    assert "| clcae64 | 1 | fast |" in text  # the benchmark row


def test_gpu_check_rejects_unknown_arguments(tmp_path):
    res = subprocess.run(["bash", str(REPO / "benchmarks" / "gpu_check.sh"), "--bogus"], capture_output=True,
                         text=True, timeout=60, cwd=tmp_path)
    assert res.returncode == 2 and "unknown argument" in res.stderr
