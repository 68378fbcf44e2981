"""CLCAE stage 1: contrastive alignment of W and image space (spec §3).

The image encoder ``E_I`` (IR-SE trunk + ``styles.0`` head + projection) embeds ``G(w) - G(w_avg)``, the latent
encoder ``E_w`` embeds ``w - w_avg``; both are L2-normalised and trained with the symmetric InfoNCE loss with a
learnable temperature (``E_I.logit_scale``), the negatives gathered over the global batch under several processes
(:func:`clcae.losses.contrastive.clip_loss`). Validation reports the mean loss over held-out pairs and the
image->latent / latent->image top-1 and top-5 retrieval over the whole held-out set.

Data (option ``data``): a pairs folder written by ``scripts/generate_pairs.py`` (``train/`` and ``test/``), or
``generate``: pairs rendered on the fly from ``generator`` (training pairs from ``seed``-derived streams, held-out
pairs from a disjoint stream).
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Iterator, Mapping

import torch

from .. import distributed as du
from ..checkpoints import atomic_save, load_generator
from ..data.sampler import derive_seed
from ..networks.contrastive import ImageEncoder, LatentEncoder
from ..networks.init import official_init
from .encoder_options import EncoderTrainOptions, parse_size, parse_widths
from .encoder_task import EncoderTask, to_input_geometry
from .errors import OptionError

__all__ = ["ContrastiveTask", "build_pair_datasets", "stage1_checkpoint"]


def build_pair_datasets(opts: EncoderTrainOptions, input_size: tuple[int, int], G) -> tuple[Any, Any, torch.Tensor,
                                                                                             torch.Tensor, str]:
    """``(train, val, avg_image [1, 3, H, W], avg_latent [D], description)`` for stage 1.

    Both sources give the average image of their pairs (:mod:`clcae.data.average`, brought to ``input_size``): with
    constant-noise pairs it is, bit for bit, the image an inverter with that input size subtracts.
    """
    from ..data.pairs import GeneratedPairs, PairsDataset

    if opts.data == "generate":
        train = GeneratedPairs(G, opts.pairs_n, seed=derive_seed(opts.seed, 10), psi=opts.psi,
                               noise_mode=opts.pair_noise, size=input_size)
        val = GeneratedPairs(G, opts.val_n, seed=derive_seed(opts.seed, 11), psi=opts.psi,
                             noise_mode=opts.pair_noise, size=input_size)
        desc = (f"pairs rendered on the fly from the generator: {opts.pairs_n} training, {opts.val_n} held-out "
                f"(psi {opts.psi}, noise {opts.pair_noise})")
        return train, val, train.avg_image(), train.avg_latent(), desc
    root = Path(opts.data)
    if not root.is_dir():
        raise OptionError("data", f"{root}: no such folder; pass a folder written by scripts/generate_pairs.py "
                                  "(with train/ and test/) or 'generate'")
    tr, te = root / "train", root / "test"
    if not (tr.is_dir() and te.is_dir()):
        raise OptionError("data", f"{root}: expected the sub-folders train/ and test/ that "
                                  "scripts/generate_pairs.py writes")
    try:
        train = PairsDataset(tr, size=input_size)
        val = PairsDataset(te, size=input_size)
    except (ValueError, FileNotFoundError) as e:
        raise OptionError("data", f"{root}: {e}") from e
    avg_img = train.avg_image()
    avg_lat = train.avg_latent()
    if avg_lat.shape[-1] != G.style_dim:
        raise OptionError("data", f"{root}: latents have {avg_lat.shape[-1]} dims, the generator's W has "
                                  f"{G.style_dim}")
    if not torch.allclose(avg_lat.float(), G.latent_avg.cpu().float(), atol=1e-4):
        raise OptionError("data", f"{root}: its avg_latent.npy is not the generator's latent_avg; the pairs were "
                                  "made with another generator")
    if len(val) > opts.val_n:
        val = torch.utils.data.Subset(val, range(opts.val_n))
    return train, val, avg_img, avg_lat, f"pairs {root}: {len(train)} training, {len(val)} held-out"


def stage1_checkpoint(net: torch.nn.Module, opts: Mapping[str, Any]) -> dict:
    """The official stage-1 file layout ``{'state_dict', 'opts'}``; ``opts`` also records our constructor arguments
    (``input_size``, ...) so :func:`clcae.checkpoints.load_contrastive_encoder` rebuilds the same network."""
    state = {k: v.detach().cpu().clone() for k, v in net.state_dict().items()}
    return {"state_dict": state, "opts": {**dict(opts), **net.config, "use_norm": bool(net.use_norm)}}


class ContrastiveTask(EncoderTask):
    """Stage-1 training of ``E_I`` and ``E_w`` (see the module docstring)."""

    def __init__(self, opts: EncoderTrainOptions, device: torch.device, rank: int, world_size: int, log):
        super().__init__(opts, device, rank, world_size, log)
        self.input_size = parse_size(opts.input_size)
        G = load_generator(opts.generator, device=device, impl=opts.impl)
        self.G = G
        (self.train_dataset, self.val_dataset, avg_img, avg_lat,
         self.data_desc) = build_pair_datasets(opts, self.input_size, G)
        self.avg_image = avg_img.to(device).float()
        self.avg_latent = avg_lat.to(device).float()
        d = G.style_dim
        self.E_I = ImageEncoder(input_size=self.input_size, style_dim=d, projection_dim=opts.projection_dim,
                                use_norm=True, num_layers=opts.num_layers, widths=parse_widths(opts.widths),
                                use_se=opts.use_se).to(device)
        self.E_w = LatentEncoder(style_dim=d, nhead=opts.nhead, dim_feedforward=opts.dim_feedforward,
                                 dropout=opts.dropout, projection_dim=opts.projection_dim, use_norm=True).to(device)
        if opts.init == "official":
            official_init(self.E_I)
            official_init(self.E_w)
        self.E_I = self.distributed_batchnorm(self.E_I)
        self.E_w = self.distributed_batchnorm(self.E_w)
        self.trainable = {"image": self.E_I, "latent": self.E_w}
        from .optim import build_optimizer

        self.optimizers = {"image": build_optimizer(opts.optimizer, self.E_I.parameters(), lr=opts.lr),
                           "latent": build_optimizer(opts.optimizer, self.E_w.parameters(), lr=opts.lr)}
        if opts.lr_plateau > 0:
            for k, o in self.optimizers.items():
                self.schedulers[k] = torch.optim.lr_scheduler.ReduceLROnPlateau(o, mode="min",
                                                                                patience=opts.lr_plateau, factor=0.1)

    def describe(self) -> str:
        ni = sum(p.numel() for p in self.E_I.parameters())
        nw = sum(p.numel() for p in self.E_w.parameters())
        return (f"E_I {ni / 1e6:.2f} M params, E_w {nw / 1e6:.2f} M params, input {self.input_size[0]}x"
                f"{self.input_size[1]}; {self.data_desc}")

    def _embed(self, batch: Any) -> tuple[torch.Tensor, torch.Tensor]:
        x, w = batch
        x = x.to(self.device).float()
        w = w.to(self.device).float().reshape(x.shape[0], -1)
        with self.autocast():
            e_i = self.E_I(x - self.avg_image)
            e_w = self.E_w(w - self.avg_latent)
        return e_i.float(), e_w.float()

    def train_step(self, batch: Any, step: int) -> dict[str, torch.Tensor]:
        from ..losses.contrastive import clip_loss

        self.E_I.train()
        self.E_w.train()
        e_i, e_w = self._embed(batch)
        scale = self.E_I.scale()
        loss = clip_loss(e_i, e_w, scale, gather=True)
        for o in self.optimizers.values():
            o.zero_grad(set_to_none=True)
        # Every rank computes the global loss with gradient only through its own rows; the all-reduce averages
        # over ranks, so scaling by the world size makes the update equal to the single-process one.
        (loss * self.world_size).backward()
        self.sync_gradients()
        if self.opts.grad_clip > 0:
            for m in self.trainable.values():
                torch.nn.utils.clip_grad_norm_(m.parameters(), self.opts.grad_clip)
        for o in self.optimizers.values():
            o.step()
        self.sync_buffers()
        with torch.no_grad():
            acc = (e_i @ e_w.T).argmax(1).eq(torch.arange(e_i.shape[0], device=e_i.device)).float().mean()
        return {"loss": loss.detach(), "logit_scale": scale.detach(), "batch_top1": acc}

    @torch.no_grad()
    def validate(self, batches: Iterator[Any]) -> dict[str, float]:
        from ..losses.contrastive import clip_loss
        from ..metrics.retrieval import retrieval_topk

        self.E_I.eval()
        self.E_w.eval()
        loss_sum, n_batches = 0.0, 0
        ei, ew = [], []
        for batch in batches:
            e_i, e_w = self._embed(batch)
            if e_i.shape[0] >= 2:
                loss_sum += float(clip_loss(e_i, e_w, self.E_I.scale(), gather=False))
                n_batches += 1
            ei.append(e_i.cpu())
            ew.append(e_w.cpu())
        self.E_I.train()
        self.E_w.train()
        t = du.all_reduce_sum(torch.tensor([loss_sum, float(n_batches)], dtype=torch.float64,
                                           device=self.device)).cpu().tolist()
        parts = du.all_gather_object((torch.cat(ei), torch.cat(ew))) if du.is_initialized() else [
            (torch.cat(ei), torch.cat(ew))]
        all_i = torch.cat([p[0] for p in parts])
        all_w = torch.cat([p[1] for p in parts])
        out = {"loss": t[0] / max(t[1], 1.0)}
        out.update({k: float(v) for k, v in retrieval_topk(all_i, all_w, ks=(1, 5)).items()})
        out["n_pairs"] = float(all_i.shape[0])
        return out

    @torch.no_grad()
    def image_columns(self, batch: Any) -> list[torch.Tensor]:
        x, w = batch
        x = x.to(self.device).float()
        rendered = self.G.synthesis(w.to(self.device).float().reshape(x.shape[0], -1), noise_mode="const")
        return [x, to_input_geometry(rendered, self.input_size)]

    def export_best(self, directory: Path, info: Mapping[str, Any]) -> list[Path]:
        from .state import to_jsonable

        meta = to_jsonable({"step": info["step"], "val": dict(info["val"]), "training": dict(info["options"])})
        pi = atomic_save(stage1_checkpoint(self.E_I, meta), Path(directory) / "best_model_image.pt")
        pl = atomic_save(stage1_checkpoint(self.E_w, meta), Path(directory) / "best_model_latent.pt")
        return [pi, pl]
