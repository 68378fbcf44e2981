"""Fingerprints of a generator's weights: which generator a stored file was made with.

Two digests, each part of a file format that must keep loading:

- :func:`generator_fingerprint` -> ``{'config', 'sha256'}``: stored in InterFaceGAN direction and GANSpace PCA files
  (``'generator'``), compared when they are loaded for another generator (a warning);
- :func:`generator_sha1` -> a hex string: the ``'generator_sha1'`` of a latent-image pairs folder's manifest
  (format 1), compared when the folder is resumed so that pairs of two generators never mix.
"""
from __future__ import annotations

import hashlib

import torch

__all__ = ["generator_fingerprint", "generator_sha1"]


def generator_fingerprint(generator: torch.nn.Module) -> dict:
    """``{'config': generator.config, 'sha256': hash of every state-dict tensor}`` of a generator.

    Stored with learned directions and PCAs, so loading them for another generator can warn. The hash covers the
    float32 bytes of every tensor in sorted key order (about 0.5 s for a 1024 px generator).
    """
    h = hashlib.sha256()
    for key, t in sorted(generator.state_dict().items()):
        h.update(key.encode())
        h.update(t.detach().to("cpu", torch.float32).contiguous().numpy().tobytes())
    return {"config": dict(getattr(generator, "config", {})), "sha256": h.hexdigest()}


def generator_sha1(generator: torch.nn.Module) -> str:
    """SHA-1 of the generator's state dict and ``latent_avg`` (names, dtypes, shapes, bytes): the identity a pairs
    folder records (:func:`clcae.data.pairs.write_pairs`), so that pairs of different generators are never mixed."""
    h = hashlib.sha1()
    items = list(generator.state_dict().items()) + [("latent_avg", generator.latent_avg)]
    for name, t in sorted(items, key=lambda kv: kv[0]):
        t = t.detach().cpu().contiguous()
        h.update(f"{name}|{t.dtype}|{tuple(t.shape)}|".encode())
        h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    return h.hexdigest()
