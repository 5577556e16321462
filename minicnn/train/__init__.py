"""Training: fit(), callbacks, transfer presets, the frozen-prefix feature cache.

    from minicnn.train import fit, EarlyStopping, apply_preset
    plan = apply_preset(model, "last_block")
    history = fit(model, (x, y), (x_val, y_val), optimizer, epochs=30,
                  callbacks=[EarlyStopping("val_accuracy", patience=5)] + plan.callbacks())
"""

from minicnn.train.cache import FeatureCache, frozen_prefix
from minicnn.train.callbacks import (
    Callback,
    CSVLogger,
    EarlyStopping,
    ModelCheckpoint,
    NonFiniteLoss,
    ReduceLROnPlateau,
    TerminateOnNaN,
    UnfreezeAt,
)
from minicnn.train.explain import activations, gradcam
from minicnn.train.loop import History, evaluate, fit, predict
from minicnn.train.presets import PRESETS, apply_preset, conv_blocks, head_layers, param_groups
from minicnn.train.progress import ProgressBar
from minicnn.train.state import load_training_state, save_training_state

__all__ = [
    "PRESETS", "CSVLogger", "Callback", "EarlyStopping", "FeatureCache", "History", "ModelCheckpoint",
    "NonFiniteLoss", "ProgressBar", "ReduceLROnPlateau", "TerminateOnNaN", "UnfreezeAt", "activations", "apply_preset",
    "conv_blocks", "evaluate", "fit", "frozen_prefix", "gradcam", "head_layers", "load_training_state",
    "param_groups",
    "predict", "save_training_state",
]
