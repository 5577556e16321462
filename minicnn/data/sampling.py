"""Class imbalance: class weights for the loss and a class-balanced sampler.

``class_weights(labels, "balanced")`` follows scikit-learn's
``compute_class_weight``: w_c = n_samples / (n_classes * n_c), so every class
contributes the same total weight to the loss.
"""

from __future__ import annotations

import numpy as np

from minicnn.data.errors import DatasetError


def class_weights(labels, mode: str | None = "balanced",
                  num_classes: int | None = None) -> tuple[dict[int, float], np.ndarray]:
    """Per-class loss weights as ``({class: weight}, array indexed by class)``.

    ``mode="balanced"``: w_c = n / (K * n_c) over the K classes present (as
    scikit-learn).  With ``num_classes`` every class 0..num_classes-1 must
    occur.  ``mode=None``: all ones.  Classes absent from ``labels`` (when
    ``num_classes`` is None) get 0 in the array and no dict entry.
    """
    labels = np.asarray(labels).reshape(-1).astype(np.int64)
    if labels.size == 0:
        raise DatasetError("class_weights: no labels given")
    size = num_classes if num_classes is not None else int(labels.max()) + 1
    counts = np.bincount(labels, minlength=size)
    if len(counts) > size:
        raise DatasetError(f"class_weights: label {labels.max()} >= num_classes {num_classes}")
    present = np.flatnonzero(counts)
    if num_classes is not None and len(present) < num_classes:
        absent = np.flatnonzero(counts == 0).tolist()
        raise DatasetError(f"class_weights: classes {absent} do not occur in the labels")
    weights = np.zeros(size, dtype=np.float64)
    if mode == "balanced":
        weights[present] = labels.size / (len(present) * counts[present])
    elif mode is None or mode == "none":
        weights[present] = 1.0
    else:
        raise ValueError(f"mode must be 'balanced' or None, got {mode!r}")
    return {int(c): float(weights[c]) for c in present}, weights


class ClassBalancedSampler:
    """Draws ``num_samples`` indices per epoch, each class equally likely (with replacement).

    P(index i) = 1 / (K * n_{y_i}); the draw is a function of (seed, epoch) only,
    so a resumed run sees the same samples.
    """

    def __init__(self, labels, num_samples: int | None = None, seed: int = 0):
        self.labels = np.asarray(labels).reshape(-1).astype(np.int64)
        if self.labels.size == 0:
            raise DatasetError("ClassBalancedSampler: no labels given")
        counts = np.bincount(self.labels)
        present = np.count_nonzero(counts)
        self.probabilities = 1.0 / (present * counts[self.labels])
        self.num_samples = int(num_samples) if num_samples is not None else len(self.labels)
        self.seed = seed

    def __len__(self) -> int:
        return self.num_samples

    def indices(self, epoch: int) -> np.ndarray:
        rng = np.random.default_rng([self.seed, epoch, 0xBA1A])
        return rng.choice(len(self.labels), size=self.num_samples, replace=True, p=self.probabilities)
