"""``clcae doctor`` (clcae/doctor.py): the report on this machine, and that each check turns into WARN / FAIL with a
fix when what it checks is broken (a damaged model file, an op that disagrees with its reference, a failing CUDA
build, a GPU without a build), the exit status and ``--json``."""
from __future__ import annotations

import json
import sys

import pytest
import torch

from clcae import console, doctor
from clcae.ops import _cuda_ops
from clcae.pretrained import SYNTHFACES_GENERATOR, shipped

pytestmark = pytest.mark.usefixtures("one_thread")


def _by_name(checks):
    return {c.name: c for c in checks}


def test_report_on_this_machine(capsys):
    """A healthy checkout: every line has a status, nothing FAILs, and the text report prints one line per check
    (plus a fix under each WARN) and the count."""
    checks = doctor.run_checks(bench=False)
    names = [c.name for c in checks]
    for name in ("python", "torch", "gpu", "nvcc", "compiler", "ninja", "arch list", "ops build", "ops cpu", "cpu",
                 "align extra", "lpips weights", "export extra"):
        assert name in names, name
    assert all(c.status in (doctor.OK, doctor.WARN, doctor.FAIL) for c in checks)
    assert [c for c in checks if c.status == doctor.FAIL] == []
    assert all(c.fix for c in checks if c.status != doctor.OK)
    by = _by_name(checks)
    assert by["ops cpu"].data["max_diff"]["upfirdn2d up=2"] <= doctor.OPS_TOLERANCE
    if not torch.cuda.is_available():
        assert by["gpu"].status == doctor.OK and by["gpu"].detail.startswith("none")
    if shipped(SYNTHFACES_GENERATOR) is not None:
        assert by["model generator"].status == doctor.OK and by["model generator"].data["loads"]
    text = doctor.format_checks(checks)
    warn = sum(c.status == doctor.WARN for c in checks)
    assert len(text.splitlines()) == len(checks) + warn + 1
    assert text.splitlines()[-1] == f"{len(checks) - warn} OK, {warn} WARN, 0 FAIL"


def test_no_gpu_says_so_and_passes(monkeypatch, tmp_path):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(doctor, "NVIDIA_DRIVER_FILE", tmp_path / "no-driver")
    gpu = doctor.check_gpu()
    assert gpu.status == doctor.OK and "none" in gpu.detail and gpu.data["count"] == 0
    if torch.version.cuda:  # a CUDA torch, a loaded driver, yet no GPU visible: something to fix
        (tmp_path / "driver").write_text("NVRM version: test")
        monkeypatch.setattr(doctor, "NVIDIA_DRIVER_FILE", tmp_path / "driver")
        gpu = doctor.check_gpu()
        assert gpu.status == doctor.WARN and "CUDA_VISIBLE_DEVICES" in gpu.fix


def test_damaged_and_missing_models(tmp_path, monkeypatch, capsys):
    """A model file that does not load FAILs with a fix (exit status 1); a missing one WARNs."""
    (tmp_path / SYNTHFACES_GENERATOR).write_bytes(b"not a checkpoint")
    monkeypatch.setenv("CLCAE_PRETRAINED_DIR", str(tmp_path))
    by = _by_name(doctor.check_shipped_models())
    gen = by["model generator"]
    assert gen.status == doctor.FAIL and str(tmp_path / SYNTHFACES_GENERATOR) in gen.detail
    assert "git checkout" in gen.fix
    assert by["model clcae"].status == doctor.WARN and "missing" in by["model clcae"].detail

    monkeypatch.setattr(doctor, "check_fastest_settings", lambda: doctor.Check("fastest", doctor.OK, "skipped"))
    status = console.main(["doctor", "--no-bench", "--json"])
    report = json.loads(capsys.readouterr().out)
    assert status == 1 and report["exit_status"] == 1 and report["counts"]["FAIL"] >= 1
    failed = [c for c in report["checks"] if c["status"] == "FAIL"]
    assert [c["name"] for c in failed] == ["model generator"], failed


def test_an_op_that_disagrees_with_its_reference_fails(monkeypatch):
    module = sys.modules["clcae.ops.upfirdn2d"]
    fast = module.upfirdn2d_fast
    monkeypatch.setattr(module, "upfirdn2d_fast", lambda *a, **k: fast(*a, **k) + 1e-3)
    checks = _by_name(doctor.check_ops_numerics())
    assert checks["ops cpu"].status == doctor.FAIL and "impl=fast" in checks["ops cpu"].detail
    assert checks["ops cpu"].fix


