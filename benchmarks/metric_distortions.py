"""Which reconstruction metrics order distortions of known size as a person would? (issue 18)

    python benchmarks/metric_distortions.py --n 64 --out docs/metric_distortions

Takes ``--n`` SynthFaces test renders (persons never seen in training), makes distorted copies of each, and
measures every metric of the evaluation suite between the copy and the render: MSE, SSIM, ``domain_perceptual``,
``id_domain``, the detail ratio and the attribute errors (:mod:`clcae.metrics.fidelity`), and each layer of the
domain network's perceptual distance alone. Distortions: Gaussian blur of sigma 0.5, 1 and 2 px; Gaussian noise
(std 0.03 and 0.06 in [-1, 1] units); JPEG at quality 75 and 30; a 1 px shift (reflected border); the renderer's
own image of the same person with glasses removed or added (glasses flipped), with eyes closed, and with the
smile reversed (same detail seed, everything else equal).

What a person would say, written down before measuring (each pair: the first is closer to the render):
blur 0.5 < blur 1 < blur 2; shift 1 px < blur 1; JPEG 75 < blur 2; noise 0.03 < blur 2;
blur 0.5 < glasses flipped, eyes closed, smile reversed; shift 1 px < glasses flipped, eyes closed, smile reversed.
The script counts, per metric, how many of these pairs it orders the same way (a distance must be larger for the
second; similarities and the detail ratio are turned into distances first) and writes a Markdown table, a JSON file
and an image strip of one example per distortion.
"""
from __future__ import annotations

import argparse
import datetime
import io
import json
import platform
import sys
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from clcae.data import synthfaces as sf
from clcae.losses.identity import DomainIdentity
from clcae.losses.perceptual import DomainPerceptualLoss
from clcae.metrics.fidelity import attribute_fidelity, detail_ratio, high_pass
from clcae.metrics.reconstruction import mse, ssim
from clcae.networks.domain import load_domain_net

ROOT = Path(__file__).resolve().parents[1]

PAIRS = [("blur 0.5", "blur 1"), ("blur 1", "blur 2"), ("shift 1px", "blur 1"), ("jpeg 75", "blur 2"),
         ("noise 0.03", "blur 2")] + [(a, b) for a in ("blur 0.5", "shift 1px")
                                      for b in ("glasses flipped", "eyes closed", "smile reversed")]


def gaussian_blur(x: torch.Tensor, sigma: float) -> torch.Tensor:
    return x - high_pass(x, sigma)


def jpeg(x: torch.Tensor, quality: int) -> torch.Tensor:
    out = []
    for img in x:
        arr = ((img.clamp(-1, 1) + 1) * 127.5).round().byte().permute(1, 2, 0).numpy()
        buf = io.BytesIO()
        Image.fromarray(arr).save(buf, "JPEG", quality=quality)
        back = np.asarray(Image.open(io.BytesIO(buf.getvalue())).convert("RGB"), np.float32)
        out.append(torch.from_numpy(back).permute(2, 0, 1) / 127.5 - 1)
    return torch.stack(out)


def rerender(ds: sf.SynthFaces, idx: list[int], change) -> torch.Tensor:
    """The renderer's image of the same items with ``change(labels)`` applied (same identity and detail seed)."""
    out = []
    for i in idx:
        lab = dict(ds.labels(i))
        change(lab)
        img = sf.render_face(ds.identity(i), lab, ds.res, detail_seed=lab["detail_seed"])
        out.append(torch.from_numpy(img.astype(np.float32)).permute(2, 0, 1) / 127.5 - 1)
    return torch.stack(out)


def distortions(x: torch.Tensor, ds: sf.SynthFaces, idx: list[int], seed: int = 0) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return {
        "blur 0.5": gaussian_blur(x, 0.5), "blur 1": gaussian_blur(x, 1.0), "blur 2": gaussian_blur(x, 2.0),
        "noise 0.03": x + 0.03 * torch.randn(x.shape, generator=g),
        "noise 0.06": x + 0.06 * torch.randn(x.shape, generator=g),
        "jpeg 75": jpeg(x, 75), "jpeg 30": jpeg(x, 30),
        "shift 1px": torch.cat([x[..., :, 1:], x[..., :, -1:]], dim=-1),
        "glasses flipped": rerender(ds, idx, lambda lab: lab.update(glasses=1.0 - round(lab["glasses"]))),
        "eyes closed": rerender(ds, idx, lambda lab: lab.update(eyes_open=0.0)),
        "smile reversed": rerender(ds, idx, lambda lab: lab.update(smile=-lab["smile"])),
    }


