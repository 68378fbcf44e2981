#!/usr/bin/env python
"""Claim 1 of issue 23 measured where the truth is known: how close each encoder's codes come to the true w.

The generator draws ``--n`` images from known codes (z ~ N(0, I) with ``--seed``, w = mapping(z), optionally
truncated by ``--psi``; rendered with the generator's constant noise, the same noise the inverters render with);
each method inverts them, and its codes are compared with the true w:

- ``w_dist``: ``|w_pred - w| / s`` per image (mean over images), where ``s`` is the RMS distance of the true codes to
  their own mean (the spread of W over these samples): 0 is exact, about 1.4 is as far as another sample's code.
  CLCAE's foundation code w is its ``w`` output; e4e's is its layer-0 code ``w_0`` (the code its deltas start
  from); pSp has none, so its row uses the mean of its W+ layers;
- ``w_cos``: cosine of ``w_pred - avg`` and ``w - avg`` (``avg`` = the generator's average latent): does the code
  point the right way from the average;
- ``wplus_dist``: the same distance for each W+ layer against the true w (every layer of a generated image's code is
  w); the table gives the mean over layers, the JSON every layer;
- ``mse_w`` and ``id_w``: squared error of G(w_pred) against the image and the domain network's identity cosine
  between them (does the foundation code render the same person).

    python benchmarks/claims_w_precision.py --method clcae=pretrained/synthfaces64_clcae.pt \\
        --method psp=pretrained/synthfaces64_psp.pt --method e4e=pretrained/synthfaces64_e4e.pt --n 500 \\
        --out runs/claims-w-precision.json

Prints a Markdown table; ``--out`` writes the numbers (and the per-layer distances) as JSON.
"""
from __future__ import annotations

import argparse
import json
import math
import sys
from pathlib import Path

import torch


def parse_method(text: str) -> tuple[str, str]:
    name, sep, path = text.partition("=")
    if not sep or not name or not path:
        raise argparse.ArgumentTypeError(f"expected NAME=CHECKPOINT, got {text!r}")
    return name, path


@torch.no_grad()
def sample_true_codes(G, n: int, seed: int, psi: float) -> torch.Tensor:
    """``n`` true codes w [n, D]: z ~ N(0, I) from a CPU generator seeded ``seed``, mapped, truncated by ``psi``."""
    rand = torch.Generator(device="cpu").manual_seed(seed)
    z = torch.randn(n, G.style_dim, generator=rand)
    return G.truncate(G.mapping(z), psi)