def test_ops_build_states(monkeypatch, tmp_path):
    """Without a GPU a missing build is fine; with one it WARNs; --build reports a failing compile as FAIL with
    the way to see the compiler's output, and a successful one as OK with its time."""
    if not torch.version.cuda:
        pytest.skip("a CPU-only torch needs no build (the check says so)")
    monkeypatch.setenv("CLCAE_EXTENSIONS_DIR", str(tmp_path / "ext"))
    from clcae.ops import _build

    monkeypatch.setattr(_build, "find_cuda_home", lambda: "/opt/cuda")  # a toolkit, whatever this machine has
    monkeypatch.setattr(_cuda_ops, "cached_library", lambda op: None)
    monkeypatch.setattr(doctor, "_gpu_count", lambda: 0)
    assert doctor.check_ops_build(build=False).status == doctor.OK
    monkeypatch.setattr(doctor, "_gpu_count", lambda: 1)
    missing = doctor.check_ops_build(build=False)
    assert missing.status == doctor.WARN and "--build" in missing.fix

    def failing(op):
        raise RuntimeError("Error building extension 'clcae_upfirdn2d'\nnvcc fatal: unsupported gpu architecture")

    monkeypatch.setattr(_cuda_ops, "load_extension", failing)
    failed = doctor.check_ops_build(build=True)
    assert failed.status == doctor.FAIL and "unsupported gpu architecture" in failed.detail
    assert "CLCAE_OPS_VERBOSE=1" in failed.fix and doctor.exit_status([failed]) == 1

    built: list[str] = []
    monkeypatch.setattr(_cuda_ops, "load_extension", lambda op: built.append(op))
    ok = doctor.check_ops_build(build=True)
    assert ok.status == doctor.OK and ok.detail.startswith("built in") and built == list(_cuda_ops.EXTENSION_OPS)

    monkeypatch.setattr(_cuda_ops, "cached_library", lambda op: tmp_path / f"{op}.so")
    cached = doctor.check_ops_build(build=False)
    assert cached.status == doctor.OK and cached.detail.startswith("cached build loaded")


def test_cpu_flags_from_cpuinfo():
    text = ("processor\t: 0\nmodel name\t: Test CPU 9000\nflags\t\t: fpu sse avx2 fma avx512f avx512_bf16 amx_tile\n"
            "processor\t: 1\nmodel name\t: Test CPU 9000\nflags\t\t: fpu sse avx2 fma avx512f avx512_bf16 amx_tile\n")
    info = doctor.cpu_flags(text)
    assert info["model"] == "Test CPU 9000"
    assert info["flags"]["avx2"] and info["flags"]["avx512_bf16"] and info["flags"]["amx_tile"]
    assert not info["flags"]["amx_bf16"] and not info["flags"]["avx512_vnni"]
    assert not any(doctor.cpu_flags("")["flags"].values())


@pytest.mark.skipif(shipped(SYNTHFACES_GENERATOR) is None, reason="the shipped generator is not in pretrained/")
def test_fastest_settings_are_measured():
    check = doctor.check_fastest_settings(reps=1)
    assert check.status == doctor.OK
    seconds = check.data["seconds"]
    assert {"ref", "fast"} <= set(seconds) and all(v > 0 for v in seconds.values())
    assert check.data["fastest"] == min(seconds, key=seconds.get)
    assert check.data["max_diff_vs_ref"]["fast"] < 1e-3


def test_export_extra_is_reported_present_or_missing(monkeypatch):
    import importlib

    real = importlib.import_module
    ok = doctor.check_export_extra()
    installed = all(importlib.util.find_spec(n) is not None for n in ("onnx", "onnxruntime"))
    assert (ok.status == doctor.OK) == installed and ok.data["available"] == installed

    def no_onnxruntime(name, *a, **k):
        if name == "onnxruntime":
            raise ImportError("No module named 'onnxruntime'")
        return real(name, *a, **k)
    monkeypatch.setattr(importlib, "import_module", no_onnxruntime)
    missing = doctor.check_export_extra()
    assert missing.status == doctor.WARN and "onnxruntime" in missing.detail and "[export]" in missing.fix
    assert missing.data["onnxruntime"] is None
