"""Weights in and out: Keras HDF5 files (all five layouts) and training checkpoints.

    read_keras_weights(path) -> KerasWeightsFile      the arrays, whatever the layout
    load_keras_weights(model, path, by_name=True, strict=True) -> LoadReport
    save_keras_weights(model, path)                   Keras 2 layout, readable by Keras
    save_checkpoint(path, model, optimizer=None, **state)
    load_checkpoint(path, model=None, optimizer=None, restore_rng=False) -> state dict
    export_onnx(model, path) / import_onnx(path) -> Sequential   ONNX files (opset 17 out)

Every problem with a file raises WeightsError (a ValueError) naming the file, the
layer and the expected and found shapes. (Random VGG16 stand-ins in every layout:
``minicnn.models.write_synthetic_vgg16``; io sits below models and never imports it.)
"""

from minicnn.io.checkpoint import load_checkpoint, read_checkpoint_weights, save_checkpoint
from minicnn.io.errors import WeightsError
from minicnn.io.keras_h5 import FORMAT_NAMES, KerasWeightsFile, LayerWeights, read_keras_weights
from minicnn.io.load import LoadReport, load_keras_weights
from minicnn.io.onnx_export import OnnxError, export_onnx
from minicnn.io.onnx_import import import_onnx
from minicnn.io.save import save_keras_weights

__all__ = ["FORMAT_NAMES", "KerasWeightsFile", "LayerWeights", "LoadReport", "WeightsError", "load_checkpoint",
           "load_keras_weights", "read_checkpoint_weights", "read_keras_weights", "save_checkpoint",
           "save_keras_weights"]
__all__ += ["OnnxError", "export_onnx", "import_onnx"]  # ONNX (the onnx extra; imported on first use)
