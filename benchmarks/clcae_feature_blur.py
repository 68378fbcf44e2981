"""Where CLCAE's W+F image loses its detail (issue 18): the F blend scale, and the feature f against G's own.

    python benchmarks/clcae_feature_blur.py --checkpoint pretrained/synthfaces64_clcae.pt --n 64

For ``--n`` SynthFaces test images and one CLCAE inverter:

1. the W+F image rendered with the blend scale ``s`` of f at ``idx_k`` swept from 0 (the W+ image) to 1 (the
   CLCAE result): MSE, ``detail_ratio`` (high-frequency energy vs the input) and ``domain_perceptual`` at each s;
2. the injected feature f against the generator's own activation ``G_k(W+)`` at the same index: the share of
   their energy in the spatial high-frequency band (``x - Gaussian(sigma 1) * x`` on the feature map), their
   relative difference, and their cosine similarity per position.

A smooth f (little high-frequency energy next to G's activation) that takes over most of the picture (a 16x16
map at 64 px) predicts a smooth image: the generator's later layers add texture, not eyes or a mouth.
"""
from __future__ import annotations

import argparse
import datetime
import json
import sys
from pathlib import Path

import torch

from clcae.checkpoints import load_inverter
from clcae.data import synthfaces as sf
from clcae.losses.perceptual import DomainPerceptualLoss
from clcae.metrics.fidelity import detail_ratio, high_pass
from clcae.metrics.reconstruction import mse
from clcae.networks.domain import load_domain_net

ROOT = Path(__file__).resolve().parents[1]


def hf_share(fmap: torch.Tensor) -> torch.Tensor:
    """Share of a feature map's energy in its high-frequency band, per sample ``[B]``."""
    hp = high_pass(fmap.double(), 1.0)
    return hp.square().mean(dim=(1, 2, 3)) / fmap.double().square().mean(dim=(1, 2, 3)).clamp_min(1e-12)


@torch.no_grad()
def analyse(checkpoint: str, n: int, domain_net: str, scales: list[float]) -> dict:
    inv = load_inverter(checkpoint).eval()
    perc = DomainPerceptualLoss(load_domain_net(domain_net))
    ds = sf.SynthFaces(n, 64, "test")
    x = torch.stack([ds[i][0] for i in range(n)])
    out = inv.invert(x, images=("wplus_f",))
    G, k = inv.decoder, inv.idx_k
    sweep = []
    for s in scales:
        img = G.synthesis(out["wplus"], noise_mode="const", features_in={k: out["f"]}, feature_scale=s)
        img = torch.nn.functional.adaptive_avg_pool2d(img, x.shape[-2:])
        sweep.append({"scale": s, "mse": float(mse(img, x, size=None).mean()),
                      "detail_ratio": float(detail_ratio(img, x).mean()),
                      "domain_perceptual": float(perc(img, x).mean())})
    f, f_gen = out["f"].double(), out["f_gen"].double()
    cos = torch.nn.functional.cosine_similarity(f, f_gen, dim=1)  # [B, h, w]
    feature = {"shape": list(f.shape[1:]), "idx_k": k,
               "hf_share_f": float(hf_share(f).mean()), "hf_share_f_gen": float(hf_share(f_gen).mean()),
               "relative_difference": float(((f - f_gen).flatten(1).norm(dim=1) / f_gen.flatten(1).norm(dim=1)).mean()),
               "cosine_per_position": float(cos.mean()),
               "rms_f": float(f.square().mean().sqrt()), "rms_f_gen": float(f_gen.square().mean().sqrt())}
    return {"checkpoint": checkpoint, "n": n, "sweep": sweep, "feature": feature}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--checkpoint", action="append", required=True, help="a CLCAE inverter (repeatable)")
    p.add_argument("--n", type=int, default=64)
    p.add_argument("--domain-net", default=str(ROOT / "pretrained" / "synthfaces64_domain_net.pt"))
    p.add_argument("--scales", default="0,0.25,0.5,0.75,1")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--json", default="")
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    scales = [float(v) for v in args.scales.split(",")]
    results = [analyse(c, args.n, args.domain_net, scales) for c in args.checkpoint]
    print(f"{datetime.date.today()}  torch {torch.__version__}  n={args.n}  "
          f"command: python benchmarks/clcae_feature_blur.py {' '.join(argv or sys.argv[1:])}\n")
    print("| checkpoint | blend scale s | mse | detail_ratio | domain_perceptual |")
    print("|---|---:|---:|---:|---:|")
    for r in results:
        for row in r["sweep"]:
            print(f"| {r['checkpoint']} | {row['scale']:g} | {row['mse']:.4f} | {row['detail_ratio']:.3f} | "
                  f"{row['domain_perceptual']:.4f} |")
    print("\n| checkpoint | f at idx_k | HF share of f | HF share of G_k(W+) | ‖f − G_k‖ / ‖G_k‖ | cosine per position |")
    print("|---|---|---:|---:|---:|---:|")
    for r in results:
        ft = r["feature"]
        print(f"| {r['checkpoint']} | {ft['idx_k']}: {'x'.join(map(str, ft['shape']))} | {ft['hf_share_f']:.3f} | "
              f"{ft['hf_share_f_gen']:.3f} | {ft['relative_difference']:.3f} | {ft['cosine_per_position']:.3f} |")
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
