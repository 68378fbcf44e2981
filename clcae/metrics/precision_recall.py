"""Improved precision and recall of a generative model (Kynkäänniemi et al. 2019, *Improved Precision and Recall
Metric for Assessing Generative Models*), on feature vectors.

Each set of features approximates its manifold by the union of balls centred on its points, each ball's radius
being the distance to that point's ``k``-th nearest neighbour in the same set (itself excluded):

- **precision**: the fraction of generated samples that fall inside the real manifold (are they realistic?);
- **recall**: the fraction of real samples that fall inside the generated manifold (is the variety covered?).

Low precision with high recall says the samples are off the data (e.g. blurry); high precision with low recall
says modes are missing. The paper uses ``k = 3`` with VGG-16 features of 50,000 images; the values depend on ``k``,
on the feature network and on the number of samples, so compare them only at the same settings.
"""
from __future__ import annotations

import torch

__all__ = ["knn_radii", "manifold_coverage", "precision_recall"]


def _pairwise_sq(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Squared Euclidean distances ``[len(a), len(b)]`` in float64 (exact enough for ties and small sets)."""
    return torch.cdist(a.double(), b.double()).square()


def knn_radii(features: torch.Tensor, k: int = 3, chunk: int = 1024) -> torch.Tensor:
    """Distance of every row of ``features`` ``[N, D]`` to its ``k``-th nearest other row: ``[N]`` (float64).

    The point itself is excluded (a duplicate of it counts as a neighbour at distance 0). Needs ``N > k``.
    """
    n = features.shape[0]
    if k < 1 or n <= k:
        raise ValueError(f"k-NN radii need k >= 1 and more than k points; got k={k}, {n} points")
    out = []
    for start in range(0, n, chunk):
        d = _pairwise_sq(features[start:start + chunk], features)
        rows = torch.arange(d.shape[0])
        d[rows, rows + start] = float("inf")  # not its own neighbour
        out.append(d.kthvalue(k, dim=1).values.sqrt())
    return torch.cat(out)


def manifold_coverage(manifold: torch.Tensor, radii: torch.Tensor, queries: torch.Tensor,
                      chunk: int = 1024) -> torch.Tensor:
    """For each row of ``queries`` ``[M, D]``: is it within ``radii[i]`` of some ``manifold[i]``? ``[M]`` bool.

    A query on the boundary (distance equal to the radius) counts as inside, as in the paper.
    """
    inside = []
    r2 = radii.double().square()
    for start in range(0, queries.shape[0], chunk):
        d = _pairwise_sq(queries[start:start + chunk], manifold)
        inside.append((d <= r2.unsqueeze(0)).any(dim=1))
    return torch.cat(inside) if inside else torch.zeros(0, dtype=torch.bool)


def precision_recall(real: torch.Tensor, generated: torch.Tensor, k: int = 3) -> dict[str, float]:
    """``{'precision', 'recall', 'k', 'n_real', 'n_generated'}`` for feature sets ``[N, D]`` and ``[M, D]``.

    precision = mean over generated samples of "inside the real manifold"; recall = mean over real samples of
    "inside the generated manifold" (manifolds from :func:`knn_radii` with ``k``).
    """
    if real.ndim != 2 or generated.ndim != 2 or real.shape[1] != generated.shape[1]:
        raise ValueError(f"expected [N, D] and [M, D] feature sets; got {tuple(real.shape)} and "
                         f"{tuple(generated.shape)}")
    real_r = knn_radii(real, k)
    gen_r = knn_radii(generated, k)
    precision = manifold_coverage(real, real_r, generated).double().mean().item()
    recall = manifold_coverage(generated, gen_r, real).double().mean().item()
    return {"precision": precision, "recall": recall, "k": int(k), "n_real": int(real.shape[0]),
            "n_generated": int(generated.shape[0])}
