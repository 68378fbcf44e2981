#!/usr/bin/env python
"""Seed tables and training curves for the paper-claims runs (issue 23).

**Tables.** ``scripts/eval.py`` writes one row per (method, representation); when the method names end in the seed
(``clcae_s0``, ``clcae_s1``, ``psp_s1``, ... as ``benchmarks/claims_runs.py --print-eval`` names them), this script
groups the seeds of a row and prints, per metric, the mean over seeds and the spread between them (half the range:
``mean ± spread``; with one seed, the value alone), as Markdown::

    python benchmarks/claims_tables.py table runs/claims-table [more eval.py folders] --metrics mse,domain_perceptual,id_domain,detail_ratio \
        --rows clcae_sharpen:wplus_f,clcae:wplus_f,clcae:wplus,psp:wplus,e4e:wplus

**Curves.** Validation scalars against training steps, read from each run's ``log.txt`` (the trainer's
``step N validation: name=value ...`` lines), one line per run, runs of one method in one colour, written as a PNG::

    python benchmarks/claims_tables.py curves --run clcae=runs/claims/clcae_s1 --run psp=runs/claims/psp_s1 \
        --metric mse_wplus_f --metric mse_wplus --out docs/claims_curves.png

**Editing.** ``benchmarks/claims_editing.py`` results (one or more ``results.json``; ``--rename`` gives a run's
method names their seed suffix) grouped by seed in the same way, per edit::

    python benchmarks/claims_tables.py editing runs/claims-editing-final runs/claims-editing-s1f16 \
        --rename clcae_v4=clcae_sharpen_s0,psp=psp_s0,e4e=e4e_s0 --rows clcae_sharpen,psp,e4e

A method's main curve key is chosen per run: the first of the given ``--metric`` names that its log has (pSp and
e4e log ``mse_wplus`` only; CLCAE also ``mse_wplus_f``).
"""
from __future__ import annotations

import argparse
import json
import math
import re
import sys
from collections import defaultdict
from pathlib import Path

_SEED = re.compile(r"^(?P<base>.+)_s(?P<seed>\d+)$")
_VAL = re.compile(r"step (?P<step>\d+) validation: (?P<rest>.*)$")


def split_seed(method: str) -> tuple[str, int | None]:
    """``clcae_sharpen_s1`` -> (``clcae_sharpen``, 1); a name without a seed suffix is its own group."""
    m = _SEED.match(method)
    return (m["base"], int(m["seed"])) if m else (method, None)


def load_results(*paths: Path) -> dict:
    """One or more eval.py results (folders or results.json), merged: the runs must be on the same images (the
    same n per row); a (method, representation, metric) found twice must have the same mean (the same model)."""
    metrics: dict[str, dict] = {}
    rows: dict[tuple[str, str, str], dict] = {}
    for path in paths:
        path = path / "results.json" if path.is_dir() else path
        try:
            data = json.loads(path.read_text())
            metrics.update({m["name"]: m for m in data["metrics"]})
            results = data["results"]
        except (OSError, ValueError, KeyError, TypeError) as e:
            raise SystemExit(f"{path}: not a scripts/eval.py results.json ({e})")
        for r in results:
            key = (r["method"], r["representation"], r["metric"])
            old = rows.get(key)
            if old is not None and (old.get("n") != r.get("n") or
                                    (old.get("mean") is not None and r.get("mean") is not None and
                                     abs(old["mean"] - r["mean"]) > 1e-6 * max(1.0, abs(old["mean"])))):
                raise SystemExit(f"{path}: {'/'.join(key)} differs from an earlier file's (another model or image set)")
            rows[key] = r
    ns = {r.get("n") for r in rows.values()}
    if len(ns) > 1:
        raise SystemExit(f"the results are on different numbers of images ({sorted(ns, key=str)}): not one table")
    return {"metrics": metrics, "results": list(rows.values())}


def seed_table(data: dict) -> dict[tuple[str, str], dict[str, dict]]:
    """{(base, representation): {metric: {"seeds": {seed: mean}, "mean": m, "spread": s, "n": images}}}."""
    groups: dict[tuple[str, str], dict[str, dict]] = defaultdict(lambda: defaultdict(lambda: {"seeds": {}}))
    for r in data["results"]:
        if r.get("mean") is None or not math.isfinite(r["mean"]):
            continue
        base, seed = split_seed(r["method"])
        cell = groups[(base, r["representation"])][r["metric"]]
        cell["seeds"][seed] = r["mean"]
        cell["n"] = r.get("n")
    for metrics in groups.values():
        for cell in metrics.values():
            cell["mean"], cell["spread"] = _mean_spread(list(cell["seeds"].values()))
    return groups


def _mean_spread(vals: list[float]) -> tuple[float, float | None]:
    """The mean over seeds and half their range (None with one seed)."""
    return sum(vals) / len(vals), (max(vals) - min(vals)) / 2 if len(vals) > 1 else None


