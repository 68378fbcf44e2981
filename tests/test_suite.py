"""The test command survives a native crash (issue 25): with the project's pytest options (setup.cfg), a test that
kills its process is reported as failed by name and the tests after it still run."""
import configparser
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_a_native_crash_fails_one_test_by_name_and_the_suite_goes_on(tmp_path):
    cfg = configparser.ConfigParser()
    cfg.read(ROOT / "setup.cfg")
    addopts = cfg["tool:pytest"]["addopts"]
    (tmp_path / "setup.cfg").write_text(f"[tool:pytest]\naddopts = {addopts}\n")
    (tmp_path / "test_native.py").write_text(
        "import os, signal\n"
        "def test_before(): pass\n"
        "def test_segfaults(): os.kill(os.getpid(), signal.SIGSEGV)\n"
        "def test_aborts(): os.abort()\n"
        "def test_after(): pass\n")
    p = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "test_native.py"],
                       cwd=tmp_path, capture_output=True, text=True, timeout=120)
    out = p.stdout
    assert p.returncode == 1, out + p.stderr
    assert "crashed while running 'test_native.py::test_segfaults'" in out, out
    assert "crashed while running 'test_native.py::test_aborts'" in out, out
    assert "2 failed, 2 passed" in out, out
