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
