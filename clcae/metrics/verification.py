"""Identity verification and attribute-prediction errors: small pure functions of scores, embeddings and labels.

Verification protocol (what :func:`verification_metrics` does, and what each piece is for on its own):

1. :func:`sample_pairs` draws image pairs, half of the same person and half of two different persons;
2. :func:`pair_similarities` scores each pair by the cosine similarity of the two embeddings;
3. the scores give :func:`cross_validated_accuracy` (threshold from :func:`best_threshold` on the other folds,
   measured with :func:`accuracy_at_threshold`), :func:`roc_auc` and :func:`tar_at_far`.

Scores are "higher = more likely the same person"; a pair is called "same" when ``score > threshold``. Labels are
booleans (``True`` = same person).

Attributes: :func:`attribute_errors` reports the per-attribute mean absolute error in label units (with the
range-normalised error and the error of always predicting the mean) for continuous attributes and the accuracy
(with the majority-class baseline) for binary ones.
"""
from __future__ import annotations

import math
from typing import Any, Protocol, Sequence

import numpy as np
import torch
import torch.nn.functional as F

__all__ = [
    "sample_pairs", "pair_similarities", "accuracy_at_threshold", "best_threshold", "cross_validated_accuracy",
    "roc_auc", "tar_at_far", "verification_metrics", "AttributeSpec", "mean_absolute_error",
    "constant_baseline_mae", "binary_accuracy", "majority_baseline", "attribute_errors",
]


