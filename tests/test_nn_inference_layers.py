"""The layers ONNX import needs: AveragePooling2D, Rescaling, Softmax, against plain references."""

import numpy as np
import pytest

from kernels import reference
from minicnn import nn

RNG = np.random.default_rng(0)


def test_average_pooling_matches_the_reference_and_never_fuses_as_a_max_pool():
    x = RNG.standard_normal((2, 7, 6, 3)).astype(np.float32)
    layer = nn.AveragePooling2D(3, strides=2, padding="same")
    pads = reference.same_padding(7, 3, 2) + reference.same_padding(6, 3, 2)
    expected = reference.avg_pool2d(x.astype(np.float64), (3, 3), (2, 2), pads)
    np.testing.assert_allclose(layer(x).numpy(), expected, rtol=1e-5, atol=1e-6)
    assert layer.output_shape == (None, 4, 3, 3)
    conv = nn.Conv2D(3, 3, activation="relu").build((None, 8, 8, 3))
    assert not conv.fuses_with(nn.AveragePooling2D(2).build((None, 8, 8, 3)))
    assert conv.fuses_with(nn.MaxPool2D(2).build((None, 8, 8, 3)))


def test_rescaling_is_x_times_scale_plus_offset_over_the_last_axis():
    x = RNG.standard_normal((2, 3, 4, 3)).astype(np.float32)
    scale, offset = np.float32([0.5, -1.0, 2.0]), np.float32([1.0, 0.0, -3.0])
    np.testing.assert_allclose(nn.Rescaling(scale, offset)(x).numpy(), x * scale + offset, rtol=1e-6)
    np.testing.assert_allclose(nn.Rescaling(1 / 127.5, -1.0)(x).numpy(), x / 127.5 - 1, rtol=1e-6)
    with pytest.raises(ValueError, match=r"Rescaling 'r': scale has 2 values but the input has 3 channels"):
        nn.Rescaling(np.ones(2), name="r").build((None, 3, 4, 3))
    with pytest.raises(ValueError, match=r"offset must be a number or a vector .* shape \(2, 2\)"):
        nn.Rescaling(1.0, np.ones((2, 2)))


def test_softmax_layer_gives_probabilities():
    z = RNG.standard_normal((4, 5)).astype(np.float32) * 10
    e = np.exp(z.astype(np.float64) - z.max(axis=1, keepdims=True))
    np.testing.assert_allclose(nn.Softmax()(z).numpy(), e / e.sum(axis=1, keepdims=True), rtol=1e-5, atol=1e-7)
