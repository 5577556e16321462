"""Figures (PNG, with and without matplotlib) and Grad-CAM / activations against references."""

import numpy as np
import pytest
from PIL import Image

import minicnn
from minicnn import figures, nn
from minicnn.train.explain import activations, gradcam


@pytest.fixture(params=["matplotlib", "pillow"])
def backend(request, monkeypatch):
    if request.param == "pillow":
        monkeypatch.setattr(figures, "have_matplotlib", lambda: False)
    return request.param


def is_png(path):
    with Image.open(path) as im:
        assert im.format == "PNG"
        return im.size


def test_every_figure_writes_a_png(tmp_path, backend):
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
