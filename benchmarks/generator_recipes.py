#!/usr/bin/env python
"""Compare generator recipes at equal CPU time: FD (shipped domain net and an independent net), precision and recall
of every snapshot of some training runs, against the training CPU time stored in each snapshot; a PNG curve and a
markdown table.

    pip install matplotlib   # for the plot only (not a dependency of the package)
    python benchmarks/generator_recipes.py --runs runs/pilots/baseline runs/pilots/projected \\
        --independent-net pretrained/synthfaces64_fd_net.pt --n 2000 --every-kimg 2 \\
        --results docs/generator_recipes.json --plot docs/generator_recipes.png

Each snapshot (``RUN/checkpoints/snapshot-*.pt``, the ``g_ema``) is evaluated once; the results file is updated
after each one, so the command can be rerun while the runs train (already evaluated snapshots are skipped). The
real renders' features are computed once per ``--n`` and kept in ``--cache``.

The x axis is the process CPU time of the training steps (``timing.train_cpu_s`` in the checkpoint, written by
``clcae.training.gan``: all threads of the training process, data loading included when ``--workers 0``), because
on a shared machine wall-clock time measures the other users as much as the recipe. Wall time is kept beside it.
The table compares each recipe's snapshot nearest below a common CPU time (the largest that every run reached).
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import torch

from clcae.checkpoints import load_generator
from clcae.fileio import atomic_write
from clcae.metrics.generator import render_synthfaces
from clcae.metrics.generator_quality import features_of, generated_features, quality_from_features
from clcae.networks.domain import load_domain_net

SPACES = ("domain_net", "independent_net")


def _snapshot_kimg(path: Path) -> float:
    return float(path.stem.split("-", 1)[1].replace("kimg", ""))


def _file_key(path: str) -> list:
    st = Path(path).stat()
    return [str(Path(path).resolve()), st.st_size, int(st.st_mtime)]


def real_images(n: int, res: int, cache: Path) -> torch.Tensor:
    """Test renders ``0 .. 2n`` as uint8 ``[2n, 3, res, res]`` (rendered once, then read from ``cache``): the
    reference set is the first half, the floor's second real set the other half."""
    path = cache.with_name(f"{cache.stem}_images_n{n}_{res}px.pt")
    if path.is_file():
        return torch.load(path, weights_only=True)
    t = time.time()
    images = render_synthfaces(0, 2 * n, res, "test", 0, progress=True)
    images = ((images.clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8)  # exact: renders are 8-bit already
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save(images, path)
    print(f"rendered {2 * n} test images: {time.time() - t:.0f} s", flush=True)
    return images


def real_features(nets: dict, files: dict, n: int, res: int, cache: Path) -> dict:
    key = {name: _file_key(f) for name, f in files.items()}
    path = cache.with_name(f"{cache.stem}_features_n{n}_{res}px.pt")
    if path.is_file():
        saved = torch.load(path, weights_only=True)
        if saved.get("key") == key:
            return saved["features"]
    images = real_images(n, res, cache)
    feats = features_of(images, nets)
    feats = {name: {"reference": f[:n], "other": f[n:]} for name, f in feats.items()}
    torch.save({"key": key, "features": feats}, path)
    return feats


def evaluate_runs(args) -> list[dict]:
    torch.set_num_threads(args.threads)
    results = json.loads(args.results.read_text()) if args.results.is_file() else []
    done = {(r["run"], r["snapshot"]) for r in results if r["n"] == args.n}
    files = {"domain_net": args.domain_net, "independent_net": args.independent_net}
    nets = {name: load_domain_net(f).features for name, f in files.items()}
    real = None
    for run in args.runs:
        snaps = sorted((run / "checkpoints").glob("snapshot-*.pt"), key=_snapshot_kimg)
        for i, snap in enumerate(snaps):
            kimg = _snapshot_kimg(snap)
            every = int(round(args.every_kimg * 1000))
            if (run.name, snap.name) in done or (int(round(kimg * 1000)) % every and i != len(snaps) - 1
                                                 and not args.all):
                continue
            state = torch.load(snap, map_location="cpu", weights_only=True)
            timing = state.get("timing") or {}
            G = load_generator(snap)
            if real is None:
                real = real_features(nets, files, args.n, G.size, args.cache)
            t = time.time()
            gen = generated_features(G, nets, args.n, seed=args.seed)
            row = {"run": run.name, "snapshot": snap.name, "kimg": state["nimg"] / 1000, "step": state["step"],
                   "train_cpu_s": timing.get("train_cpu_s"), "train_wall_s": timing.get("train_wall_s"),
                   "n": args.n, "seed": args.seed}
            for name in SPACES:
                row[name] = quality_from_features(real[name], gen[name], k=args.k)
            row["eval_s"] = round(time.time() - t, 1)
            results.append(row)
            with atomic_write(args.results, "w", encoding="utf-8") as f:
                json.dump(results, f, indent=1)
            q, o = row["independent_net"], row["domain_net"]
            print(f"{run.name} {kimg:.1f} kimg, {row['train_cpu_s'] / 60:.1f} CPU min: FD {o['fd_generated_vs_test']:.3f} "
                  f"(domain net) {q['fd_generated_vs_test']:.3f} (independent), P {q['precision']:.3f} "
                  f"R {q['recall']:.3f}; {row['eval_s']} s", flush=True)
    return results


def equal_cpu_table(results: list[dict], runs: list[str], n: int) -> str:
    rows = {r: sorted((x for x in results if x["run"] == r and x["n"] == n and x["train_cpu_s"] is not None),
                      key=lambda x: x["train_cpu_s"]) for r in runs}
    rows = {r: v for r, v in rows.items() if v}
    if not rows:
        return ""
    common = min(v[-1]["train_cpu_s"] for v in rows.values())
    lines = [f"At equal CPU time: each run's last evaluated snapshot at or below {common / 60:.1f} CPU minutes "
             f"(n = {n} per set).", "",
             "| recipe | CPU min | wall min | kimg | FD domain net | FD independent net | precision | recall |",
             "|---|---|---|---|---|---|---|---|"]
    for r, v in rows.items():
        x = [e for e in v if e["train_cpu_s"] <= common + 1e-6][-1]
        q, o = x["independent_net"], x["domain_net"]
        lines.append(f"| {r} | {x['train_cpu_s'] / 60:.1f} | {x['train_wall_s'] / 60:.1f} | {x['kimg']:.2f} | "
                     f"{o['fd_generated_vs_test']:.3f} | {q['fd_generated_vs_test']:.3f} | {q['precision']:.3f} | "
                     f"{q['recall']:.3f} |")
    floor = next(iter(rows.values()))[0]
    lines.append(f"| (real vs real floor) | | | | {floor['domain_net']['fd_real_vs_real']:.3f} | "
                 f"{floor['independent_net']['fd_real_vs_real']:.3f} | "
                 f"{floor['independent_net']['precision_real_vs_real']:.3f} | "
                 f"{floor['independent_net']['recall_real_vs_real']:.3f} |")
    return "\n".join(lines)


def plot(results: list[dict], runs: list[str], n: int, out: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 3, figsize=(15, 4.2))
    floor = None
    for r in runs:
        v = sorted((x for x in results if x["run"] == r and x["n"] == n and x["train_cpu_s"] is not None),
                   key=lambda x: x["train_cpu_s"])
        if not v:
            continue
        floor = floor or v[0]
        t = [x["train_cpu_s"] / 60 for x in v]
        line, = axes[0].plot(t, [x["domain_net"]["fd_generated_vs_test"] for x in v], "o-", label=r)
        axes[1].plot(t, [x["independent_net"]["fd_generated_vs_test"] for x in v], "o-", color=line.get_color(),
                     label=r)
        axes[2].plot(t, [x["independent_net"]["precision"] for x in v], "o-", color=line.get_color(),
                     label=f"{r} precision")
        axes[2].plot(t, [x["independent_net"]["recall"] for x in v], "s--", color=line.get_color(),
                     label=f"{r} recall")
    titles = ("FD, shipped domain net (256-d)", "FD, independent net (320-d)", "precision / recall, independent net")
    for ax, title in zip(axes, titles):
        ax.set_title(title)
        ax.set_xlabel("training CPU minutes (1 thread)")
        ax.grid(alpha=0.3)
    if floor:
        for ax, space in zip(axes[:2], SPACES):
            ax.axhline(floor[space]["fd_real_vs_real"], color="k", ls=":", label="real vs real")
            ax.set_yscale("log")
    axes[0].set_ylabel(f"Fréchet distance (n = {n})")
    axes[0].legend(fontsize=8)
    axes[2].legend(fontsize=7)
    axes[2].set_ylim(0, 1)
    fig.tight_layout()
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=100)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--runs", nargs="+", type=Path, required=True, help="training run directories (name = recipe)")
    p.add_argument("--domain-net", default="pretrained/synthfaces64_domain_net.pt")
    p.add_argument("--independent-net", required=True)
    p.add_argument("--n", type=int, default=2000, help="images per set")
    p.add_argument("--k", type=int, default=3)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--every-kimg", type=float, default=2.0, help="evaluate snapshots at multiples of this (+ the last)")
    p.add_argument("--all", action="store_true", help="evaluate every snapshot")
    p.add_argument("--results", type=Path, default=Path("docs/generator_recipes.json"))
    p.add_argument("--plot", type=Path, default=Path("docs/generator_recipes.png"))
    p.add_argument("--cache", type=Path, default=Path("runs/generator_recipes_real.pt"),
                   help="prefix of the cached test renders and their features")
    p.add_argument("--plot-only", action="store_true")
    p.add_argument("--render-only", action="store_true", help="render and cache the test images, then exit")
    p.add_argument("--threads", type=int, default=1)
    args = p.parse_args(argv)
    if args.render_only:
        torch.set_num_threads(args.threads)
        real_images(args.n, 64, args.cache)
        return 0
    results = (json.loads(args.results.read_text()) if args.plot_only and args.results.is_file()
               else evaluate_runs(args))
    names = [r.name for r in args.runs]
    print(equal_cpu_table(results, names, args.n))
    plot(results, names, args.n, args.plot)
    print(f"wrote {args.plot}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