def measure(net, x: torch.Tensor, y: torch.Tensor, labels: torch.Tensor, judge=None) -> dict[str, float]:
    """Mean of every metric of ``y`` (the distorted copy) against ``x`` (the render); the attribute columns come
    from ``judge`` when given (those of the domain network ``net`` then get the suffix ``@domain``)."""
    perc = DomainPerceptualLoss(net)
    out = {"mse": mse(y, x, size=None), "ssim_w11": ssim(y, x, win_size=11, gaussian=True, sigma=1.5),
           "domain_perceptual": perc(y, x).double(),
           "id_domain": DomainIdentity(net).similarity(y, x).double(), "detail_ratio": detail_ratio(y, x)}
    n_layers = len(net.trunk_features(x[:1]))
    for layer in range(n_layers):
        out[f"domain_perceptual[{layer}]"] = DomainPerceptualLoss(net, layers=[layer])(y, x).double()
    if judge is not None:
        out.update(attribute_fidelity(judge, y, labels, sf.ATTRIBUTE_NAMES))
        out.update({f"{k}@domain": v for k, v in attribute_fidelity(net, y, labels, sf.ATTRIBUTE_NAMES).items()})
    else:
        out.update(attribute_fidelity(net, y, labels, sf.ATTRIBUTE_NAMES))
    return {k: float(v.double().mean()) for k, v in out.items()}


def as_distance(name: str, value: float) -> float:
    """Metrics turned into "larger = further from the render"."""
    if name in ("ssim_w11", "id_domain", "glasses_acc", "glasses_acc@domain"):
        return -value
    if name == "detail_ratio":
        return abs(float(np.log(max(value, 1e-12))))
    return value


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--n", type=int, default=64, help="test renders (default 64)")
    p.add_argument("--domain-net", default=str(ROOT / "pretrained" / "synthfaces64_domain_net.pt"))
    p.add_argument("--judge-net", default=str(ROOT / "pretrained" / "synthfaces64_judge_net.pt"),
                   help="network for the attribute columns (default: the shipped attribute judge; 'domain': the "
                        "domain network)")
    p.add_argument("--out", default="", help="folder for results.md, results.json and strip.png (default: print)")
    p.add_argument("--threads", type=int, default=1)
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    net = load_domain_net(args.domain_net).eval()
    judge = None if args.judge_net == "domain" else load_domain_net(args.judge_net).eval()
    ds = sf.SynthFaces(args.n, 64, "test")
    idx = list(range(args.n))
    x = torch.stack([ds[i][0] for i in idx])
    labels = torch.stack([torch.as_tensor(sf.attributes_to_vector(ds.labels(i))) for i in idx])
    with torch.no_grad():
        dist = distortions(x, ds, idx)
        results = {name: measure(net, x, y, labels, judge) for name, y in dist.items()}
        results["input itself"] = measure(net, x, x, labels, judge)
    metrics = list(results["blur 1"])
    agree = {m: sum(as_distance(m, results[a][m]) < as_distance(m, results[b][m]) for a, b in PAIRS)
             for m in metrics}
    lines = [f"{datetime.date.today()}, torch {torch.__version__}, {platform.machine()}; n = {args.n} SynthFaces "
             f"test renders; command: `python benchmarks/metric_distortions.py {' '.join(argv or sys.argv[1:])}`", "",
             "| distortion | " + " | ".join(metrics) + " |", "|---|" + "---:|" * len(metrics)]
    for name, vals in results.items():
        lines.append(f"| {name} | " + " | ".join(f"{vals[m]:.4f}" for m in metrics) + " |")
    lines.append(f"| **pairs ordered as a person would (of {len(PAIRS)})** | "
                 + " | ".join(f"**{agree[m]}**" for m in metrics) + " |")
    text = "\n".join(lines)
    print(text)
    if args.out:
        out = Path(args.out)
        out.mkdir(parents=True, exist_ok=True)
        (out / "results.md").write_text(text + "\n")
        (out / "results.json").write_text(json.dumps({"n": args.n, "pairs": PAIRS, "results": results,
                                                      "agreement": agree}, indent=1))
        row = [x[0]] + [dist[k][0] for k in dist]
        strip = torch.cat([r.clamp(-1, 1) for r in row], dim=-1)
        arr = ((strip + 1) * 127.5).round().byte().permute(1, 2, 0).numpy()
        Image.fromarray(arr).resize((arr.shape[1] * 3, arr.shape[0] * 3), Image.NEAREST).save(out / "strip.png")
        (out / "strip.txt").write_text("columns: render, " + ", ".join(dist) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
