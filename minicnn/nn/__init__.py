"""Layers and containers (Keras names and defaults)."""

from minicnn.nn.config import architecture, layer_config, layers_from_architecture
from minicnn.nn.layers import (
                               Conv2D,
                               Dense,
                               Dropout,
                               Flatten,
                               GlobalAveragePooling2D,
                               MaxPool2D,
                               ReLU,
                               glorot_uniform,
)
from minicnn.nn.module import Module, Parameter, Sequential, reset_names, unique_name

MaxPooling2D = MaxPool2D  # Keras' other name for it

__all__ = [
                               "Conv2D",
                               "Dense",
                               "Dropout",
                               "Flatten",
                               "GlobalAveragePooling2D",
                               "MaxPool2D",
                               "MaxPooling2D",
                               "Module",
                               "Parameter",
                               "ReLU",
                               "Sequential",
                               "architecture",
                               "glorot_uniform",
                               "layer_config",
                               "layers_from_architecture",
                               "reset_names",
                               "unique_name",
]