# ---------------------------------------------------------------------------------------------------- verification
def sample_pairs(person_ids: np.ndarray, n_pairs: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """``n_pairs`` distinct unordered image pairs, half of the same person, half of two different persons.

    Args:
        person_ids: int ``[N]``, the person of each image.
        n_pairs: pairs wanted; ``n_pairs // 2`` are same-person pairs (two different images), the rest
            different-person pairs.
        seed: the pairs are a pure function of ``(person_ids, n_pairs, seed)``.
    Returns:
        ``(pairs, same)``: int64 ``[n_pairs, 2]`` image indices (smaller index first, no pair repeated) and bool
        ``[n_pairs]``; the same-person pairs come first.
    Raises:
        ValueError: when there are not enough same-person pairs, or different-person pairs cannot be found.
    """
    rng = np.random.default_rng([seed, 0x9A125])
    person_ids = np.asarray(person_ids)
    groups: dict[int, np.ndarray] = {}
    for p in np.unique(person_ids):
        idx = np.flatnonzero(person_ids == p)
        if len(idx) >= 2:
            groups[int(p)] = idx
    n_pos, n_neg = n_pairs // 2, n_pairs - n_pairs // 2
    max_pos = sum(len(g) * (len(g) - 1) // 2 for g in groups.values())
    n = len(person_ids)
    if n_pos > max_pos:
        raise ValueError(f"{n_pos} same-person pairs wanted, only {max_pos} exist ({n} images)")
    keys = list(groups)
    seen: set[tuple[int, int]] = set()
    pos, neg = [], []
    while len(pos) < n_pos:
        g = groups[keys[int(rng.integers(len(keys)))]]
        a, b = rng.choice(len(g), 2, replace=False)
        pair = (int(min(g[a], g[b])), int(max(g[a], g[b])))
        if pair not in seen:
            seen.add(pair)
            pos.append(pair)
    tries = 0
    while len(neg) < n_neg:
        a, b = (int(v) for v in rng.integers(n, size=2))
        tries += 1
        if tries > 100 * n_pairs:
            raise ValueError("could not sample enough different-person pairs")
        if person_ids[a] == person_ids[b]:
            continue
        pair = (min(a, b), max(a, b))
        if pair not in seen:
            seen.add(pair)
            neg.append(pair)
    pairs = np.array(pos + neg, dtype=np.int64)
    same = np.array([True] * n_pos + [False] * n_neg)
    return pairs, same


def pair_similarities(embeddings: torch.Tensor, pairs: np.ndarray) -> np.ndarray:
    """Cosine similarity of the two embeddings of each pair, computed in float64.

    Args:
        embeddings: ``[N, D]`` (need not be normalised; CPU).
        pairs: int ``[P, 2]`` row indices into ``embeddings``.
    Returns:
        float64 ``[P]`` in [-1, 1].
    """
    if embeddings.ndim != 2:
        raise ValueError(f"embeddings must be [N, D]; got shape {tuple(embeddings.shape)}")
    e = F.normalize(embeddings.double(), dim=1)
    return (e[pairs[:, 0]] * e[pairs[:, 1]]).sum(1).numpy()


def accuracy_at_threshold(scores: np.ndarray, labels: np.ndarray, threshold: float) -> float:
    """Fraction of pairs classified correctly when "same" means ``score > threshold``; in [0, 1]."""
    return float(((np.asarray(scores) > threshold) == np.asarray(labels, bool)).mean())


def best_threshold(scores: np.ndarray, labels: np.ndarray) -> tuple[float, float]:
    """The threshold with the highest accuracy on these pairs.

    Args:
        scores: float ``[P]``; labels: bool ``[P]``.
    Returns:
        ``(threshold, accuracy)``: "same" is predicted when ``score > threshold``; the threshold lies midway
        between two adjacent distinct scores (or just outside the score range when calling every pair
        "different", or every pair "same", is best). ``accuracy`` is that threshold's accuracy on these pairs.
    """
    scores, labels = np.asarray(scores, np.float64), np.asarray(labels, bool)
    order = np.argsort(-scores, kind="stable")
    s, lab = scores[order], labels[order]
    n, n_pos = len(s), int(lab.sum())
    tp = np.cumsum(lab)
    fp = np.cumsum(~lab)
    acc = (tp + (n - n_pos - fp)) / n  # the top k+1 called positive
    valid = np.append(s[:-1] != s[1:], True)  # cut only between different scores
    acc = np.where(valid, acc, -1.0)
    k = int(np.argmax(acc))
    all_negative = (n - n_pos) / n
    if all_negative >= acc[k]:
        return float(s[0] + 1e-6), float(all_negative)
    thr = (s[k] + s[k + 1]) / 2 if k + 1 < n else s[k] - 1e-6
    return float(thr), float(acc[k])


def cross_validated_accuracy(scores: np.ndarray, labels: np.ndarray, n_folds: int = 2
                             ) -> tuple[list[float], list[float]]:
    """Verification accuracy with the threshold chosen on held-out pairs (k-fold).

    Positives and negatives are each dealt to the folds in turn (the ``i``-th positive goes to fold
    ``i % n_folds``, likewise for negatives), so every fold holds about the same share of both. For each fold the
    threshold is :func:`best_threshold` on the other folds, and the accuracy is measured on the fold.

    Args:
        scores: float ``[P]``; labels: bool ``[P]``; n_folds: >= 2.
    Returns:
        ``(accuracies, thresholds)``: one float per fold; report the mean of the accuracies.
    """
    if n_folds < 2:
        raise ValueError(f"n_folds must be >= 2; got {n_folds}")
    scores, labels = np.asarray(scores), np.asarray(labels, bool)
    fold = np.empty(len(labels), np.int64)
    fold[labels] = np.arange(int(labels.sum())) % n_folds
    fold[~labels] = np.arange(int((~labels).sum())) % n_folds
    accs, thrs = [], []
    for f in range(n_folds):
        thr, _ = best_threshold(scores[fold != f], labels[fold != f])
        accs.append(accuracy_at_threshold(scores[fold == f], labels[fold == f], thr))
        thrs.append(thr)
    return accs, thrs


def roc_auc(scores: np.ndarray, labels: np.ndarray) -> float:
    """Area under the ROC curve, in [0, 1] (Mann-Whitney U with average ranks for ties; 0.5 = chance).

    Args:
        scores: float ``[P]``; labels: bool ``[P]`` with at least one ``True`` and one ``False``.
    """
    from scipy.stats import rankdata

    labels = np.asarray(labels, bool)
    n_pos, n_neg = int(labels.sum()), int((~labels).sum())
    if n_pos == 0 or n_neg == 0:
        raise ValueError("ROC AUC needs positives and negatives")
    ranks = rankdata(scores)
    return float((ranks[labels].sum() - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg))


def tar_at_far(scores: np.ndarray, labels: np.ndarray, far: float) -> float:
    """True accept rate (fraction of same-person pairs accepted) at the threshold that accepts a fraction ``far``
    of the different-person pairs.

    The threshold is the ``floor(far * n_negatives)``-th highest negative score (0-based), and acceptance is
    ``score > threshold``; so ``far = 0`` accepts only positives above every negative. Returns a float in [0, 1]
    (1.0 when ``far * n_negatives >= n_negatives``).
    """
    labels = np.asarray(labels, bool)
    neg = np.sort(np.asarray(scores)[~labels])[::-1]
    k = int(math.floor(far * len(neg)))
    if k >= len(neg):
        return 1.0
    return float((np.asarray(scores)[labels] > neg[k]).mean())


def verification_metrics(emb: torch.Tensor, person_ids: np.ndarray, n_pairs: int, seed: int = 0) -> dict:
    """Identity verification on pairs from :func:`sample_pairs`, scored by the cosine similarity of ``emb``.

    Args:
        emb: ``[N, D]`` embeddings (CPU); person_ids: int ``[N]``; n_pairs, seed: see :func:`sample_pairs`.
    Returns:
        ``{'pairs', 'same_person_pairs', 'accuracy' (mean of 'accuracy_folds', 2-fold
        :func:`cross_validated_accuracy`), 'accuracy_folds', 'thresholds', 'roc_auc', 'tar_at_far_1e-2',
        'mean_similarity_same', 'mean_similarity_different'}`` (ints, floats and lists of floats).
    """
    pairs, same = sample_pairs(person_ids, n_pairs, seed)
    scores = pair_similarities(emb, pairs)
    accs, thrs = cross_validated_accuracy(scores, same, 2)
    return {"pairs": int(len(pairs)), "same_person_pairs": int(same.sum()),
            "accuracy": float(np.mean(accs)), "accuracy_folds": accs, "thresholds": thrs,
            "roc_auc": roc_auc(scores, same), "tar_at_far_1e-2": tar_at_far(scores, same, 1e-2),
            "mean_similarity_same": float(scores[same].mean()),
            "mean_similarity_different": float(scores[~same].mean())}


# ---------------------------------------------------------------------------------------------------- attributes
class AttributeSpec(Protocol):
    """What :func:`attribute_errors` needs to know about an attribute (e.g.
    :class:`clcae.data.synthfaces.Attribute`)."""

    name: str
    low: float
    high: float
    kind: str  # 'continuous' or 'binary'


def mean_absolute_error(predicted: torch.Tensor, target: torch.Tensor) -> float:
    """``mean(|predicted - target|)`` over all elements (same shapes), as a float in the targets' units."""
    return float((predicted - target).abs().mean())


def constant_baseline_mae(target: torch.Tensor) -> float:
    """The mean absolute error of always predicting the mean of ``target`` ``[N]`` (what a predictor must beat)."""
    return float((target - target.mean()).abs().mean())


def binary_accuracy(probability: torch.Tensor, truth: torch.Tensor, threshold: float = 0.5) -> float:
    """Fraction of ``probability > threshold`` that equals the bool ``truth`` (same shapes); in [0, 1]."""
    return float(((probability > threshold) == truth).double().mean())


def majority_baseline(truth: torch.Tensor) -> float:
    """Accuracy of always predicting the more frequent class of the bool ``truth``; in [0.5, 1]."""
    rate = truth.double().mean()
    return float(max(rate, 1 - rate))


def attribute_errors(predicted: torch.Tensor, target: torch.Tensor, attributes: Sequence[AttributeSpec]
                     ) -> dict[str, Any]:
    """Per-attribute errors of predicted attributes against labels.

    Args:
        predicted: ``[N, A]`` predictions in label units (binary attributes: probabilities in [0, 1]).
        target: ``[N, A]`` labels in label units (binary attributes: 0 / 1).
        attributes: ``A`` specs, column ``j`` is ``attributes[j]``.
    Returns:
        for each binary attribute ``name`` (in column order): ``'<name>_accuracy'`` (:func:`binary_accuracy` at 0.5
        against ``target > 0.5``) and ``'<name>_majority_baseline'``; then ``'mae'`` ``{name: float}`` for the
        continuous attributes in label units, ``'mae_normalised'`` (divided by ``high - low``),
        ``'mae_constant_baseline'`` (:func:`constant_baseline_mae`) and ``'mean_mae_normalised'`` (the mean of
        ``mae_normalised``; NaN without continuous attributes). Computed in float64.
    """
    if predicted.shape != target.shape or predicted.ndim != 2 or predicted.shape[1] != len(attributes):
        raise ValueError(f"predicted {tuple(predicted.shape)} and target {tuple(target.shape)} must both be "
                         f"[N, {len(attributes)}] (one column per attribute)")
    y = target.double()
    p = predicted.double()
    mae, mae_norm, base = {}, {}, {}
    out: dict[str, Any] = {}
    for j, a in enumerate(attributes):
        if a.kind == "binary":
            truth = y[:, j] > 0.5
            out[f"{a.name}_accuracy"] = binary_accuracy(p[:, j], truth, 0.5)
            out[f"{a.name}_majority_baseline"] = majority_baseline(truth)
            continue
        mae[a.name] = mean_absolute_error(p[:, j], y[:, j])
        mae_norm[a.name] = mae[a.name] / (a.high - a.low)
        base[a.name] = constant_baseline_mae(y[:, j])
    out.update({"mae": mae, "mae_normalised": mae_norm, "mae_constant_baseline": base,
                "mean_mae_normalised": float(np.mean(list(mae_norm.values()))) if mae_norm else float("nan")})
    return out
