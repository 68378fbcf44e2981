#!/usr/bin/env python
"""Compare generator recipes at equal CPU time: FD (shipped domain net and an independent net), precision and recall
of every snapshot of some training runs, against the training CPU time stored in each snapshot; a PNG curve and a
markdown table.

    pip install matplotlib   # for the plot only (not a dependency of the package)
    python benchmarks/generator_recipes.py --runs runs/pilots/baseline runs/pilots/projected \\
        --independent-net pretrained/synthfaces64_fd_net.pt --n 2000 --every-kimg 2 \\
        --results docs/generator_recipes.json --plot docs/generator_recipes.png

Each snapshot (``RUN/checkpoints/snapshot-*.pt``, the ``g_ema``) is evaluated once per feature network; the results
file is updated after each one, so the command can be rerun while the runs train (what is done is skipped). The
real renders and each snapshot's generated images (float32, clamped, before any feature network) are kept under
``--cache``, so a network added later (``--independent-net``) is evaluated on exactly the same images.

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
from clcae.metrics.generator_quality import features_of, quality_from_features
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


@torch.no_grad()
def generated_images(snap: Path, n: int, seed: int, cache: Path) -> torch.Tensor:
    """``n`` samples of the snapshot's ``g_ema`` (z from ``seed``, random noise, psi 1, clamped), cached."""
    path = cache.parent / f"{cache.stem}_generated" / snap.parent.parent.name / f"{snap.stem}_n{n}_seed{seed}.pt"
    if path.is_file():
        return torch.load(path, weights_only=True)
    G = load_generator(snap)
    g = torch.Generator().manual_seed(seed)
    out = []
    with torch.random.fork_rng(devices=[]):  # the draws of clcae.metrics.generator_quality.generated_features
        torch.manual_seed(seed + 1)
        for start in range(0, n, 64):
            z = torch.randn(min(64, n - start), G.style_dim, generator=g)
            out.append(G(z, truncation=1.0, noise_mode="random").clamp(-1, 1))
    images = torch.cat(out)
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save(images, path)
    return images


def read_results(paths: list[Path]) -> list[dict]:
    out = []
    for p in paths:
        if p.is_file():
            out += json.loads(p.read_text())
    return out


def evaluate_runs(args) -> list[dict]:
    torch.set_num_threads(args.threads)
    results = read_results(args.results[:1])
    rows = {(r["run"], r["snapshot"]): r for r in results if r["n"] == args.n and r["seed"] == args.seed}
    files = {"domain_net": args.domain_net}
    if args.independent_net:
        files["independent_net"] = args.independent_net
    nets = {name: load_domain_net(f).features for name, f in files.items()}
    real = None
    every = int(round(args.every_kimg * 1000))
    for run in args.runs:
        snaps = sorted((run / "checkpoints").glob("snapshot-*.pt"), key=_snapshot_kimg)
        last_bucket = 0
        for i, snap in enumerate(snaps):
            bucket = int(round(_snapshot_kimg(snap) * 1000)) // every  # the first snapshot past each multiple
            chosen = bucket > last_bucket or args.all or (args.last and i == len(snaps) - 1)
            last_bucket = max(last_bucket, bucket)
            if not chosen:
                continue
            row = rows.get((run.name, snap.name))
            todo = [name for name in nets if row is None or name not in row]
            if not todo:
                continue
            t = time.time()
            if row is None:
                state = torch.load(snap, map_location="cpu", weights_only=True)
                timing = state.get("timing") or {}
                row = {"run": run.name, "snapshot": snap.name, "kimg": state["nimg"] / 1000, "step": state["step"],
                       "train_cpu_s": timing.get("train_cpu_s"), "train_wall_s": timing.get("train_wall_s"),
                       "n": args.n, "seed": args.seed}
                rows[(run.name, snap.name)] = row
                results.append(row)
            if real is None:
                real = real_features(nets, files, args.n, 64, args.cache)
            images = generated_images(snap, args.n, args.seed, args.cache)
            gen = features_of(images, {name: nets[name] for name in todo})
            for name in todo:
                row[name] = quality_from_features(real[name], gen[name], k=args.k)
            row.setdefault("eval_s", {})[",".join(todo)] = round(time.time() - t, 1)
            with atomic_write(args.results[0], "w", encoding="utf-8") as f:
                json.dump(results, f, indent=1)
            line = f"{run.name} {row['kimg']:.1f} kimg, {row['train_cpu_s'] / 60:.1f} CPU min:"
            for name in todo:
                q = row[name]
                line += (f" {name} FD {q['fd_generated_vs_test']:.3f} P {q['precision']:.3f} "
                         f"R {q['recall']:.3f};")
            print(f"{line} {time.time() - t:.0f} s", flush=True)
    return results