@torch.no_grad()
def measure(inverter, G, w_true: torch.Tensor, images: torch.Tensor, spread: float, domain_net=None,
            batch: int = 32) -> dict:
    """The distances of one method's codes to ``w_true`` for ``images`` (rendered from ``w_true``)."""
    avg = G.latent_avg.reshape(-1)
    sums: dict[str, float] = {"w_dist": 0.0, "w_cos": 0.0, "mse_w": 0.0, "id_w": 0.0}
    layers = None
    n = images.shape[0]
    for i in range(0, n, batch):
        x, w = images[i:i + batch], w_true[i:i + batch]
        out = inverter.invert(x, images=[n for n in ("w",) if n in inverter.image_names])
        wplus = out["wplus"]
        w_pred = out["w"] if "w" in out else wplus.mean(1)
        sums["w_dist"] += float(((w_pred - w).norm(dim=1) / spread).sum())
        sums["w_cos"] += float(torch.nn.functional.cosine_similarity(w_pred - avg, w - avg, dim=1).sum())
        d = ((wplus - w[:, None]).norm(dim=2) / spread).sum(0)
        layers = d if layers is None else layers + d
        img = out.get("image_w")
        if img is None:
            img = G.synthesis(w_pred, noise_mode="const")
        img = img.clamp(-1, 1)
        sums["mse_w"] += float(((img - x) ** 2).flatten(1).mean(1).sum())
        if domain_net is not None:
            sums["id_w"] += float(torch.nn.functional.cosine_similarity(domain_net.embed(img), domain_net.embed(x),
                                                                        dim=1).sum())
    res = {k: v / n for k, v in sums.items()}
    if domain_net is None:
        res.pop("id_w")
    res["wplus_dist_layers"] = [float(v) / n for v in layers]
    res["wplus_dist"] = sum(res["wplus_dist_layers"]) / len(res["wplus_dist_layers"])
    res["w_source"] = {"clcae": "w", "e4e": "W+ layer 0"}.get(getattr(inverter, "arch", ""),
                                                               "w" if "w" in out else "mean of W+")
    return res


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__)
    p.add_argument("--method", type=parse_method, action="append", required=True, metavar="NAME=CHECKPOINT")
    p.add_argument("--generator", default="pretrained/synthfaces64_generator.pt",
                   help="the generator that draws the images (the methods' own decoders render their codes)")
    p.add_argument("--domain-net", default="pretrained/synthfaces64_domain_net.pt",
                   help="identity embedding for id_w; empty: leave id_w out")
    p.add_argument("--n", type=int, default=500)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--psi", type=float, default=1.0, help="truncation of the true codes (1: none)")
    p.add_argument("--batch", type=int, default=32)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--out", default=None, help="JSON file for the numbers")
    args = p.parse_args(argv)
    if args.n < 2:
        p.error("--n must be at least 2 (the spread of the true codes needs two)")
    torch.set_num_threads(args.threads)
    from clcae.checkpoints import CheckpointError, load_generator, load_inverter

    try:
        G = load_generator(args.generator).eval()
        domain_net = None
        if args.domain_net:
            from clcae.networks.domain import load_domain_net

            domain_net = load_domain_net(args.domain_net).eval()
        methods = [(name, load_inverter(path)) for name, path in args.method]
    except (CheckpointError, OSError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    w_true = sample_true_codes(G, args.n, args.seed, args.psi)
    spread = float((w_true - w_true.mean(0)).norm(dim=1).pow(2).mean().sqrt())
    with torch.no_grad():
        images = torch.cat([G.synthesis(w_true[i:i + args.batch], noise_mode="const").clamp(-1, 1)
                            for i in range(0, args.n, args.batch)])
    results = {}
    for name, inv in methods:
        if tuple(inv.input_size) != tuple(images.shape[-2:]):
            print(f"error: {name} takes {list(inv.input_size)} inputs; the generator draws "
                  f"{list(images.shape[-2:])}", file=sys.stderr)
            return 2
        results[name] = measure(inv, G, w_true, images, spread, domain_net, args.batch)
    cols = ["w_dist", "w_cos", "wplus_dist", "mse_w"] + (["id_w"] if domain_net is not None else [])
    avg = G.latent_avg.reshape(1, -1)
    baseline = float(((avg - w_true).norm(dim=1) / spread).mean())
    print(f"{args.n} images drawn by {args.generator} from known codes (seed {args.seed}, psi {args.psi}); "
          f"spread of the true w: {spread:.3f}; the average code alone is at w_dist {baseline:.4f}")
    print()
    print("| method | w from | " + " | ".join(cols) + " |")
    print("|---|---|" + "---:|" * len(cols))
    for name, r in results.items():
        print(f"| {name} | {r['w_source']} | " + " | ".join(f"{r[c]:.4f}" for c in cols) + " |")
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(json.dumps({"n": args.n, "seed": args.seed, "psi": args.psi, "spread": spread,
                                              "generator": args.generator, "methods": dict(args.method),
                                              "average_code_w_dist": baseline,
                                              "results": results}, indent=1))
        print(f"\nwrote {args.out}")
    return 0 if all(math.isfinite(r["w_dist"]) for r in results.values()) else 1


if __name__ == "__main__":
    raise SystemExit(main())
