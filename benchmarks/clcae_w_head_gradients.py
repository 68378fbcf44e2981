#!/usr/bin/env python
"""Where the gradient on CLCAE's w head comes from: one training batch, each loss term's gradient norm on the
foundation head ``styles.0`` and on w, for ``--query-grad full`` (the official code) and ``detach``.

The task is built exactly as ``scripts/train.py`` builds it (config, stage-1 encoders, losses); ``--checkpoint``
loads a trained CLCAE inverter's encoder weights into it to look at a later point of training. Prints a Markdown
table (docs/RESULTS.md, *Why CLCAE's foundation code w moves late*).

    python benchmarks/clcae_w_head_gradients.py --contrastive-image pretrained/synthfaces64_clcae_stage1
    python benchmarks/clcae_w_head_gradients.py --contrastive-image pretrained/synthfaces64_clcae_stage1 \\
        --checkpoint pretrained/synthfaces64_clcae.pt
"""
from __future__ import annotations

import argparse

import torch


def measure(config: str, contrastive_image: str, mode: str, checkpoint: str | None, batch: int, seed: int):
    from clcae.checkpoints import load_inverter
    from clcae.training.encoder_loop import build_task, resolve_encoder_options

    opts, _, _ = resolve_encoder_options({"method": "clcae", "stage": "invert", "contrastive_image": contrastive_image,
                                          "query_grad": mode, "batch": batch}, config=config)
    opts.validate()
    torch.manual_seed(seed)
    task = build_task(opts, torch.device("cpu"), 0, 1, lambda m: None)
    enc = task.inverter.encoder
    if checkpoint:
        enc.load_state_dict(load_inverter(checkpoint).encoder.state_dict())
    x = torch.stack([task.train_dataset[i] for i in range(batch)]).float()
    out = task._forward(x, 0, "const", train=True)
    terms = task._losses(x, out, 0)
    weights = {"l2": opts.l2_lambda, "perc": opts.lpips_lambda, "id": opts.id_lambda}
    head = list(enc.styles[0].parameters())
    rows = []
    for name, value in terms.items():
        prefix = name.split("_")[0]
        if name == "align":
            lam = opts.contrastive_lambda
        elif prefix in weights and name != "loss":
            lam = weights[prefix]
        else:
            continue
        g = torch.autograd.grad(lam * value, head + [out["w"]], retain_graph=True, allow_unused=True)
        g_head = sum(0.0 if t is None else float(t.square().sum()) for t in g[:-1]) ** 0.5
        g_w = 0.0 if g[-1] is None else float(g[-1].norm())
        rows.append((name, lam, float(value.detach()), g_head, g_w))
    dw = (out["w"] - task.inverter.latent_avg).norm(dim=-1).mean().item()
    off = (out["wplus"] - out["w"].unsqueeze(1)).norm(dim=-1).mean().item()
    return rows, dw, off


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--config", default="synthfaces64")
    ap.add_argument("--contrastive-image", required=True, help="stage-1 image encoder (file or run folder)")
    ap.add_argument("--checkpoint", default=None, help="a trained CLCAE inverter whose encoder weights to use")
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    print(f"config {args.config}; encoder: {args.checkpoint or 'as training starts'}; batch {args.batch}")
    for mode in ("full", "detach"):
        rows, dw, off = measure(args.config, args.contrastive_image, mode, args.checkpoint, args.batch, args.seed)
        print(f"\n--query-grad {mode}: mean |dw| = {dw:.4f}, mean |W+ offset| = {off:.3f}\n")
        print("| term | weight | value | grad norm on styles.0 | grad norm on w |")
        print("|---|---:|---:|---:|---:|")
        for name, lam, value, g_head, g_w in rows:
            print(f"| {name} | {lam:g} | {value:.4f} | {g_head:.3e} | {g_w:.3e} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
