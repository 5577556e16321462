"""preprocess_input against a float64 formula and a step-by-step float32 transcription of Keras' rules."""

import numpy as np
import pytest

from minicnn.preprocess import preprocess_input

MEAN_BGR = [103.939, 116.779, 123.68]
MEAN_RGB = [0.485, 0.456, 0.406]
STD_RGB = [0.229, 0.224, 0.225]


def keras_steps(x, mode):
    """Keras' numpy preprocessing, written out: float32 cast of ints, then in-place steps in order."""
    x = np.array(x, dtype=np.float32 if x.dtype.kind in "ui" else x.dtype)
    if mode == "tf":
        x = x / x.dtype.type(127.5)
        return x - x.dtype.type(1.0)
    if mode == "torch":
        x = x / x.dtype.type(255.0)
        for c in range(3):
            x[..., c] = x[..., c] - x.dtype.type(MEAN_RGB[c])
            x[..., c] = x[..., c] / x.dtype.type(STD_RGB[c])
        return x
    x = x[..., ::-1].copy()
    for c in range(3):
        x[..., c] = x[..., c] - x.dtype.type(MEAN_BGR[c])
    return x


@pytest.mark.parametrize("mode", ["caffe", "tf", "torch"])
@pytest.mark.parametrize("shape", [(5, 7, 3), (2, 4, 6, 3)])
@pytest.mark.parametrize("dtype", [np.uint8, np.float32, np.float64])
def test_bit_exact_with_keras_steps(mode, shape, dtype):
    rng = np.random.default_rng(0)
    x = rng.integers(0, 256, size=shape).astype(dtype)
    if dtype != np.uint8:
        x += rng.random(shape).astype(dtype)
    before = x.copy()
    y = preprocess_input(x, mode)
    assert y.dtype == np.float32 and y.shape == x.shape
    np.testing.assert_array_equal(y, keras_steps(x, mode).astype(np.float32))
    np.testing.assert_array_equal(x, before)  # input untouched


@pytest.mark.parametrize("mode", ["caffe", "tf", "torch"])
def test_matches_float64_formula(mode):
    x = np.random.default_rng(1).integers(0, 256, size=(3, 8, 8, 3)).astype(np.uint8)
    xf = x.astype(np.float64)
    if mode == "caffe":
        expected = xf[..., ::-1] - np.array(MEAN_BGR)
    elif mode == "tf":
        expected = xf / 127.5 - 1
    else:
        expected = (xf / 255 - np.array(MEAN_RGB)) / np.array(STD_RGB)
    np.testing.assert_allclose(preprocess_input(x, mode), expected, rtol=1e-6, atol=1e-4)


def test_caffe_channel_order():
    x = np.zeros((1, 1, 3), np.uint8)
    x[0, 0] = [10, 20, 30]  # R, G, B
    np.testing.assert_allclose(preprocess_input(x, "caffe")[0, 0],
                               [30 - 103.939, 20 - 116.779, 10 - 123.68], rtol=1e-6)


def test_bad_input():
    with pytest.raises(ValueError, match="mode"):
        preprocess_input(np.zeros((2, 2, 3)), mode="keras")
    with pytest.raises(ValueError, match=r"\(H, W, 3\)"):
        preprocess_input(np.zeros((2, 2, 4)))
    with pytest.raises(ValueError, match="dtype"):
        preprocess_input(np.zeros((2, 2, 3), dtype=bool))
