"""Model builders for the thesis experiments: VGG16 (the thesis' model) and a tiny
stand-in with the same block structure and layer names, for quick runs and tests.
"""

from __future__ import annotations

from minicnn import nn
from minicnn.model import Model

THESIS_HEAD_UNITS = (256, 256)


def tiny_vgg(input_shape=(32, 32, 3), classes: int = 7, filters=(8, 16, 16, 32, 32), head_units: int = 32,
             dropout: float = 0.25, name: str = "tiny_vgg") -> Model:
    """Five blocks ``block<k>_conv1`` + ``block<k>_pool`` and the thesis' head
    (flatten, fc1, dropout1, fc2, dropout2, predictions), built for ``input_shape``.

    Same names as VGG16's first conv of each block, so the transfer presets,
    Grad-CAM and the HAM10000 -> X-ray weight transfer work on it unchanged.
    """
    if min(input_shape[:2]) < 2 ** len(filters):
        raise ValueError(f"tiny_vgg needs an input of at least {2 ** len(filters)}x{2 ** len(filters)} "
                         f"({len(filters)} 2x2 poolings); got {tuple(input_shape)}")
    layers = []
    for block, f in enumerate(filters, start=1):
        layers += [nn.Conv2D(f, 3, padding="same", activation="relu", name=f"block{block}_conv1"),
                   nn.MaxPool2D(2, name=f"block{block}_pool")]
    layers += [nn.Flatten(name="flatten"), nn.Dense(head_units, "relu", name="fc1"),
               nn.Dropout(dropout, name="dropout1"), nn.Dense(head_units, "relu", name="fc2"),
               nn.Dropout(dropout, name="dropout2"), nn.Dense(classes, name="predictions")]
    model = Model(layers, name=name)
    model.build((None,) + tuple(input_shape))
    return model


def build_model(kind: str, image_size: int, classes: int, weights: str | None = None):
    """``kind`` "vgg16" (thesis head, optional Keras weights file) or "tiny" (random weights only)."""
    if kind == "tiny":
        if weights is not None:
            raise ValueError("the tiny model has no pretrained weights; use --model vgg16 with --weights")
        return tiny_vgg((image_size, image_size, 3), classes)
    if kind == "vgg16":
        from minicnn.models import vgg16
        return vgg16(input_shape=(image_size, image_size, 3), classes=classes, head="thesis",
                     head_units=THESIS_HEAD_UNITS, weights=weights)
    raise ValueError(f"unknown model {kind!r}: expected 'vgg16' or 'tiny'")


def last_conv_layer(model) -> str:
    """The layer Grad-CAM explains: block5_conv3 in VGG16, else the last convolution."""
    convs = [layer.name for layer in model.leaf_layers() if isinstance(layer, nn.Conv2D)]
    if not convs:
        raise ValueError(f"model {model.name!r} has no convolution")
    return "block5_conv3" if "block5_conv3" in convs else convs[-1]


def load_conv_weights(model, checkpoint_path: str) -> list[str]:
    """Copy the conv-block weights (``block*``) of a minicnn checkpoint into ``model``.

    Used to start the X-ray model from the HAM10000-trained one: the heads differ
    (7 vs 2 classes), the convolutions match by name and shape.
    """
    from minicnn.io import read_checkpoint_weights

    arrays = read_checkpoint_weights(checkpoint_path)[0]
    own = dict(model.named_parameters())
    chosen = {k: v for k, v in arrays.items() if k.startswith("block") and k in own}
    missing = [k for k in own if k.startswith("block") and k not in chosen]
    if missing:
        raise ValueError(f"{checkpoint_path} lacks conv weights {missing[:3]}... needed by this model "
                         "(was it trained with the same --model?)")
    model.load_state_dict(chosen, strict=False)
    return sorted(chosen)
