"""benchmarks/claims_tables.py: seeds grouped with mean and spread; validation curves read from the trainer's log."""
import json

import pytest

pytest.importorskip("matplotlib")


@pytest.fixture()
def mod(benchmark_module):
    return benchmark_module("claims_tables")


def _results(path, rows):
    metrics = [{"name": "mse", "higher_is_better": False, "decimals": 4},
               {"name": "id_domain", "higher_is_better": True, "decimals": 3}]
    path.mkdir()
    path.joinpath("results.json").write_text(json.dumps({"format": "clcae-eval", "version": 1, "metrics": metrics,
        "results": [dict(method=m, representation=r, metric=k, mean=v, std=0.1, n=500) for m, r, k, v in rows]}))
    return path


def test_seeds_are_grouped_with_mean_and_half_range(tmp_path, mod):
    res = _results(tmp_path / "ev", [
        ("clcae_s0", "wplus_f", "mse", 0.020), ("clcae_s1", "wplus_f", "mse", 0.024),
        ("clcae_s0", "wplus_f", "id_domain", 0.70), ("clcae_s1", "wplus_f", "id_domain", 0.80),
        ("clcae_sharpen_s1", "wplus_f", "mse", 0.030), ("psp", "wplus", "mse", 0.05)])
    data = mod.load_results(res)
    t = mod.seed_table(data)
    assert t[("clcae", "wplus_f")]["mse"]["mean"] == pytest.approx(0.022)
    assert t[("clcae", "wplus_f")]["mse"]["spread"] == pytest.approx(0.002)
    assert t[("clcae_sharpen", "wplus_f")]["mse"]["spread"] is None       # one seed: no spread
    assert ("psp", "wplus") in t                                          # a name without a seed is its own row
    md = mod.markdown(data, [("clcae", "wplus_f"), ("clcae_sharpen", "wplus_f")], ["mse", "id_domain"])
    lines = md.splitlines()
    assert lines[0] == "| method | repr. | seeds | mse ↓ | id_domain ↑ |"
    assert lines[2] == "| clcae | wplus_f | 0, 1 | 0.0220 ± 0.0020 | 0.750 ± 0.050 |"
    assert lines[3] == "| clcae_sharpen | wplus_f | 1 | 0.0300 | – |"
    with pytest.raises(SystemExit, match="no results for e4e:wplus"):
        mod.markdown(data, [("e4e", "wplus")], None)
    with pytest.raises(SystemExit, match="unknown metric"):
        mod.markdown(data, None, ["lpips"])


def test_curves_read_the_trainers_validation_lines(tmp_path, mod):
    run = tmp_path / "run"
    run.mkdir()
    # the exact line EncoderLoop writes (clcae/training/encoder_loop.py), a resumed step repeated, and noise lines
    run.joinpath("log.txt").write_text(
        "2026-12-07 12:00:00 run x: clcae invert\n"
        "2026-12-07 12:10:00 step 300 validation: loss=1.5 mse_wplus=0.05 mse_wplus_f=0.04\n"
        "2026-12-07 12:20:00 step 600 validation: loss=1.2 mse_wplus=0.04 mse_wplus_f=0.03\n"
        "2026-12-07 12:25:00 step 600 validation: loss=1.2 mse_wplus=0.04 mse_wplus_f=0.025\n"
        "2026-12-07 12:30:00 step 650: loss=1.1 img/s=5\n")
    val = mod.read_validation(run / "log.txt")
    assert sorted(val) == [300, 600] and val[600]["mse_wplus_f"] == 0.025
    psp = tmp_path / "psp"
    psp.mkdir()
    psp.joinpath("log.txt").write_text("x step 300 validation: mse_wplus=0.06\n")
    out = tmp_path / "c.png"
    lines = mod.curves([("clcae_s1", run, 0), ("clcae_ft_s1", run, 1200), ("psp_s1", psp, 0)],
                       ["mse_wplus_f", "mse_wplus"], out)
    assert out.stat().st_size > 1000
    assert lines[0] == "clcae_s1: mse_wplus_f 300=0.0400, 600=0.0250"
    assert lines[1].startswith("clcae_ft_s1: mse_wplus_f 1500=")                # the fine-tune drawn after its start
    assert lines[2] == "psp_s1: mse_wplus 300=0.0600"                            # falls back to the next key
    with pytest.raises(SystemExit, match="none of"):
        mod.curves([("psp", psp, 0)], ["mse_wplus_f"], out)


def _editing(path, methods):
    path.mkdir()
    res = {m: {"result": "W+", "mse_unedited": mse, "edits": {"smile": {"reached": reached, "strength": st, "id_kept": idk,
           "other_change": 0.03, "mse_to_renderer": mse + 0.001}}} for m, (mse, st, idk, reached) in methods.items()}
    path.joinpath("results.json").write_text(json.dumps({"results": res}))
    return path


def test_editing_seeds_are_merged_across_files_and_renamed(tmp_path, mod):
    a = _editing(tmp_path / "a", {"psp": (0.03, 1.2, 0.96, True), "e4e": (0.03, 1.0, 0.9, False)})
    b = _editing(tmp_path / "b", {"psp_s0": (0.03, 1.2, 0.96, True), "psp_s1": (0.032, 1.4, 0.94, True)})
    md = mod.editing_table([a, b], {"psp": "psp_s0"}, None).splitlines()
    assert md[2] == "| smile | psp | 0, 1 | 1.30 ± 0.10 | 0.950 ± 0.010 | 0.030 ± 0.000 | 0.0320 ± 0.0010 | 0.0010 ± 0.0000 |"
    assert len(md) == 3                                  # e4e never reached the target: no row
    c = _editing(tmp_path / "c", {"psp_s0": (0.05, 1.2, 0.96, True)})
    with pytest.raises(SystemExit, match="differs"):   # the same seed's model must give the same numbers
        mod.editing_table([a, c], {"psp": "psp_s0"}, None)


def test_tables_merge_several_eval_runs_of_the_same_images(tmp_path, mod):
    a = _results(tmp_path / "a", [("clcae_s0", "wplus_f", "mse", 0.020), ("psp_s0", "wplus", "mse", 0.03)])
    b = _results(tmp_path / "b", [("clcae_s1", "wplus_f", "mse", 0.024), ("psp_s0", "wplus", "mse", 0.03)])
    t = mod.seed_table(mod.load_results(a, b))
    assert t[("clcae", "wplus_f")]["mse"]["seeds"] == {0: 0.020, 1: 0.024}
    c = _results(tmp_path / "c", [("psp_s0", "wplus", "mse", 0.05)])
    with pytest.raises(SystemExit, match="differs"):
        mod.load_results(a, c)