def _fmt(mean: float, spread: float | None, decimals: int) -> str:
    """``mean`` alone with one seed, else ``mean ± spread``."""
    return f"{mean:.{decimals}f}" + ("" if spread is None else f" ± {spread:.{decimals}f}")


def markdown(data: dict, rows: list[tuple[str, str]] | None, metrics: list[str] | None) -> str:
    table = seed_table(data)
    known = data["metrics"]
    if metrics is None:
        metrics = [m for m in known if any(m in cells for cells in table.values())]
    unknown = [m for m in metrics if m not in known]
    if unknown:
        raise SystemExit(f"unknown metric(s) {', '.join(unknown)}; the results have {', '.join(known)}")
    if rows is None:
        rows = sorted(table)
    missing = [f"{b}:{r}" for b, r in rows if (b, r) not in table]
    if missing:
        have = ", ".join(f"{b}:{r}" for b, r in sorted(table))
        raise SystemExit(f"no results for {', '.join(missing)}; the results have {have}")
    arrows = {m: ("↑" if known[m]["higher_is_better"] else "↓") if known[m]["higher_is_better"] is not None else ""
              for m in metrics}
    head = ["method", "repr.", "seeds"] + [f"{m} {arrows[m]}".strip() for m in metrics]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * 3 + "---:|" * len(metrics)]
    for base, rep in rows:
        cells = table[(base, rep)]
        seeds = sorted({s for c in cells.values() for s in c["seeds"]}, key=lambda s: -1 if s is None else s)
        out = [base, rep, ", ".join("–" if s is None else str(s) for s in seeds)]
        for m in metrics:
            c = cells.get(m)
            d = known[m].get("decimals") or 4
            out.append("–" if c is None else _fmt(c["mean"], c["spread"], d))
        lines.append("| " + " | ".join(out) + " |")
    return "\n".join(lines)


#: the claims_editing.py numbers per (method, edit) that the editing table shows: (key, header, decimals)
EDIT_COLUMNS = (("strength", "strength", 2), ("id_kept", "identity kept ↑", 3),
                ("other_change", "other attributes' \\|Δ\\| ↓", 3), ("mse_to_renderer", "MSE to the renderer's edited face ↓", 4),
                ("added", "added by the edit ↓", 4))


def editing_table(paths: list[Path], renames: dict[str, str], rows: list[str] | None) -> str:
    """Markdown: per edit and method group, the mean ± spread between seeds of the claims_editing.py numbers at the
    equal target change. A method found in several files must have the same numbers in each (the same model)."""
    per: dict[tuple[str, str], dict[int | None, dict[str, float]]] = defaultdict(dict)
    edits: list[str] = []
    for path in paths:
        path = path / "results.json" if path.is_dir() else path
        try:
            data = json.loads(path.read_text())
            results = data["results"]
        except (OSError, ValueError, KeyError, TypeError) as e:
            raise SystemExit(f"{path}: not a claims_editing.py results.json ({e})")
        for method, res in results.items():
            base, seed = split_seed(renames.get(method, method))
            for edit, e in res["edits"].items():
                if edit not in edits:
                    edits.append(edit)
                if not e.get("reached"):
                    continue
                vals = {k: e[k] for k in ("strength", "id_kept", "other_change", "mse_to_renderer")}
                vals["added"] = e["mse_to_renderer"] - res["mse_unedited"]
                old = per[(edit, base)].get(seed)
                if old is not None and any(abs(old[k] - vals[k]) > 1e-4 for k in vals):
                    raise SystemExit(f"{path}: {method} ({base}, seed {seed}) differs from an earlier file's numbers")
                per[(edit, base)][seed] = vals
    bases = rows or sorted({b for _, b in per})
    head = ["edit", "method", "seeds"] + [h for _, h, _ in EDIT_COLUMNS]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * 3 + "---:|" * len(EDIT_COLUMNS)]
    for edit in edits:
        for base in bases:
            seeds = per.get((edit, base))
            if not seeds:
                continue
            out = [edit, base, ", ".join("–" if s is None else str(s) for s in sorted(seeds, key=lambda s: s or 0))]
            for key, _, d in EDIT_COLUMNS:
                out.append(_fmt(*_mean_spread([v[key] for v in seeds.values()]), d))
            lines.append("| " + " | ".join(out) + " |")
    return "\n".join(lines)


def read_validation(log: Path) -> dict[int, dict[str, float]]:
    """{step: {name: value}} from the trainer's ``log.txt``; a resumed run's repeated step keeps its last line."""
    out: dict[int, dict[str, float]] = {}
    try:
        text = log.read_text()
    except OSError as e:
        raise SystemExit(f"{log}: cannot read the run's log ({e.strerror or e})")
    for line in text.splitlines():
        m = _VAL.search(line)
        if not m:
            continue
        vals = {}
        for item in m["rest"].split():
            k, _, v = item.partition("=")
            try:
                vals[k] = float(v)
            except ValueError:
                continue
        out[int(m["step"])] = vals
    return out


