"""Classification metrics, written out so that each formula can be read.

All functions take integer class labels ``y_true`` and ``y_pred`` (shape (N,)),
or, for ROC AUC, scores. With C classes and the confusion matrix
``M[i, j] = #{n : y_true[n] = i and y_pred[n] = j}`` (rows: truth):

    TP_c = M[c, c]      FP_c = sum_i M[i, c] - TP_c      FN_c = sum_j M[c, j] - TP_c
    precision_c = TP_c / (TP_c + FP_c)      recall_c = TP_c / (TP_c + FN_c)
    F1_c = 2 * precision_c * recall_c / (precision_c + recall_c) = 2 TP_c / (2 TP_c + FP_c + FN_c)

A ratio whose denominator is 0 is reported as 0 (a class never predicted has
precision 0), as scikit-learn does with ``zero_division=0``.

Averages (the thesis' tables print "micro avg" and "macro avg" of F1):

    micro:    pool TP, FP, FN over classes, then apply the formula once
              (for single-label data micro F1 = micro precision = accuracy)
    macro:    the plain mean of the per-class values
    weighted: the mean weighted by support_c = #{n : y_true[n] = c}
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np

AVERAGES = ("micro", "macro", "weighted")


def _labels(y) -> np.ndarray:
    y = np.asarray(y)
    if y.ndim == 2 and y.shape[1] == 1:
        y = y[:, 0]
    if y.ndim != 1:
        raise ValueError(f"labels must be a 1-D array of class indices, got shape {y.shape}")
    if y.size and (not np.issubdtype(y.dtype, np.integer)):
        if not np.all(np.mod(y, 1) == 0):
            raise ValueError("labels must be integer class indices")
        y = y.astype(np.int64)
    if y.size and y.min() < 0:
        raise ValueError(f"labels must be >= 0, got {y.min()}")
    return y.astype(np.int64)


def _pair(y_true, y_pred) -> tuple[np.ndarray, np.ndarray]:
    t, p = _labels(y_true), _labels(y_pred)
    if t.shape != p.shape:
        raise ValueError(f"y_true has {t.shape[0]} labels but y_pred has {p.shape[0]}")
    return t, p


def _num_classes(num_classes: int | None, *arrays: np.ndarray) -> int:
    seen = max((int(a.max()) + 1 for a in arrays if a.size), default=0)
    if num_classes is None:
        return seen
    if seen > num_classes:
        raise ValueError(f"labels go up to {seen - 1} but num_classes is {num_classes}")
    return num_classes


def _safe_divide(num: np.ndarray, den: np.ndarray) -> np.ndarray:
    num, den = np.asarray(num, np.float64), np.asarray(den, np.float64)
    out = np.zeros(np.broadcast(num, den).shape)
    np.divide(num, den, out=out, where=den != 0)
    return out


def confusion_matrix(y_true, y_pred, num_classes: int | None = None) -> np.ndarray:
    """M[i, j] = number of samples of true class i predicted as class j, shape (C, C)."""
    t, p = _pair(y_true, y_pred)
    c = _num_classes(num_classes, t, p)
    m = np.zeros((c, c), np.int64)
    np.add.at(m, (t, p), 1)
    return m


def accuracy(y_true, y_pred) -> float:
    """Fraction of samples with y_pred == y_true."""
    t, p = _pair(y_true, y_pred)
    return float(np.mean(t == p)) if t.size else 0.0


def precision_recall_f1(y_true, y_pred, num_classes: int | None = None) -> dict[str, np.ndarray]:
    """Per-class ``precision``, ``recall``, ``f1`` (float arrays, shape (C,)) and ``support`` (ints)."""
    m = confusion_matrix(y_true, y_pred, num_classes)
    tp = np.diag(m).astype(np.float64)
    predicted, actual = m.sum(axis=0), m.sum(axis=1)
    return {"precision": _safe_divide(tp, predicted), "recall": _safe_divide(tp, actual),
            "f1": _safe_divide(2 * tp, predicted + actual), "support": actual}


def _average(per_class: np.ndarray, support: np.ndarray, average: str) -> float:
    if average == "macro":
        return float(per_class.mean()) if per_class.size else 0.0
    if average == "weighted":
        return float(_safe_divide((per_class * support).sum(), support.sum()))
    raise ValueError(f"unknown average {average!r}: expected one of {AVERAGES} or None")


def _score(kind: str, y_true, y_pred, average: str | None, num_classes: int | None):
    if average is not None and average not in AVERAGES:
        raise ValueError(f"unknown average {average!r}: expected one of {AVERAGES} or None")
    prf = precision_recall_f1(y_true, y_pred, num_classes)
    if average is None:
        return prf[kind]
    if average == "micro":
        m = confusion_matrix(y_true, y_pred, num_classes)
        tp = np.trace(m)
        fp = fn = m.sum() - tp        # every miss is one FP (its predicted class) and one FN (its true class)
        den = {"precision": tp + fp, "recall": tp + fn, "f1": 2 * tp + fp + fn}[kind]
        return float(_safe_divide((2 if kind == "f1" else 1) * tp, den))
    return _average(prf[kind], prf["support"], average)


def precision(y_true, y_pred, average: str | None = None, num_classes: int | None = None):
    """Per-class precision (average=None) or its micro/macro/weighted average."""
    return _score("precision", y_true, y_pred, average, num_classes)


def recall(y_true, y_pred, average: str | None = None, num_classes: int | None = None):
    """Per-class recall (average=None) or its micro/macro/weighted average."""
    return _score("recall", y_true, y_pred, average, num_classes)


def f1_score(y_true, y_pred, average: str | None = None, num_classes: int | None = None):
    """Per-class F1 (average=None) or its micro/macro/weighted average."""
    return _score("f1", y_true, y_pred, average, num_classes)


def balanced_accuracy(y_true, y_pred) -> float:
    """Mean recall over the classes that occur in y_true (chance level: 1 / C)."""
    t, p = _pair(y_true, y_pred)
    m = confusion_matrix(t, p)
    present = m.sum(axis=1) > 0
    return float(_safe_divide(np.diag(m)[present], m.sum(axis=1)[present]).mean()) if present.any() else 0.0


def _binary_auc(positive: np.ndarray, score: np.ndarray) -> float:
    """AUC = P(score of a random positive > score of a random negative) + 0.5 P(tie).

    Computed through ranks (Mann-Whitney U): with average ranks r over all
    samples, U = sum_{positives} r - n_pos (n_pos + 1) / 2 and AUC = U / (n_pos n_neg).
    """
    n_pos = int(positive.sum())
    n_neg = positive.size - n_pos
    if n_pos == 0 or n_neg == 0:
        raise ValueError("ROC AUC needs both positive and negative samples of every scored class")
    order = np.argsort(score, kind="mergesort")
    sorted_scores = score[order]
    ranks = np.empty(score.size, np.float64)
    start = 0
    while start < score.size:                      # give tied scores their average rank
        stop = start
        while stop + 1 < score.size and sorted_scores[stop + 1] == sorted_scores[start]:
            stop += 1
        ranks[order[start:stop + 1]] = 0.5 * (start + stop) + 1.0
        start = stop + 1
    u = ranks[positive].sum() - n_pos * (n_pos + 1) / 2.0
    return float(u / (n_pos * n_neg))


def roc_auc(y_true, scores, average: str | None = "macro") -> float | np.ndarray:
    """Area under the ROC curve.

    Binary: ``scores`` of shape (N,) (score of class 1) or (N, 2).
    Multi-class: ``scores`` (N, C), one-vs-rest AUC per class, then averaged
    (``macro``: plain mean, ``weighted``: by support; None: the per-class array).
    """
    t = _labels(y_true)
    s = np.asarray(scores, np.float64)
    if s.ndim == 1 or (s.ndim == 2 and s.shape[1] == 2):
        score = s if s.ndim == 1 else s[:, 1]
        if score.shape[0] != t.shape[0]:
            raise ValueError(f"{t.shape[0]} labels but {score.shape[0]} scores")
        return _binary_auc(t == 1, score)
    if s.ndim != 2 or s.shape[0] != t.shape[0]:
        raise ValueError(f"scores must be (N,) or (N, C) with N = {t.shape[0]}, got {s.shape}")
    per_class = np.array([_binary_auc(t == c, s[:, c]) for c in range(s.shape[1])])
    if average is None:
        return per_class
    support = np.bincount(t, minlength=s.shape[1])
    return _average(per_class, support, average)


def bootstrap_ci(metric: Callable[[np.ndarray, np.ndarray], float], y_true, y_pred,
                 n_resamples: int = 1000, confidence: float = 0.95,
                 seed: int = 0) -> tuple[float, float, float]:
    """Percentile bootstrap: (point estimate, low, high).

    Resample the N (truth, prediction) pairs with replacement ``n_resamples``
    times, evaluate ``metric`` on each resample, and return the
    (1 - confidence)/2 and (1 + confidence)/2 quantiles of those values.
    ``y_pred`` may also be a score array (N, C) for metrics like roc_auc.
    """
    if not 0 < confidence < 1:
        raise ValueError(f"confidence must be in (0, 1), got {confidence}")
    t, p = np.asarray(y_true), np.asarray(y_pred)
    if t.shape[0] != p.shape[0] or t.shape[0] == 0:
        raise ValueError(f"need equally many (and > 0) labels and predictions, got {t.shape[0]}, {p.shape[0]}")
    rng = np.random.default_rng(seed)
    values = []
    for _ in range(n_resamples):
        idx = rng.integers(0, t.shape[0], t.shape[0])
        try:
            values.append(metric(t[idx], p[idx]))
        except ValueError:           # e.g. AUC on a resample with one class only: skip it
            continue
    if not values:
        raise ValueError("the metric failed on every bootstrap resample")
    lo, hi = np.quantile(values, [(1 - confidence) / 2, (1 + confidence) / 2])
    return float(metric(t, p)), float(lo), float(hi)


def summary(y_true, y_pred, num_classes: int | None = None) -> dict[str, float | list[float]]:
    """Everything the thesis tables need for one model, JSON-able.

    Keys: f1 (per class), precision, recall, support, micro_f1, macro_f1,
    weighted_f1, accuracy, balanced_accuracy.
    """
    prf = precision_recall_f1(y_true, y_pred, num_classes)
    return {"f1": prf["f1"].tolist(), "precision": prf["precision"].tolist(),
            "recall": prf["recall"].tolist(), "support": prf["support"].tolist(),
            "micro_f1": f1_score(y_true, y_pred, "micro", num_classes),
            "macro_f1": f1_score(y_true, y_pred, "macro", num_classes),
            "weighted_f1": f1_score(y_true, y_pred, "weighted", num_classes),
            "accuracy": accuracy(y_true, y_pred), "balanced_accuracy": balanced_accuracy(y_true, y_pred)}


def report_table(columns: dict[str, dict], class_names: Sequence[str], digits: int = 2,
                 extra_rows: Sequence[str] = ("balanced_accuracy",)) -> list[list[str]]:
    """Rows shaped like the thesis' Tables 7.1/7.2: one row per class (F1), then
    ``micro avg`` and ``macro avg`` (F1), then ``extra_rows``; one column per model.

    ``columns`` maps a column title to a :func:`summary` dict (None or a missing
    key prints "-"). Values print like the thesis: ``.81`` (no leading zero).
    Returns a list of rows, the first being the header.
    """
    def fmt(v) -> str:
        if v is None:
            return "-"
        s = f"{float(v):.{digits}f}"
        return s[1:] if s.startswith("0.") else s

    header = [""] + list(columns)
    rows = [header]
    for i, name in enumerate(class_names):
        rows.append([name] + [fmt(c["f1"][i]) if c and i < len(c.get("f1", [])) else "-"
                              for c in columns.values()])
    labels = {"micro_f1": "micro avg", "macro_f1": "macro avg"}
    for key in ("micro_f1", "macro_f1", *extra_rows):
        rows.append([labels.get(key, key.replace("_", " "))]
                    + [fmt(c.get(key)) if c else "-" for c in columns.values()])
    return rows


def to_markdown(rows: list[list[str]]) -> str:
    """A GitHub markdown table from rows (first row: header)."""
    lines = ["| " + " | ".join(rows[0]) + " |", "|" + "|".join("---" for _ in rows[0]) + "|"]
    lines += ["| " + " | ".join(r) + " |" for r in rows[1:]]
    return "\n".join(lines) + "\n"


def to_text(rows: list[list[str]]) -> str:
    """The same rows as a plain aligned text table (for terminals)."""
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    return "\n".join("  ".join(c.rjust(w) if j else c.ljust(w) for j, (c, w) in enumerate(zip(r, widths)))
                     for r in rows) + "\n"
