"""VGG16 (Simonyan & Zisserman, 2014) with the layer names of keras.applications.vgg16.

    block1_conv1 block1_conv2 block1_pool      64 filters      conv: 3x3, stride 1, "same", ReLU
    block2_conv1 block2_conv2 block2_pool     128              pool: 2x2 max, stride 2, "valid"
    block3_conv1 ... block3_conv3 block3_pool 256
    block4_conv1 ... block4_conv3 block4_pool 512
    block5_conv1 ... block5_conv3 block5_pool 512
    then one of the heads below (or none: the 7x7x512 feature map at 224x224)

Heads (``predictions`` always gives logits: softmax belongs to the loss,
``F.softmax_cross_entropy``; apply ``F.softmax`` yourself for probabilities -- Keras's
``predictions`` layer has the softmax built in, its weights are the same):

    include_top=True / head="keras": flatten, fc1 Dense 4096 ReLU, fc2 Dense 4096 ReLU, predictions
    head="thesis": flatten, fc1 Dense ReLU, dropout1, fc2 Dense ReLU, dropout2, predictions
        (the seed thesis replaces the top with "1 flatten layer, 2 dense layers, 2 dropout
        layers between the dense layers and one last dense layer" and gives no sizes;
        ours default to 256 units and rate 0.5, see ``head_units`` and ``dropout``)
    head="gap": avg_pool GlobalAveragePooling2D, fc1 Dense 256 ReLU, predictions
        (far fewer weights than a flatten head, and any input size works)
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

from minicnn import nn
from minicnn.model import Model
from minicnn.models.vgg16_layers import vgg16_layer_table

HEADS = (None, "keras", "thesis", "gap")
IMAGENET_FILES = {  # include_top -> (file name, md5 that Keras checks)
    False: ("vgg16_weights_tf_dim_ordering_tf_kernels_notop.h5", "6d6bbae143d832006294945121d1f1fc"),
    True: ("vgg16_weights_tf_dim_ordering_tf_kernels.h5", "64373286793e3c8b2b4e3219cbf3544b"),
}


class VGG(Model):
    """A Sequential that remembers how it was made (``get_config``), for checkpoints and the CLI.

    ``model.features(x, layers=["block3_conv3", "block5_pool"])`` returns those outputs
    from one forward pass; ``model.load_weights(path)`` loads a Keras file; ``compile`` / ``fit`` /
    ``evaluate`` / ``predict`` as on every ``minicnn.Model``.
    """

    def __init__(self, layers, config: dict, name: str = "vgg16"):
        super().__init__(layers, name=name)
        self.config = dict(config)
        self.weights_report = None  # the LoadReport of the weights given to vgg16(), if any

    def get_config(self) -> dict:
        return {"architecture": "vgg16", **self.config}


def _head_layers(head: str | None, classes: int, head_units, dropout: float) -> list:
    if head is None:
        return []
    if head == "keras":
        return [nn.Flatten(name="flatten"), nn.Dense(4096, "relu", name="fc1"),
                nn.Dense(4096, "relu", name="fc2"), nn.Dense(classes, name="predictions")]
    if head == "thesis":
        first, second = head_units or (256, 256)
        return [nn.Flatten(name="flatten"), nn.Dense(first, "relu", name="fc1"),
                nn.Dropout(dropout, name="dropout1"), nn.Dense(second, "relu", name="fc2"),
                nn.Dropout(dropout, name="dropout2"), nn.Dense(classes, name="predictions")]
    units = head_units[0] if head_units else 256
    return [nn.GlobalAveragePooling2D(name="avg_pool"), nn.Dense(units, "relu", name="fc1"),
            nn.Dense(classes, name="predictions")]


def vgg16(include_top: bool = False, input_shape: tuple[int, int, int] = (224, 224, 3), classes: int = 1000,
          head: str | None = None, weights: str | os.PathLike | None = None, *,
          head_units: tuple[int, ...] | None = None, dropout: float = 0.5, name: str = "vgg16") -> VGG:
    """Build VGG16 (built for ``input_shape``, NHWC) with Keras layer names.

    The output of ``predictions`` is logits (no softmax; the loss applies it). Inputs are
    expected as ``minicnn.preprocess_input`` makes them for the ImageNet weights (BGR, mean
    subtracted).

    include_top: add Keras's own top (same as head="keras"); head: None, "keras", "thesis"
    or "gap" (see the module docstring); classes: outputs of ``predictions``; head_units,
    dropout: sizes of the "thesis" / "gap" heads.
    weights: None (Glorot-uniform from minicnn.random), a path to a Keras HDF5 file (any
    layout), or "imagenet" (the keras.applications file, found by ``imagenet_weights_path``).
    With a "thesis"/"gap" head, a notop file fills the 13 convolutions and the head keeps
    its random weights; every convolution must load. The load report is ``model.weights_report``.
    """
    if head not in HEADS:
        raise ValueError(f"vgg16: head must be one of {HEADS}, got {head!r}")
    if include_top and head not in (None, "keras"):
        raise ValueError(f"vgg16: include_top=True is Keras's own head; it cannot be combined with head={head!r}")
    head = "keras" if include_top else head
    input_shape = tuple(int(d) for d in input_shape)
    if len(input_shape) != 3:
        raise ValueError(f"vgg16: input_shape must be (height, width, channels), got {input_shape}")
    if int(classes) < 1:
        raise ValueError(f"vgg16: classes must be at least 1, got {classes}")
    if head in ("thesis", "gap") and not 0 <= dropout < 1:
        raise ValueError(f"vgg16: dropout must be in [0, 1), got {dropout}")
    if weights == "imagenet" and head == "keras" and (input_shape != (224, 224, 3) or classes != 1000):
        raise ValueError("vgg16: the ImageNet top needs input_shape=(224, 224, 3) and classes=1000; "
                         f"got {input_shape} and {classes} (use include_top=False with a new head)")
    layers = []
    for info in vgg16_layer_table(False, input_shape):
        if info.kind == "conv":
            layers.append(nn.Conv2D(info.kernel_shape[-1], 3, padding="same", activation="relu", name=info.name))
        else:
            layers.append(nn.MaxPool2D(2, name=info.name))
    layers += _head_layers(head, int(classes), head_units, dropout)
    config = {"input_shape": list(input_shape), "classes": int(classes), "head": head,
              "head_units": list(head_units) if head_units else None, "dropout": dropout}
    model = VGG(layers, config, name=name)
    model.build((None,) + input_shape)
    if weights is not None:
        path = imagenet_weights_path(head == "keras") if weights == "imagenet" else weights
        model.weights_report = _load(model, path, head)
    return model


def vgg16_from_config(config: dict) -> VGG:
    """Rebuild the model ``VGG.get_config()`` describes (random weights)."""
    if config.get("architecture") != "vgg16":
        raise ValueError(f"vgg16_from_config: not a vgg16 config: {config!r}")
    return vgg16(input_shape=tuple(config["input_shape"]), classes=config["classes"], head=config["head"],
                 head_units=tuple(config["head_units"]) if config.get("head_units") else None,
                 dropout=config.get("dropout", 0.5))


def _load(model: VGG, path, head: str | None):
    from minicnn.io import WeightsError, load_keras_weights

    if head in (None, "keras"):
        return load_keras_weights(model, path, by_name=True, strict=True)
    report = load_keras_weights(model, path, by_name=True, strict=False)
    convs = [info.name for info in vgg16_layer_table(False, model.config["input_shape"]) if info.kind == "conv"]
    missing = [name for name in convs if name not in report.loaded]
    if missing:
        raise WeightsError(f"{path}: the convolutions {', '.join(missing)} did not load:\n{report}",
                           path=os.fspath(path), layer=missing[0])
    return report


# ---- finding the keras.applications file ------------------------------------------------

def weights_search_dirs() -> list[Path]:
    """Where "imagenet" weights are looked for: $MINICNN_WEIGHTS, $KERAS_HOME/models, ~/.keras/models."""
    dirs = []
    if os.environ.get("MINICNN_WEIGHTS"):
        dirs.append(Path(os.environ["MINICNN_WEIGHTS"]).expanduser())
    if os.environ.get("KERAS_HOME"):
        dirs.append(Path(os.environ["KERAS_HOME"]).expanduser() / "models")
    dirs.append(Path("~/.keras/models").expanduser())
    unique = []
    for d in dirs:
        if d not in unique:
            unique.append(d)
    return unique


def file_md5(path) -> str:
    digest = hashlib.md5()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def imagenet_weights_path(include_top: bool = False) -> Path:
    """The keras.applications VGG16 file in the first search directory that has it with the right md5.

    minicnn never downloads: if the file is absent, the WeightsError says which file to
    put where.
    """
    from minicnn.io import WeightsError

    filename, md5 = IMAGENET_FILES[bool(include_top)]
    dirs = weights_search_dirs()
    wrong = []
    for directory in dirs:
        candidate = directory / filename
        if candidate.is_file():
            found = file_md5(candidate)
            if found == md5:
                return candidate
            wrong.append(f"{candidate} has md5 {found}, expected {md5} (incomplete or a different file)")
    looked = "\n  ".join(str(d / filename) for d in dirs)
    message = (f"VGG16 ImageNet weights not found: put the Keras file {filename} (md5 {md5}) in one of these "
               f"directories (or point $MINICNN_WEIGHTS at its directory):\n  {looked}")
    if wrong:
        message += "\nfound, but refused:\n  " + "\n  ".join(wrong)
    raise WeightsError(message, path=str(dirs[0] / filename))
