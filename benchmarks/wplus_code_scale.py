"""How far from the generator's average code do an encoder's W+ codes sit? (issue 18)

    python benchmarks/wplus_code_scale.py pretrained/synthfaces64_clcae.pt pretrained/synthfaces64_psp.pt \
        pretrained/synthfaces64_e4e.pt --n 64

For ``--n`` SynthFaces test renders (persons never seen in training) and each inverter given, the W+ codes'
root-mean-square distance to the generator's ``latent_avg`` per layer, and their spread (RMS distance to the codes'
own mean) per layer. Next to them, the same two numbers for ``--samples`` codes of the generator's own mapping
network (``z ~ N(0, I)``, truncation 1): the W that the generator was trained on.

Why it matters: CLCAE's W+ codes are ``w + offsets`` where each offset is the output of a cross-attention layer
ending in a LayerNorm. With the official initialisation (gain about 1) every offset starts with norm about
``sqrt(style_dim)``: FFHQ's W scale at ``style_dim`` 512. A generator with a narrower W (the 64 px SynthFaces one:
``style_dim`` 128) then receives codes far outside its own W, and renders them soft; ``--wplus-offset-gain``
(``scripts/train.py``) sets that initial gain.
"""
from __future__ import annotations

import argparse
import datetime
import json
import platform
import sys
from pathlib import Path

import torch

from clcae.checkpoints import load_inverter
from clcae.data import synthfaces as sf


def code_stats(codes: torch.Tensor, centre: torch.Tensor) -> dict[str, list[float]]:
    """``codes`` [N, L, D] (or [N, D]) against ``centre`` [D] or [L, D]: per layer RMS distance to the centre and
    to the codes' own mean."""
    if codes.ndim == 2:
        codes = codes[:, None]
    centre = centre.reshape(-1, codes.shape[-1])
    dist = (codes - centre).square().sum(-1).mean(0).sqrt()
    spread = (codes - codes.mean(0)).square().sum(-1).mean(0).sqrt()
    return {"dist_to_avg": [round(float(v), 3) for v in dist], "spread": [round(float(v), 3) for v in spread]}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("inverters", nargs="+", help="inverter checkpoints (clcae.load_inverter), same generator")
    p.add_argument("--n", type=int, default=64, help="SynthFaces test renders (default 64)")
    p.add_argument("--samples", type=int, default=10000, help="mapping-network samples (default 10000)")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--json", default="", help="also write the numbers here")
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    results: dict[str, dict] = {}
    G = None
    for path in args.inverters:
        inv = load_inverter(path).eval()
        G = G or inv.decoder
        ds = sf.SynthFaces(args.n, inv.input_size[0], "test")
        x = torch.stack([ds[i][0] for i in range(args.n)])
        with torch.no_grad():
            out = inv(x, images=["wplus"])
        results[path] = code_stats(out["wplus"], inv.latent_avg)
    with torch.no_grad():
        z = torch.randn(args.samples, G.style_dim, generator=torch.Generator().manual_seed(0))
        w = G.mapping(z)
    results["generator W samples"] = code_stats(w, G.latent_avg.reshape(-1, G.style_dim)[0])
    print(f"{datetime.date.today()}, torch {torch.__version__}, {platform.processor() or platform.machine()}; "
          f"{args.n} SynthFaces test renders; {args.samples} mapping samples; command: python "
          f"benchmarks/wplus_code_scale.py {' '.join(argv if argv is not None else sys.argv[1:])}\n")
    print("| codes | mean RMS distance to latent_avg | per layer | mean spread | per layer |")
    print("|---|---:|---|---:|---|")
    for name, r in results.items():
        d, s = r["dist_to_avg"], r["spread"]
        print(f"| {name} | {sum(d) / len(d):.2f} | {' '.join(f'{v:.1f}' for v in d)} | {sum(s) / len(s):.2f} | "
              f"{' '.join(f'{v:.1f}' for v in s)} |")
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
