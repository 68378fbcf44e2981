#!/usr/bin/env python
"""Claim 3 of issue 23: editability compared at equal target change, against the renderer's own edited face.

Per-unit-strength editing numbers do not rank methods: one method's unit moves the attribute twice as far as
another's. Here, for every method and edit, the strength ``s*`` that moves the attribute by ``--target-change``
(label units, as the domain network measures it) is found from the method's own strength curve, and the edit is
measured there:

1. the curve: the edit at ``--strengths`` on ``--n`` SynthFaces test images (``editing_metrics``: mean target
   change, identity kept and the other attributes' change per strength), plotted as target change against
   identity kept, one line per method (``--plot``);
2. ``s*``: from ``target_change / slope`` (the pooled least-squares slope of that curve), refined by false
   position until the mean change reached is within 2 % of the target (at most 8 tries); the edit at
   ``s*``: the change reached, identity kept, the other attributes' mean |change|;
3. what only this domain can give: the renderer draws the same person with the attribute changed by the amount the
   domain network measured on each edited reconstruction; ``mse_to_renderer`` is the squared error between the
   edited reconstruction and that face, beside ``mse_unedited`` (the reconstruction against its own input, the
   floor an edit starts from).

The method's result is edited: W+ codes for pSp and e4e; for CLCAE the W+F image, its F correction carried along
(``f = G_k(W+_edited) + Δf`` for a residual F branch, as :mod:`clcae.editing` renders it; a replacing F branch is
edited on W+ alone, as the eval table's editing rows do).

    python benchmarks/claims_editing.py --method clcae=pretrained/synthfaces64_clcae.pt \\
        --method psp=pretrained/synthfaces64_psp.pt --method e4e=pretrained/synthfaces64_e4e.pt \\
        --edit smile=pretrained/synthfaces64_directions/smile.pt --edit age=pretrained/synthfaces64_directions/age.pt \\
        --n 100 --target-change 0.3 --out runs/claims-editing
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np
import torch


def _pair(text: str) -> tuple[str, str]:
    name, sep, path = text.partition("=")
    if not sep or not name or not path:
        raise argparse.ArgumentTypeError(f"expected NAME=FILE, got {text!r}")
    return name, path


class _ResultRenderer:
    """``synthesis(codes, noise_mode)`` of the method's result for a fixed set of images: the generator's render
    of the codes, plus the residual F correction ``f_delta`` at index ``idx_k`` when there is one (CLCAE); with
    ``gate > 0`` the correction is weighted by :func:`clcae.editing.fspace.edit_gate` against the unedited
    ``codes0`` (faded where the edit redraws)."""

    def __init__(self, decoder, f_delta: torch.Tensor | None = None, idx_k: int | None = None, gate: float = 0.0,
                 codes0: torch.Tensor | None = None):
        self.decoder, self.f_delta, self.idx_k, self.gate = decoder, f_delta, idx_k, float(gate)
        self.codes0, self.f_gen0 = codes0, None
        if f_delta is not None and self.gate > 0:
            from clcae.editing.fspace import feature_at
            self.f_gen0 = feature_at(decoder, codes0, idx_k)[0]

    @torch.no_grad()
    def synthesis(self, codes: torch.Tensor, noise_mode: str = "const") -> torch.Tensor:
        if self.f_delta is None:
            return self.decoder.synthesis(codes, noise_mode=noise_mode)
        if codes.shape[0] != self.f_delta.shape[0]:
            raise ValueError("the F correction is per image: render all images in one call")
        if self.f_gen0 is not None:   # the library's gated carry: G_k(codes) + Δf * edit_gate(...), then replace
            from clcae.editing.fspace import carry_feature
            f = carry_feature(self.decoder, self.codes0, codes, self.f_gen0 + self.f_delta, self.idx_k,
                              f_gen=self.f_gen0, noise_mode=noise_mode, gate=self.gate)["f_edited"]
            return self.decoder.synthesis(codes, noise_mode=noise_mode, features_in={self.idx_k: f})
        return self.decoder.synthesis(codes, noise_mode=noise_mode, features_in={self.idx_k: self.f_delta},
                                      feature_mode="add")


class _EncoderEditRenderer:
    """``synthesis(codes)`` through the official CLCAE edit (``clcae.editing.encoder_edit``): the offset of the
    edited codes from the unedited ``codes0`` (the same on every layer: a direction applied to all of them) enters
    the encoder's query, and W+ and F are re-predicted for the edited face; a zero edit is the unedited result."""

    def __init__(self, inverter, images: torch.Tensor, codes0: torch.Tensor, unedited: torch.Tensor):
        self.inverter, self.images, self.codes0, self.unedited = inverter, images, codes0, unedited

    @torch.no_grad()
    def synthesis(self, codes: torch.Tensor, noise_mode: str = "const") -> torch.Tensor:
        from clcae.editing.fspace import encoder_edit

        delta = codes - self.codes0
        if not torch.allclose(delta, delta[:, :1].expand_as(delta), atol=1e-5):
            raise ValueError("the encoder edit needs a direction applied to every layer alike")
        if not delta.any():
            return self.unedited
        return encoder_edit(self.inverter, self.images, delta[:, 0])["image_wplus_f"]


