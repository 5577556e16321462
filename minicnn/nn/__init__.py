"""Layers and containers (Keras names and defaults)."""

from minicnn.nn.layers import (
                               AveragePooling2D,
                               Conv2D,
                               Dense,
                               Dropout,
                               Flatten,
                               GlobalAveragePooling2D,
                               MaxPool2D,
                               ReLU,
                               Rescaling,
                               Softmax,
                               glorot_uniform,
)
from minicnn.nn.module import Module, Parameter, Sequential, reset_names, unique_name

MaxPooling2D = MaxPool2D  # Keras' other name for it
AvgPool2D = AveragePooling2D

__all__ = [
                               "AveragePooling2D",
                               "AvgPool2D",
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
                               "Rescaling",
                               "Sequential",
                               "Softmax",
                               "glorot_uniform",
                               "reset_names",
                               "unique_name",
]