def equal_cpu_table(results: list[dict], runs: list[str], n: int, at_minutes: float | None = None) -> str:
    """A markdown table: for each run, the evaluated snapshot nearest to ``at_minutes`` CPU minutes (default: the
    last one at or below the largest CPU time that every run reached)."""
    rows = {r: sorted((x for x in results if x["run"] == r and x["n"] == n and x["train_cpu_s"] is not None),
                      key=lambda x: x["train_cpu_s"]) for r in runs}
    rows = {r: v for r, v in rows.items() if v}
    if not rows:
        return ""
    if at_minutes is None:
        common = min(v[-1]["train_cpu_s"] for v in rows.values())
        # a run whose first evaluated snapshot is already past that time (e.g. a long run scored from 10 kimg
        # on) shows its first one, marked
        pick = {r: ([e for e in v if e["train_cpu_s"] <= common + 1e-6] or v[:1])[-1] for r, v in rows.items()}
        head = (f"each run's last evaluated snapshot at or below {common / 60:.1f} CPU minutes (a run with none "
                "there: its first, whose CPU minutes are larger)")
    else:
        pick = {r: min(v, key=lambda e: abs(e["train_cpu_s"] / 60 - at_minutes)) for r, v in rows.items()}
        head = f"each run's evaluated snapshot nearest to {at_minutes:g} CPU minutes"
    lines = [f"At equal CPU time: {head} (n = {n} per set).", "",
             "| recipe | CPU min | wall min | kimg | FD domain net | FD independent net | precision | recall |",
             "|---|---|---|---|---|---|---|---|"]

    def get(x, space, key):
        return f"{x[space][key]:.3f}" if space in x else "—"

    for r, x in pick.items():
        lines.append(f"| {r} | {x['train_cpu_s'] / 60:.1f} | {x['train_wall_s'] / 60:.1f} | {x['kimg']:.2f} | "
                     f"{get(x, 'domain_net', 'fd_generated_vs_test')} | "
                     f"{get(x, 'independent_net', 'fd_generated_vs_test')} | {get(x, 'independent_net', 'precision')} | "
                     f"{get(x, 'independent_net', 'recall')} |")
    f = next((e for v in rows.values() for e in v if all(s in e for s in SPACES)), next(iter(rows.values()))[0])
    lines.append(f"| (real vs real, n = {n}) | | | | {get(f, 'domain_net', 'fd_real_vs_real')} | "
                 f"{get(f, 'independent_net', 'fd_real_vs_real')} | "
                 f"{get(f, 'independent_net', 'precision_real_vs_real')} | "
                 f"{get(f, 'independent_net', 'recall_real_vs_real')} |")
    return "\n".join(lines)


def plot(results: list[dict], runs: list[str], n: int, out: Path, axis: str = "cpu") -> None:
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
        floor = floor or next((x for x in v if all(s in x for s in SPACES)), None)

        def at(e):
            return e["kimg"] if axis == "kimg" else e["train_cpu_s"] / 60

        t = [at(e) for e in v]
        line, = axes[0].plot(t, [x["domain_net"]["fd_generated_vs_test"] for x in v], "o-", label=r)
        w = [x for x in v if "independent_net" in x]
        ti = [at(e) for e in w]
        axes[1].plot(ti, [x["independent_net"]["fd_generated_vs_test"] for x in w], "o-", color=line.get_color(),
                     label=r)
        axes[2].plot(ti, [x["independent_net"]["precision"] for x in w], "o-", color=line.get_color(),
                     label=f"{r} precision")
        axes[2].plot(ti, [x["independent_net"]["recall"] for x in w], "s--", color=line.get_color(),
                     label=f"{r} recall")
    titles = ("FD, shipped domain net", "FD, independent net (synthfaces64_fd_net)",
              "precision (o) / recall (s), independent net")
    for ax, title in zip(axes, titles):
        ax.set_title(title)
        ax.set_xlabel("training images (kimg)" if axis == "kimg" else "training CPU minutes (1 thread)")
        ax.grid(alpha=0.3)
    if floor:
        for ax, space in zip(axes[:2], SPACES):
            if space in floor:
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
    p.add_argument("--independent-net", default=None, help="the independent DomainNet (its numbers can be added "
                                                          "later: the images are cached)")
    p.add_argument("--n", type=int, default=2000, help="images per set")
    p.add_argument("--k", type=int, default=3)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--every-kimg", type=float, default=2.0,
                   help="evaluate the first snapshot at or past each multiple of this")
    p.add_argument("--all", action="store_true", help="evaluate every snapshot")
    p.add_argument("--last", action="store_true", help="evaluate each run's newest snapshot too")
    p.add_argument("--results", type=Path, nargs="+", default=[Path("docs/generator_recipes.json")],
                   help="results file (JSON list); new evaluations go to the first, the table and plot read all")
    p.add_argument("--plot", type=Path, default=Path("docs/generator_recipes.png"))
    p.add_argument("--cache", type=Path, default=Path("runs/generator_recipes_real.pt"),
                   help="prefix of the cached test renders and their features")
    p.add_argument("--plot-only", action="store_true")
    p.add_argument("--x", choices=("cpu", "kimg"), default="cpu",
                   help="the plot's x axis: training CPU time (runs resumed from a state without timing start at "
                        "their resume point) or training images")
    p.add_argument("--at", type=float, nargs="*", default=None, metavar="CPU_MINUTES",
                   help="tables at these CPU times (each run's nearest evaluated snapshot)")
    p.add_argument("--render-only", action="store_true", help="render and cache the test images, then exit")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--watch", type=float, default=0,
                   help="keep evaluating new snapshots, looking every N minutes (stop with Ctrl-C / kill)")
    args = p.parse_args(argv)
    if args.render_only:
        torch.set_num_threads(args.threads)
        real_images(args.n, 64, args.cache)
        return 0
    if not args.plot_only:
        evaluate_runs(args)
        while args.watch > 0:
            time.sleep(args.watch * 60)
            evaluate_runs(args)
    results = read_results(args.results)
    names = [r.name for r in args.runs]
    for at in args.at or [None]:
        print(equal_cpu_table(results, names, args.n, at))
        print()
    plot(results, names, args.n, args.plot, args.x)
    print(f"wrote {args.plot}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