def test_images(n: int, seed: int, res: int) -> tuple[torch.Tensor, list[dict]]:
    """The first ``n`` SynthFaces test images at ``res`` px in [-1, 1] and their labels."""
    from clcae.data.synthfaces import SynthFaces, item_labels

    ds = SynthFaces(n, res=res, split="test", seed=seed)
    images = torch.stack([ds[i][0] for i in range(n)])
    return images, [item_labels(i, "test", seed) for i in range(n)]


def renderer_edits(labels: list[dict], attribute: str, changes: np.ndarray, res: int, seed: int) -> torch.Tensor:
    """The renderer's image of each test person with ``attribute`` moved by ``changes[i]`` (label units; clipped to
    the attribute's range by the renderer), everything else as in the input."""
    from PIL import Image

    from clcae.data.images import to_tensor
    from clcae.data.synthfaces import render_face, sample_identity

    out = []
    for lab, d in zip(labels, changes):
        attrs = dict(lab)
        attrs[attribute] = float(attrs[attribute] + d)
        img = render_face(sample_identity(lab["person_id"], seed), attrs, res, lab["detail_seed"])
        out.append(to_tensor(Image.fromarray(img)))
    return torch.stack(out)


def find_strength(measure, change_of, target: float, start: float, tries: int = 8, tol: float = 0.02):
    """The strength whose mean change is within ``tol`` (relative) of ``target``, by false position: the
    unedited point (0, 0) and each measurement bracket the target (before the first overshoot, the last point is
    extrapolated through the origin; when two measurements in a row fall on one side, the bracket is bisected). Returns ``(strength, measurement, reached)``; ``reached`` is False when the
    tries ran out or the change went the wrong way (no strength along this direction gives the target)."""
    lo, hi = (0.0, 0.0), None            # (strength, change / target) below and above 1
    s, sides = start, []
    for _ in range(tries):
        res = measure(s)
        got = change_of(res)
        if abs(got - target) <= tol * abs(target):
            return s, res, True
        g = got / target
        if g <= 0:
            return s, res, False
        sides.append(g < 1)
        if g < 1:
            lo = (s, g)
        else:
            hi = (s, g)
        if hi is None:
            s = lo[0] / lo[1]                 # through the origin and the last point
        elif len(sides) >= 2 and sides[-1] == sides[-2]:
            s = (lo[0] + hi[0]) / 2           # false position stuck on one side: bisect
        else:
            s = lo[0] + (1 - lo[1]) * (hi[0] - lo[0]) / (hi[1] - lo[1])
    return s, res, False


