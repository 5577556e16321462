"""minicnn.metrics against hand-computed cases and scikit-learn as an independent reference."""

import numpy as np
import pytest
import sklearn.metrics as skm

from minicnn import metrics


def test_hand_computed_three_classes():
    # truth 0 0 0 1 1 2 ; predicted 0 0 1 1 2 2
    t = [0, 0, 0, 1, 1, 2]
    p = [0, 0, 1, 1, 2, 2]
    m = metrics.confusion_matrix(t, p)
    np.testing.assert_array_equal(m, [[2, 1, 0], [0, 1, 1], [0, 0, 1]])
    prf = metrics.precision_recall_f1(t, p)
    # class 0: TP 2, FP 0, FN 1 -> P 1, R 2/3, F1 4/5 ; class 1: TP 1 FP 1 FN 1 -> 1/2 ; class 2: TP1 FP1 FN0 -> 2/3
    np.testing.assert_allclose(prf["precision"], [1, 0.5, 0.5])
    np.testing.assert_allclose(prf["recall"], [2 / 3, 0.5, 1])
    np.testing.assert_allclose(prf["f1"], [0.8, 0.5, 2 / 3])
    assert metrics.accuracy(t, p) == pytest.approx(4 / 6)
    assert metrics.f1_score(t, p, "micro") == pytest.approx(4 / 6)
    assert metrics.f1_score(t, p, "macro") == pytest.approx((0.8 + 0.5 + 2 / 3) / 3)
    assert metrics.f1_score(t, p, "weighted") == pytest.approx((3 * 0.8 + 2 * 0.5 + 2 / 3) / 6)
    assert metrics.balanced_accuracy(t, p) == pytest.approx((2 / 3 + 0.5 + 1) / 3)


def test_never_predicted_class_scores_zero_not_nan():
    t, p = [0, 1, 1, 2], [1, 1, 1, 1]
    f1 = metrics.f1_score(t, p, num_classes=4)
    assert f1.shape == (4,) and np.all(np.isfinite(f1))
    assert f1[0] == 0 and f1[2] == 0 and f1[3] == 0


@pytest.mark.parametrize("seed", range(5))
def test_matches_sklearn_on_random_labels(seed):
    rng = np.random.default_rng(seed)
    c = int(rng.integers(2, 8))
    t = rng.integers(0, c, 200)
    p = np.where(rng.random(200) < 0.6, t, rng.integers(0, c, 200))
    labels = list(range(c))
    np.testing.assert_array_equal(metrics.confusion_matrix(t, p, c), skm.confusion_matrix(t, p, labels=labels))
    for avg in (None, "micro", "macro", "weighted"):
        for ours, theirs in ((metrics.f1_score, skm.f1_score), (metrics.precision, skm.precision_score),
                             (metrics.recall, skm.recall_score)):
            np.testing.assert_allclose(ours(t, p, avg, c), theirs(t, p, average=avg, labels=labels,
                                                                 zero_division=0), atol=1e-12)
    assert metrics.balanced_accuracy(t, p) == pytest.approx(skm.balanced_accuracy_score(t, p))
    assert metrics.accuracy(t, p) == pytest.approx(skm.accuracy_score(t, p))


def test_roc_auc_binary_hand_and_sklearn():
    # positives scored 0.9, 0.4; negatives 0.5, 0.1 -> pairs (0.9>0.5, 0.9>0.1, 0.4<0.5, 0.4>0.1) = 3/4
    assert metrics.roc_auc([1, 1, 0, 0], [0.9, 0.4, 0.5, 0.1]) == pytest.approx(0.75)
    # a tie counts one half
    assert metrics.roc_auc([1, 0], [0.3, 0.3]) == pytest.approx(0.5)
    rng = np.random.default_rng(1)
    t = rng.integers(0, 2, 300)
    s = np.round(rng.random(300) + 0.3 * t, 2)      # rounding makes ties
    assert metrics.roc_auc(t, s) == pytest.approx(skm.roc_auc_score(t, s))


def test_roc_auc_multiclass_matches_sklearn_ovr():
    rng = np.random.default_rng(2)
    t = rng.integers(0, 4, 400)
    s = rng.random((400, 4)) + np.eye(4)[t] * 0.5
    s /= s.sum(axis=1, keepdims=True)
    for avg in ("macro", "weighted"):
        assert metrics.roc_auc(t, s, avg) == pytest.approx(skm.roc_auc_score(t, s, multi_class="ovr",
                                                                            average=avg))


def test_bootstrap_ci_brackets_estimate_and_shrinks_with_n():
    rng = np.random.default_rng(3)

    def width(n):
        t = rng.integers(0, 3, n)
        p = np.where(rng.random(n) < 0.7, t, rng.integers(0, 3, n))
        est, lo, hi = metrics.bootstrap_ci(metrics.accuracy, t, p, n_resamples=300, seed=0)
        assert lo <= est <= hi
        return hi - lo

    assert width(2000) < width(100)


def test_bad_input_messages():
    with pytest.raises(ValueError, match="y_pred has 2"):
        metrics.accuracy([0, 1, 1], [0, 1])
    with pytest.raises(ValueError, match="num_classes is 2"):
        metrics.confusion_matrix([0, 3], [0, 1], num_classes=2)
    with pytest.raises(ValueError, match="unknown average"):
        metrics.f1_score([0], [0], "mean")
    with pytest.raises(ValueError, match="both positive and negative"):
        metrics.roc_auc([1, 1], [0.2, 0.3])


def test_report_table_shape_like_thesis():
    t, p = [0, 0, 1, 1, 2], [0, 1, 1, 1, 2]
    cols = {"Decision Tree": metrics.summary(t, p, 3), "CNN": None}
    rows = metrics.report_table(cols, ["a", "b", "c"])
    assert rows[0] == ["", "Decision Tree", "CNN"]
    assert [r[0] for r in rows[1:]] == ["a", "b", "c", "micro avg", "macro avg", "balanced accuracy"]
    assert rows[1][1] == ".67" and rows[1][2] == "-" and rows[4][1] == ".80"
    md = metrics.to_markdown(rows)
    assert md.splitlines()[1] == "|---|---|---|"
