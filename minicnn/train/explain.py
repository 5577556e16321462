"""Looking inside a trained model: layer activations and Grad-CAM.

Grad-CAM (Selvaraju et al., 2017) for class c at a conv layer with output
A (H x W x K):

    alpha_k = mean over (i, j) of  d score_c / d A[i, j, k]      (one weight per channel)
    cam     = ReLU( sum_k alpha_k A[:, :, k] )                   (H x W, then scaled to [0, 1])

where score_c is the logit of class c. Positions that raise the class score
light up; for VGG16 the usual layer is block5_conv3 (14 x 14 at 224 px).
"""

from __future__ import annotations

import numpy as np

from minicnn.backends import get_backend
from minicnn.tensor import Tensor, no_grad


def _batch(image: np.ndarray, dtype) -> np.ndarray:
    x = np.asarray(image, dtype)
    return x[None] if x.ndim == 3 else x


def _leaves_split(model, layer: str):
    leaves = model.leaf_layers()
    names = [leaf.name for leaf in leaves]
    if layer not in names:
        raise KeyError(f"no layer named {layer!r} in {model.name!r}; layers are: {', '.join(names)}")
    k = names.index(layer) + 1
    return leaves[:k], leaves[k:]


def activations(model, image: np.ndarray, layer: str) -> np.ndarray:
    """Output of ``layer`` for one preprocessed image (H, W, C) -> (h, w, channels), eval mode."""
    params = model.parameters()
    dtype = params[0].dtype if params else np.float32
    head, _ = _leaves_split(model, layer)
    was_training = model.training
    model.eval()
    try:
        with no_grad():
            h = Tensor(_batch(image, dtype), device=params[0].device if params else "cpu")
            for leaf in head:
                h = leaf(h)
    finally:
        model.train(was_training)
    return h.numpy()[0]


def gradcam(model, image: np.ndarray, layer: str = "block5_conv3",
            class_index: int | None = None) -> tuple[np.ndarray, int, np.ndarray]:
    """Grad-CAM heatmap of ``layer`` for one preprocessed image.

    Returns (heatmap (h, w) in [0, 1], the class explained (default: the
    predicted one), class probabilities).
    """
    params = model.parameters()
    dtype = params[0].dtype if params else np.float32
    device = params[0].device if params else "cpu"
    head, tail = _leaves_split(model, layer)
    if not tail:
        raise ValueError(f"Grad-CAM needs layers after {layer!r} to reach the class scores")
    was_training = model.training
    model.eval()
    try:
        with no_grad():
            a = Tensor(_batch(image, dtype), device=device)
            for leaf in head:
                a = leaf(a)
        a = Tensor(a.numpy(), requires_grad=True, device=device)
        logits = a
        for leaf in tail:
            logits = leaf(logits)
        z = logits.numpy()[0].astype(np.float64)
        probs = np.exp(z - z.max())
        probs /= probs.sum()
        c = int(np.argmax(z)) if class_index is None else int(class_index)
        if not 0 <= c < z.size:
            raise ValueError(f"class_index {c} out of range: the model has {z.size} classes")
        onehot = np.zeros((1, z.size), dtype)
        onehot[0, c] = 1
        (logits * Tensor(onehot, device=device)).sum().backward()
        grad = get_backend(device).to_numpy(a.grad)
    finally:
        model.train(was_training)
        for p in params:              # the backward pass also reached the weights: leave no trace
            p.grad = None
    amap = a.numpy()[0].astype(np.float64)
    alpha = grad[0].astype(np.float64).mean(axis=(0, 1))
    cam = np.maximum((amap * alpha).sum(axis=2), 0.0)
    top = cam.max()
    return (cam / top if top > 0 else cam), c, probs


def report_figures(model, history, result, test, class_names, fig_dir: str, n_images: int = 3,
                   layer: str = "block5_conv3", preprocess: str = "caffe") -> list:
    """The figures a fine-tuning run writes: loss and accuracy per epoch (training and
    validation), the test confusion matrix (counts, and row-normalised), and Grad-CAM on
    ``layer`` for the first test images, titled with the predicted class, its
    probability and the true class.

    ``history``: History or its dict; ``result``: what ``evaluate`` returns (``y_true``,
    ``y_pred``); ``test``: the dataset the images come from, scaled with ``preprocess``
    as in training. Returns the paths written.
    """
    import os

    from minicnn import figures
    from minicnn import metrics as M
    from minicnn.data import DataLoader

    history = getattr(history, "history", history)
    matrix = M.confusion_matrix(result["y_true"], result["y_pred"], len(class_names))
    written = [figures.loss_and_accuracy(history, os.path.join(fig_dir, "curves.png")),
               figures.confusion_matrix(matrix, class_names, os.path.join(fig_dir, "confusion.png")),
               figures.confusion_matrix(matrix, class_names, os.path.join(fig_dir, "confusion_normalised.png"),
                                        normalize=True)]
    raw, labels = next(iter(DataLoader(test, batch_size=n_images, progress=False, workers=0)))
    scaled, _ = next(iter(DataLoader(test, batch_size=n_images, preprocess=preprocess, progress=False, workers=0)))
    for k in range(len(raw)):
        cam, c, probs = gradcam(model, scaled[k], layer)
        title = figures.gradcam_title(layer, class_names[c], float(probs[c]), class_names[int(labels[k])])
        written.append(figures.gradcam_overlay(raw[k], cam, os.path.join(fig_dir, f"gradcam_{k}.png"), title))
    return written