@torch.no_grad()
def measure_method(inverter, images: torch.Tensor, labels: list[dict], edits, domain_net, strengths, target: float,
                   seed: int, grid: int = 0, gate: float = 0.0, encoder: bool = False) -> dict:
    from clcae.metrics.editing import editing_metrics

    out = inverter.invert(images)
    codes = out["wplus"]
    residual = getattr(inverter.encoder, "feature_residual", False)
    if encoder:
        if getattr(inverter, "arch", None) != "clcae":
            raise ValueError("--encoder-edit needs a CLCAE model")
        renderer, result = _EncoderEditRenderer(inverter, images, codes, out["image_wplus_f"]), "W+F (encoder edit)"
    elif "f_delta" in out and residual:
        renderer = _ResultRenderer(inverter.decoder, out["f_delta"], inverter.idx_k, gate, codes)
        result = f"W+F (F gated, tau {gate:g})" if gate > 0 else "W+F (F carried)"
    else:
        renderer, result = _ResultRenderer(inverter.decoder), "W+"
    recon = renderer.synthesis(codes).clamp(-1, 1)
    mse_unedited = float(((recon - images) ** 2).mean())
    rows = {}
    n = images.shape[0]
    for attribute, fn in edits:
        curve = editing_metrics(renderer, codes, fn, strengths, domain_net, attribute, batch=n)
        slope = float(curve["slope_pooled"])
        row = {"curve": {"strengths": list(strengths), "target_change": curve["target_change_per_strength"],
                         "id_kept": curve["id_kept_per_strength"],
                         "other_change": curve["other_change_per_strength"]}, "slope": slope}
        if abs(slope) < 1e-6:
            row["note"] = "the edit does not move the attribute: no strength reaches the target"
            rows[attribute] = row
            continue
        s_star, at, ok = find_strength(
            lambda s: editing_metrics(renderer, codes, fn, [0.0, s], domain_net, attribute, batch=n, return_images=n),
            lambda res: float(res["target_change_per_strength"][1]), target, target / slope)
        row["reached"] = ok
        edited = at.pop("images")[:, 1]                         # [n, 3, H, W]
        changes = np.asarray(at["per_image"]["slope"], dtype=np.float64) * s_star
        truth = renderer_edits(labels, attribute, changes, images.shape[-1], seed)
        row["_images"] = (edited[:grid], truth[:grid])
        row.update(strength=s_star, target_change=float(at["target_change_per_strength"][1]),
                   id_kept=float(at["id_kept"]["mean"]), other_change=float(at["other_change"]["mean"]),
                   mse_to_renderer=float(((edited - truth) ** 2).mean()),
                   id_to_renderer=float(torch.nn.functional.cosine_similarity(
                       domain_net.embed(edited), domain_net.embed(truth), dim=1).mean()))
        rows[attribute] = row
    return {"result": result, "mse_unedited": mse_unedited, "edits": rows}


def save_grids(results: dict, images: torch.Tensor, attributes: list[str], out: Path, scale: int = 2) -> list[Path]:
    """``edits_<attribute>.png`` per edit: one row per image: the input, the renderer's face of the person with the
    attribute moved by what the first method's edit measured, then every method's edited result at its ``s*``.
    (Each method's renderer face differs slightly, as its measured change does; the first method's is shown.)"""
    from clcae.data.images import save_image
    from clcae.sampling import image_grid

    paths = []
    for attribute in attributes:
        cols = [(n, r["edits"][attribute].get("_images")) for n, r in results.items()]
        cols = [(n, im) for n, im in cols if im is not None]
        if not cols:
            continue
        k = cols[0][1][0].shape[0]
        cells = []
        for i in range(k):
            cells += [images[i], cols[0][1][1][i]] + [im[0][i] for _, im in cols]
        grid = image_grid(torch.stack(cells).clamp(-1, 1), nrow=2 + len(cols))
        grid = torch.nn.functional.interpolate(grid[None], scale_factor=scale, mode="nearest")[0]
        paths.append(save_image(grid, out / f"edits_{attribute}.png"))
        (out / f"edits_{attribute}.txt").write_text("columns: input, renderer (" + cols[0][0] + "'s measured change), "
                                                    + ", ".join(n for n, _ in cols) + "\n")
    return paths


