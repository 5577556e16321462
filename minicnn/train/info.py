"""What a checkpoint says about itself (its ``info``), so it can be used later with no flags.

    {"class_names": ["akiec", ..., "vasc"],   output k of the model is class_names[k]
     "image_size": 224, "preprocess": "caffe", "model": "vgg16",
     "dataset": "ham10000", "data": "/data/ham10000",        the layout and the folder read
     "test_fingerprint": "9f2c...", "split_file": "/runs/ham/split.csv", ...}

Written by ``minicnn train``, the examples, the thesis runner and ``ModelCheckpoint(info=)``;
``minicnn evaluate`` / ``predict`` take their defaults from it and refuse a flag that
contradicts it.
"""

from __future__ import annotations

import hashlib
import os


def split_fingerprint(subset) -> str:
    """sha256 of the sorted sample ids of ``subset``: equal only for the same images, in any order."""
    return hashlib.sha256("\n".join(sorted(subset.sources())).encode()).hexdigest()


def run_info(dataset: str, data_root: str, class_names, image_size: int, preprocess: str, model: str,
             test=None, **extra) -> dict:
    """What a checkpoint must carry to be used later with no flags (stored as its ``info``).

    dataset: the layout (``DATASETS``); data_root: the folder read; model: "vgg16" or
    "tiny" (rebuild_model uses it, and the vgg16 config saved beside the weights);
    test: the test subset, whose fingerprint lets ``evaluate`` refuse another split.
    """
    info = {"class_names": [str(c) for c in class_names], "image_size": int(image_size),
            "preprocess": preprocess, "model": model, "dataset": dataset.removeprefix("synthetic-"),
            "data": os.path.abspath(data_root)}
    if test is not None:
        info["test_fingerprint"] = split_fingerprint(test)
    info.update(extra)
    return info


LAYOUTS = {"HAM10000": "ham10000", "ChestXRay": "xray", "ImageFolder": "folder"}  # data set class -> layout


def data_info(source) -> dict:
    """What fit() tells by itself about its training data (a minicnn.train.sources Source):
    the class names, the pixel scaling and the data set's layout and folder. A producer's
    ``checkpoint_info`` has the last word; arrays tell nothing but what they were given."""
    from minicnn.data.base import base_of
    from minicnn.train.sources import scale_to_unit_range

    info: dict = {}
    if source.class_names:
        info["class_names"] = [str(c) for c in source.class_names]
    loader = getattr(source, "loader", None)
    dataset = getattr(loader, "dataset", None) if loader is not None else getattr(source, "dataset", None)
    if dataset is None:
        return info
    if getattr(loader, "preprocess_mode", None):
        info["preprocess"] = loader.preprocess_mode
    elif getattr(loader, "preprocess", None) is None and getattr(source, "transform", None) is scale_to_unit_range:
        info["preprocess"] = "tf"                  # fit's default for uint8 pixels: [-1, 1]
    base = base_of(dataset)[0]
    layout, root = LAYOUTS.get(type(base).__name__), getattr(base, "root", None)
    if layout and root:
        info.update(dataset=layout, data=os.path.abspath(root))
    return info
