"""Ready-made models. VGG16 with Keras layer names (weights load by name from Keras files)."""

from minicnn.models.saved import load_model, model_from_config
from minicnn.models.synthetic_weights import vgg16_keras_layers, write_synthetic_vgg16
from minicnn.models.vgg import (
    HEADS,
    IMAGENET_FILES,
    VGG,
    imagenet_weights_path,
    vgg16,
    vgg16_from_config,
    weights_search_dirs,
)
from minicnn.models.vgg16_layers import (
    NOTOP_PARAMS,
    WITH_TOP_PARAMS,
    match_vgg16,
    vgg16_layer_table,
    vgg16_weight_shapes,
)

__all__ = ["HEADS", "IMAGENET_FILES", "NOTOP_PARAMS", "VGG", "WITH_TOP_PARAMS", "imagenet_weights_path",
           "load_model", "match_vgg16", "model_from_config", "vgg16", "vgg16_from_config", "vgg16_keras_layers", "vgg16_layer_table", "vgg16_weight_shapes",
           "weights_search_dirs", "write_synthetic_vgg16"]