def plot(results: dict, attributes: list[str], out: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(attributes), figsize=(4.6 * len(attributes), 4), squeeze=False)
    for ax, attribute in zip(axes[0], attributes):
        for name, r in results.items():
            e = r["edits"].get(attribute)
            if not e:
                continue
            c = e["curve"]
            ax.plot(c["target_change"], c["id_kept"], "o-", label=name)
            if "strength" in e:
                ax.plot([e["target_change"]], [e["id_kept"]], "k*", ms=9)
        ax.set_title(f"{attribute}: change vs identity kept")
        ax.set_xlabel(f"mean {attribute} change (label units, domain net)")
        ax.set_ylabel("identity kept (cosine)")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    fig.tight_layout()
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=100)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__)
    p.add_argument("--method", type=_pair, action="append", required=True, metavar="NAME=CHECKPOINT")
    p.add_argument("--edit", type=_pair, action="append", required=True, metavar="ATTRIBUTE=DIRECTION_FILE")
    p.add_argument("--f-gate", type=_pair, action="append", default=[], metavar="NAME=TAU",
                   help="fade method NAME's F correction where the edit redraws (clcae.editing.fspace.edit_gate, "
                        "ours); repeatable; default: carried everywhere")
    p.add_argument("--encoder-edit", action="append", default=[], metavar="NAME",
                   help="edit method NAME (CLCAE) the official way: the offset enters the encoder and W+ and F are "
                        "re-predicted (clcae.editing.encoder_edit); repeatable")
    p.add_argument("--domain-net", default="pretrained/synthfaces64_domain_net.pt")
    p.add_argument("--n", type=int, default=100, help="test images (rendered together: one batch)")
    p.add_argument("--synthfaces-seed", type=int, default=0)
    p.add_argument("--strengths", type=float, nargs="+", default=[-3.0, -1.5, 0.0, 1.5, 3.0])
    p.add_argument("--target-change", type=float, default=0.3, help="label units (smile -1..1, age 0..1, ...)")
    p.add_argument("--grid", type=int, default=8, help="images per edit in the picture grids (0: none)")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--out", required=True, help="folder for results.json, results.md and curves.png")
    args = p.parse_args(argv)
    if args.n < 1 or len(set(args.strengths)) < 2 or args.target_change == 0:
        p.error("--n must be >= 1, --strengths needs two distinct values and --target-change must not be 0")
    torch.set_num_threads(args.threads)
    from clcae.checkpoints import CheckpointError, load_inverter
    from clcae.editing.interfacegan import apply_direction, load_direction
    from clcae.networks.domain import load_domain_net

    try:
        domain_net = load_domain_net(args.domain_net).eval()
        methods = [(name, load_inverter(path)) for name, path in args.method]
        edits = []
        for attribute, path in args.edit:
            if attribute not in domain_net.attribute_names:
                raise ValueError(f"{attribute}: not an attribute of the domain network {domain_net.attribute_names}")
            d = load_direction(path, generator=methods[0][1].decoder)
            edits.append((attribute, lambda c, s, d=d: apply_direction(c, d.vector, s, layers=d.layers)))
    except (CheckpointError, OSError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    sizes = {tuple(inv.input_size) for _, inv in methods}
    if len(sizes) != 1:
        print(f"error: the methods take different input sizes {sorted(sizes)}", file=sys.stderr)
        return 2
    images, labels = test_images(args.n, args.synthfaces_seed, sizes.pop()[0])
    gates = {}
    for name, tau in args.f_gate:
        if name not in dict(args.method):
            print(f"error: --f-gate {name}: no --method of that name", file=sys.stderr)
            return 2
        try:
            gates[name] = float(tau)
        except ValueError:
            print(f"error: --f-gate {name}={tau}: TAU must be a number", file=sys.stderr)
            return 2
    unknown = [n for n in args.encoder_edit if n not in dict(args.method)]
    if unknown:
        print(f"error: --encoder-edit {', '.join(unknown)}: no --method of that name", file=sys.stderr)
        return 2
    results = {name: measure_method(inv, images, labels, edits, domain_net, args.strengths, args.target_change,
                                    args.synthfaces_seed, args.grid, gates.get(name, 0.0), name in args.encoder_edit)
               for name, inv in methods}
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    if args.grid > 0:
        save_grids(results, images, [a for a, _ in edits], out)
    for r in results.values():
        for e in r["edits"].values():
            e.pop("_images", None)
    (out / "results.json").write_text(json.dumps({"n": args.n, "target_change": args.target_change,
                                                  "strengths": args.strengths, "methods": dict(args.method),
                                                  "f_gate": gates, "encoder_edit": args.encoder_edit,
                                                  "edits": dict(args.edit), "results": results}, indent=1))
    lines = [f"{args.n} SynthFaces test images; each edit at the strength that moves the attribute by "
             f"{args.target_change:+g} (domain network, label units)", "",
             "| attribute | method | edited | strength | change reached | identity kept ↑ | other attributes \\|Δ\\| ↓ | "
             "MSE to the renderer's edited face ↓ | identity to it ↑ | MSE unedited ↓ |",
             "|---|---|---|---:|---:|---:|---:|---:|---:|---:|"]
    for attribute, _ in edits:
        for name, r in results.items():
            e = r["edits"][attribute]
            if "strength" not in e:
                lines.append(f"| {attribute} | {name} | {r['result']} | – | – | – | – | – | – | "
                             f"{r['mse_unedited']:.4f} |")
                continue
            mark = "" if e["reached"] else " (target not reached)"
            lines.append(f"| {attribute} | {name} | {r['result']} | {e['strength']:.2f} | {e['target_change']:+.3f}{mark} | "
                         f"{e['id_kept']:.3f} | {e['other_change']:.3f} | {e['mse_to_renderer']:.4f} | "
                         f"{e['id_to_renderer']:.3f} | {r['mse_unedited']:.4f} |")
    (out / "results.md").write_text("\n".join(lines) + "\n")
    plot(results, [a for a, _ in edits], out / "curves.png")
    print("\n".join(lines))
    print(f"\nwrote {out / 'results.json'}, results.md, curves.png" + (", edits_*.png" if args.grid > 0 else ""))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
