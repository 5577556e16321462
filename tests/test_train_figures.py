"""Figures (PNG: labelled axes, titles, the text really drawn) and Grad-CAM / activations against references."""

import numpy as np
import pytest
from PIL import Image

import minicnn
from minicnn import figures, nn
from minicnn.train.explain import activations, gradcam


def is_png(path):
    with Image.open(path) as im:
        assert im.format == "PNG"
        return im.size


def drawn(path) -> dict:
    """{text: box} of a figure's labels, each checked to have ink (dark pixels) inside its box."""
    with Image.open(path) as im:
        pixels = np.asarray(im.convert("L"))
    boxes = {}
    for text, x0, y0, x1, y1 in figures.texts(path):
        assert pixels[y0:y1 + 1, x0:x1 + 1].min() < 128, f"{text!r} has no ink in {path}"
        boxes.setdefault(text, (x0, y0, x1, y1))
    return boxes


def test_every_figure_writes_a_png(tmp_path):
    hist = {"ImageNet weights": {"accuracy": [0.5, 0.7, 0.8]}, "random weights": {"accuracy": [0.4, 0.5, 0.55]}}
    rng = np.random.default_rng(0)
    image = rng.integers(0, 255, (32, 32, 3)).astype(np.uint8)
    acts = {"ImageNet": rng.random((32, 32, 8)), "random": rng.random((32, 32, 8))}
    paths = [figures.training_curves(hist, tmp_path / "a" / "curves.png"),
             figures.activation_maps(image, acts, tmp_path / "acts.png"),
             figures.confusion_matrix(np.array([[5, 1], [2, 7]]), ["NORMAL", "PNEUMONIA"], tmp_path / "cm.png"),
             figures.gradcam_overlay(image, rng.random((4, 4)), tmp_path / "cam.png")]
    for p in paths:
        w, h = is_png(p)
        assert w > 100 and h > 100


def test_curves_have_labelled_axes_with_ticks_and_loss_beside_accuracy(tmp_path):
    history = {"loss": [1.9, 1.4, 1.1, 0.9, 0.8], "accuracy": [0.3, 0.5, 0.6, 0.7, 0.72],
               "val_loss": [1.8, 1.5, 1.3, 1.25, 1.3], "val_accuracy": [0.35, 0.45, 0.55, 0.6, 0.58]}
    path = figures.loss_and_accuracy(history, tmp_path / "curves.png", title="run")
    boxes = drawn(path)
    assert is_png(path) == (1100, 450)
    for text in ("run", "loss per epoch", "accuracy per epoch", "loss", "accuracy", "epoch", "training",
                 "validation", "1", "2", "3", "4", "5"):
        assert text in boxes, text
    assert boxes["loss per epoch"][0] < 550 < boxes["accuracy per epoch"][0]      # loss left, accuracy right
    ticks = [t for t, *_ in figures.texts(path) if t.replace(".", "").isdigit()]
    assert {"0.4", "0.6"} <= set(ticks) and {"1", "1.5"} <= set(ticks)             # y ticks on both panels
    assert (boxes["accuracy"][3] - boxes["accuracy"][1]) > (boxes["accuracy"][2] - boxes["accuracy"][0])  # vertical
    with pytest.raises(ValueError, match=r"history has no \['loss'\]"):
        figures.loss_and_accuracy({"accuracy": [1]}, tmp_path / "x.png")
    assert figures.nice_ticks(0.31, 0.72) == [0.2, 0.4, 0.6, 0.8]          # step 0.2 >= (0.72 - 0.31) / 4
    assert figures.nice_ticks(1, 7, 7) == [1, 2, 3, 4, 5, 6, 7]


@pytest.mark.parametrize("normalize", [False, True])
def test_confusion_matrix_labels_rows_and_columns_and_normalises(tmp_path, normalize):
    names = ["akiec", "bcc", "nv"]
    m = np.array([[5, 1, 0], [2, 7, 1], [0, 3, 9]])
    boxes = drawn(figures.confusion_matrix(m, names, tmp_path / "cm.png", "test", normalize=normalize))
    assert "true" in boxes and "predicted" in boxes
    for name in names:                                  # a row label (left) and a column label (above) each
        hits = [b for t, *b in figures.texts(tmp_path / "cm.png") if t == name]
        assert len(hits) == 2 and hits[0][0] < hits[1][0] and hits[1][3] < hits[0][1]
    cells = {"0.83", "0.70", "0.75"} if normalize else {"7", "9", "3"}          # 5/6, 7/10, 9/12 or counts
    assert cells <= set(boxes) and ("test (row-normalised)" in boxes) == normalize


