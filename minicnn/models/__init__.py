"""Ready-made models. VGG16 with Keras layer names (weights load by name from Keras files)."""

from minicnn.models.vgg import (HEADS, IMAGENET_FILES, VGG, imagenet_weights_path, vgg16, vgg16_from_config,
                                weights_search_dirs)
from minicnn.models.vgg16_layers import NOTOP_PARAMS, WITH_TOP_PARAMS, vgg16_layer_table, vgg16_weight_shapes

__all__ = ["vgg16", "VGG", "vgg16_from_config", "HEADS", "IMAGENET_FILES", "imagenet_weights_path",
           "weights_search_dirs", "vgg16_layer_table", "vgg16_weight_shapes", "NOTOP_PARAMS", "WITH_TOP_PARAMS"]
