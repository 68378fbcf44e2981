"""benchmarks/bench_inversion.py on the shipped 64 px CLCAE model: one short run, its JSON, and the equality of every
faster fp32 configuration with the reference row of the same run."""
import importlib.util
import json
from pathlib import Path

import pytest
import torch

REPO = Path(__file__).resolve().parents[1]


def _bench():
    spec = importlib.util.spec_from_file_location("bench_inversion", REPO / "benchmarks" / "bench_inversion.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_bench_inversion_json_and_equality(tmp_path, capsys):
    if not (REPO / "pretrained" / "synthfaces64_clcae.pt").exists():
        pytest.skip("shipped 64 px CLCAE model not present")
    threads = torch.get_num_threads()
    try:
        rc = _bench().main(["--models", "clcae64", "--batches", "2", "--configs", "ref,fast,fast-cl", "--reps", "1",
                            "--threads", "1", "--json", str(tmp_path / "b.json")])
    finally:
        torch.set_num_threads(threads)
    assert rc == 0
    text = capsys.readouterr().out
    assert "load average at start" in text and "features:" in text
    res = json.loads((tmp_path / "b.json").read_text())
    rows = {r["config"]: r for r in res["rows"]}
    assert set(rows) == {"ref", "fast", "fast-cl"}
    assert res["rates_gflops"]["fp32"]["matmul"] > 0 and res["rates_gflops"]["fp32"]["conv3x3"] > 0
    for name in ("fast", "fast-cl"):
        r = rows[name]
        assert r["max_abs_err_vs_ref"] < 1e-4, (name, r["max_abs_err_vs_ref"])
        assert set(r["s_per_img"]) >= {"encoder", "wplus_f", "wplus", "w", "total", "wplus_f_only"}
        assert r["speedup"]["total"] > 0 and r["gflops"] > 0 and r["peak_rss_mb"] > 0
    assert rows["ref"]["speedup"]["total"] == pytest.approx(1.0)
