"""``preprocess_input``: the input scalings of the Keras ImageNet models, as float32.

Modes, for RGB input x with values 0..255 (channels last, NHWC or HWC):

- ``"caffe"`` (VGG16, ResNet50 in Keras): flip RGB -> BGR, then subtract the
  ImageNet mean pixel, in BGR order: y = x[..., ::-1] - [103.939, 116.779, 123.68].
- ``"tf"`` (Inception, MobileNet): y = x / 127.5 - 1, into [-1, 1].
- ``"torch"`` (DenseNet, torchvision): y = (x / 255 - mean) / std per RGB channel,
  mean = [0.485, 0.456, 0.406], std = [0.229, 0.224, 0.225].

The arithmetic follows Keras' NumPy implementation step for step, in the same
order and precision (integer input is converted to float32 first; each
constant is applied in the array's precision), so the results are bit-exact
with it; float64 input is computed in float64 and returned as float32.  The
input array is never modified (Keras works in place on float input).
"""

from __future__ import annotations

import numpy as np

MODES = ("caffe", "tf", "torch")
CAFFE_MEAN_BGR = (103.939, 116.779, 123.68)
TORCH_MEAN_RGB = (0.485, 0.456, 0.406)
TORCH_STD_RGB = (0.229, 0.224, 0.225)


def preprocess_input(x: np.ndarray, mode: str = "caffe") -> np.ndarray:
    """Scale images (uint8 or float, ..., H, W, 3, RGB) for an ImageNet network; returns a new float32 array."""
    if mode not in MODES:
        raise ValueError(f"mode must be one of {MODES}, got {mode!r}")
    x = np.asarray(x)
    if x.ndim not in (3, 4) or x.shape[-1] != 3:
        raise ValueError(f"preprocess_input expects RGB images of shape (H, W, 3) or (N, H, W, 3), got {x.shape}")
    if not (np.issubdtype(x.dtype, np.integer) or np.issubdtype(x.dtype, np.floating)):
        raise ValueError(f"preprocess_input expects integer or float pixels, got dtype {x.dtype}")
    # A private copy: float32 for integer input (as Keras' floatx), else the input precision.
    y = x.astype(np.float32 if np.issubdtype(x.dtype, np.integer) else x.dtype, copy=True)
    if mode == "tf":
        y /= 127.5
        y -= 1.0
        return y.astype(np.float32, copy=False)
    if mode == "torch":
        y /= 255.0
        mean, std = TORCH_MEAN_RGB, TORCH_STD_RGB
    else:
        y = y[..., ::-1]
        mean, std = CAFFE_MEAN_BGR, None
    for c in range(3):
        y[..., c] -= mean[c]
        if std is not None:
            y[..., c] /= std[c]
    return np.ascontiguousarray(y, dtype=np.float32)