def curves(runs: list[tuple[str, Path, int]], metric_keys: list[str], out: Path, title: str = "") -> list[str]:
    """Plot each run's first available metric of ``metric_keys`` against steps (plus ``offset`` steps: a fine-tune
    drawn after the run it starts from). Returns one text line per run (what was drawn)."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7.5, 4.5), dpi=120)
    colours: dict[str, str] = {}
    palette = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    styles = ["-", "--", ":", "-."]
    seen: dict[str, int] = defaultdict(int)
    lines = []
    for label, run_dir, offset in runs:
        log = run_dir / "log.txt" if run_dir.is_dir() else run_dir
        val = read_validation(log)
        if not val:
            raise SystemExit(f"{log}: no validation lines")
        key = next((k for k in metric_keys if all(k in v for v in val.values())), None)
        if key is None:
            raise SystemExit(f"{log}: none of {', '.join(metric_keys)} in every validation line")
        base, seed = split_seed(label)
        colour = colours.setdefault(base, palette[len(colours) % len(palette)])
        style = styles[seen[base] % len(styles)]
        seen[base] += 1
        steps = sorted(val)
        ax.plot([s + offset for s in steps], [val[s][key] for s in steps], style, color=colour, marker="o", ms=3,
                label=f"{label} ({key})")
        lines.append(f"{label}: {key} " + ", ".join(f"{s + offset}={val[s][key]:.4f}" for s in steps))
    ax.set_xlabel("training steps (batch 16)")
    ax.set_ylabel("validation " + " / ".join(metric_keys))
    ax.set_yscale("log")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=7, ncol=2)
    if title:
        ax.set_title(title, fontsize=9)
    fig.tight_layout()
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out)
    plt.close(fig)
    return lines


def _parse_run(s: str) -> tuple[str, Path, int]:
    label, sep, rest = s.partition("=")
    if not sep or not label or not rest:
        raise argparse.ArgumentTypeError(f"expected LABEL=RUN_DIR[@OFFSET], got {s!r}")
    path, _, off = rest.partition("@")
    try:
        return label, Path(path), int(off) if off else 0
    except ValueError:
        raise argparse.ArgumentTypeError(f"{s!r}: the offset after @ must be a step count")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="cmd", required=True)
    t = sub.add_parser("table", help="mean ± spread between seeds from an eval.py results.json")
    t.add_argument("results", type=Path, nargs="+", help="eval.py --out folders or their results.json (merged)")
    t.add_argument("--metrics", default=None, help="comma-separated metric names (default: all)")
    t.add_argument("--rows", default=None, help="comma-separated BASE:REPRESENTATION rows in order (default: all)")
    e = sub.add_parser("editing", help="mean ± spread between seeds from claims_editing.py results")
    e.add_argument("results", type=Path, nargs="+", help="claims_editing.py --out folders or their results.json")
    e.add_argument("--rename", default="", help="comma-separated OLD=NEW method names (e.g. psp=psp_s0)")
    e.add_argument("--rows", default=None, help="comma-separated method groups in order (default: all)")
    c = sub.add_parser("curves", help="validation scalars against training steps, one line per run")
    c.add_argument("--run", type=_parse_run, action="append", required=True, metavar="LABEL=RUN_DIR[@OFFSET]",
                   help="a run folder (its log.txt) and its label (NAME_sSEED groups seeds by colour); @OFFSET "
                        "shifts its steps (a fine-tune after OFFSET steps of the run it starts from)")
    c.add_argument("--metric", action="append", required=True,
                   help="validation scalar, e.g. mse_wplus_f; repeat for a fallback (pSp has no mse_wplus_f)")
    c.add_argument("--out", type=Path, required=True, help="PNG to write")
    c.add_argument("--title", default="")
    args = p.parse_args(argv)
    if args.cmd == "table":
        rows = None
        if args.rows:
            rows = []
            for item in args.rows.split(","):
                base, sep, rep = item.partition(":")
                if not sep:
                    p.error(f"--rows: expected BASE:REPRESENTATION, got {item!r}")
                rows.append((base, rep))
        metrics = args.metrics.split(",") if args.metrics else None
        print(markdown(load_results(*args.results), rows, metrics))
    elif args.cmd == "editing":
        renames = {}
        for item in filter(None, args.rename.split(",")):
            old, sep, new = item.partition("=")
            if not sep or not old or not new:
                p.error(f"--rename: expected OLD=NEW, got {item!r}")
            renames[old] = new
        print(editing_table(args.results, renames, args.rows.split(",") if args.rows else None))
    else:
        for line in curves(args.run, args.metric, args.out, args.title):
            print(line)
        print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
