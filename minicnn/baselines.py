"""The thesis' non-CNN baselines: a decision tree and a random forest on raw pixels.

As in the thesis (section 6.1): the images are flattened to pixel vectors (the
original pixel values, no scaling), split 80/20 into train and test, and fed
to scikit-learn's ``DecisionTreeClassifier`` / ``RandomForestClassifier``.
The majority-class baseline (always predict the most frequent training class)
is added because every accuracy on HAM10000 should be read against it
(nv alone is ~67% of the images).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from minicnn import metrics

BASELINES = ("majority", "decision_tree", "random_forest")


def pixel_features(images: np.ndarray, size: int | None = None) -> np.ndarray:
    """Flatten (N, H, W[, C]) images to (N, H*W*C) float32 rows.

    With ``size``, images are first shrunk to size x size by block averaging
    (nearest integer factor), which keeps a 224x224 forest tractable.
    """
    x = np.asarray(images)
    if x.ndim == 3:
        x = x[..., None]
    if x.ndim != 4:
        raise ValueError(f"images must be (N, H, W) or (N, H, W, C), got shape {x.shape}")
    if size is not None and x.shape[1] > size:
        f = x.shape[1] // size
        n, h, w, c = x.shape
        x = x[:, : (h // f) * f, : (w // f) * f].reshape(n, h // f, f, w // f, f, c).mean(axis=(2, 4))
    return x.reshape(x.shape[0], -1).astype(np.float32)


def split_80_20(n: int, labels: np.ndarray, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Indices of a stratified 80/20 train/test split (each class split 80/20, shuffled by ``seed``)."""
    rng = np.random.default_rng(seed)
    labels = np.asarray(labels)
    train, test = [], []
    for c in np.unique(labels):
        idx = rng.permutation(np.flatnonzero(labels == c))
        n_test = round(0.2 * idx.size) if idx.size > 1 else 0
        test.append(idx[:n_test])
        train.append(idx[n_test:])
    return np.sort(np.concatenate(train)), np.sort(np.concatenate(test))


def make_classifier(name: str, seed: int = 0, n_estimators: int = 100):
    """A fresh scikit-learn classifier for one of ``BASELINES``."""
    from sklearn.dummy import DummyClassifier
    from sklearn.ensemble import RandomForestClassifier
    from sklearn.tree import DecisionTreeClassifier

    if name == "majority":
        return DummyClassifier(strategy="most_frequent")
    if name == "decision_tree":
        return DecisionTreeClassifier(random_state=seed)
    if name == "random_forest":
        return RandomForestClassifier(n_estimators=n_estimators, random_state=seed, n_jobs=-1)
    raise ValueError(f"unknown baseline {name!r}: expected one of {', '.join(BASELINES)}")


def run_baselines(images: np.ndarray, labels: np.ndarray, num_classes: int,
                  names: Sequence[str] = BASELINES, seed: int = 0, size: int | None = None,
                  n_estimators: int = 100, test: tuple[np.ndarray, np.ndarray] | None = None
                  ) -> dict[str, dict]:
    """Fit each baseline on 80% of (images, labels) and score it on the other 20%.

    With ``test`` = (test_images, test_labels), all of (images, labels) is the
    training set and ``test`` the evaluation set instead (to score baselines on
    the same test split as the CNNs). Returns {name: metrics.summary(...)}.
    """
    x = pixel_features(images, size)
    y = np.asarray(labels).astype(np.int64).reshape(-1)
    if x.shape[0] != y.shape[0]:
        raise ValueError(f"{x.shape[0]} images but {y.shape[0]} labels")
    if test is None:
        tr, te = split_80_20(x.shape[0], y, seed)
        x_train, y_train, x_test, y_test = x[tr], y[tr], x[te], y[te]
    else:
        x_train, y_train = x, y
        x_test, y_test = pixel_features(test[0], size), np.asarray(test[1]).astype(np.int64).reshape(-1)
    results = {}
    for name in names:
        clf = make_classifier(name, seed, n_estimators)
        clf.fit(x_train, y_train)
        results[name] = metrics.summary(y_test, clf.predict(x_test), num_classes)
    return results