def test_gradcam_title_names_the_class_and_its_probability(tmp_path):
    title = figures.gradcam_title("block5_conv3", "mel", 0.8312, "nv")
    assert title == "block5_conv3: predicted mel (p = 0.83), true nv"
    image = np.zeros((16, 16, 3), np.uint8)
    boxes = drawn(figures.gradcam_overlay(image, np.eye(4), tmp_path / "cam.png", title))
    assert {title, "image", "Grad-CAM", "overlay"} <= set(boxes)


def test_bad_figure_input_is_named(tmp_path):
    with pytest.raises(ValueError, match="has no 'val_accuracy'"):
        figures.training_curves({"run": {"accuracy": [1]}}, tmp_path / "x.png", metric="val_accuracy")
    with pytest.raises(ValueError, match=r"\(3, 3\)"):
        figures.confusion_matrix(np.eye(2), ["a", "b", "c"], tmp_path / "x.png")


def test_colormap_and_overlay_math():
    ends = figures.colormap(np.array([0.0, 0.5, 1.0]))
    assert ends[0, 2] > 100 and ends[0, 0] == 0          # low values blue
    assert ends[2, 0] > 100 and ends[2, 2] == 0          # high values red
    assert ends[1, 1] == 255                              # the middle green-ish
    image = np.full((4, 4, 3), 100, np.uint8)
    heat = np.ones((4, 4))
    heat[0, 0] = 0
    out = figures.overlay(image, heat, alpha=0.5)
    low = figures.colormap(np.array(0.0))
    np.testing.assert_array_equal(out[0, 0], np.round(0.5 * 100 + 0.5 * low.astype(float)).astype(np.uint8))
    np.testing.assert_array_equal(figures.to_uint8_image(np.array([[-1.0, 1.0]])), [[[0] * 3, [255] * 3]])


def small_cnn(dtype=np.float64):
    minicnn.seed(1)
    nn.reset_names()
    model = nn.Sequential([nn.Conv2D(4, 3, activation="relu", name="block1_conv1"), nn.MaxPool2D(name="block1_pool"),
                           nn.Conv2D(6, 3, activation="relu", name="block2_conv1"), nn.Flatten(name="flatten"),
                           nn.Dense(3, name="predictions")])
    model.build((None, 8, 8, 3))
    return model.to("cpu", dtype)


def test_gradcam_matches_finite_differences():
    model = small_cnn()
    rng = np.random.default_rng(0)
    image = rng.normal(size=(8, 8, 3))
    cam, c, probs = gradcam(model, image, layer="block1_pool", class_index=2)
    assert c == 2 and probs.sum() == pytest.approx(1)
    a = activations(model, image, "block1_pool")               # (4, 4, 4)
    tail = model.leaf_layers()[2:]

    def score(amap):
        h = minicnn.Tensor(amap[None])
        with minicnn.no_grad():
            for leaf in tail:
                h = leaf(h)
        return h.numpy()[0, 2]

    grad = np.zeros_like(a)
    eps = 1e-6
    for idx in np.ndindex(*a.shape):
        plus, minus = a.copy(), a.copy()
        plus[idx] += eps
        minus[idx] -= eps
        grad[idx] = (score(plus) - score(minus)) / (2 * eps)
    expected = np.maximum((a * grad.mean(axis=(0, 1))).sum(axis=2), 0)
    expected = expected / expected.max() if expected.max() > 0 else expected
    np.testing.assert_allclose(cam, expected, atol=1e-6)
    assert all(p.grad is None for p in model.parameters())     # no gradient left behind


def test_activations_are_the_layer_output_and_unknown_layer_is_named():
    model = small_cnn()
    image = np.random.default_rng(0).normal(size=(8, 8, 3))
    out = model.forward(minicnn.Tensor(image[None]), layers=["block1_conv1"])["block1_conv1"].numpy()[0]
    np.testing.assert_array_equal(activations(model, image, "block1_conv1"), out)
    with pytest.raises(KeyError, match="no layer named 'block9_conv3'"):
        gradcam(model, image, layer="block9_conv3")
