"""Transfer-learning presets: which VGG blocks train and which stay frozen.

The thesis' configurations (Table 7.1) plus two from the lecture seeds:

================== ============================================================
preset             trainable layers (the dense head always trains)
================== ============================================================
random             all layers, starting from random weights (no weights loaded)
all                all layers, starting from pretrained weights
last_block         block 5 only (blocks 1-4 frozen)
first_block        block 1 only (blocks 2-5 frozen)
first_last_blocks  blocks 1 and 5
features           none of the conv blocks: feature extraction
two_phase          features for the first phase, then everything with a 10x
                   smaller learning rate (train the head before touching the base)
================== ============================================================

Blocks are found by name (``block3_conv1`` belongs to block 3, Keras' VGG
names); a model without such names is split into blocks at each max-pooling
layer. The head is everything after the last block.
"""

from __future__ import annotations

import fnmatch
import re
from dataclasses import dataclass

from minicnn.nn import MaxPool2D, Module

PRESETS = ("random", "all", "last_block", "first_block", "first_last_blocks", "features", "two_phase")
PRETRAINED = {"random": False}        # every other preset starts from pretrained weights

_BLOCK_NAME = re.compile(r"^block(\d+)_")


def conv_blocks(model: Module) -> list[list[str]]:
    """Layer names of each convolutional block, in order.

    By name (``block<k>_*``) when the model uses Keras' VGG names; otherwise
    every run of layers up to and including a max-pooling layer is one block.
    """
    layers = model.leaf_layers()
    named: dict[int, list[str]] = {}
    for layer in layers:
        m = _BLOCK_NAME.match(layer.name)
        if m:
            named.setdefault(int(m.group(1)), []).append(layer.name)
    if named:
        return [named[k] for k in sorted(named)]
    blocks, current = [], []
    for layer in layers:
        current.append(layer.name)
        if isinstance(layer, MaxPool2D):
            blocks.append(current)
            current = []
    return blocks


def head_layers(model: Module) -> list[str]:
    """Names of the layers after the last convolutional block."""
    in_blocks = {name for block in conv_blocks(model) for name in block}
    names = [layer.name for layer in model.leaf_layers()]
    last = max((i for i, n in enumerate(names) if n in in_blocks), default=-1)
    return names[last + 1:]


def trainable_blocks(preset: str, num_blocks: int) -> list[int]:
    """1-based numbers of the conv blocks that train under ``preset``."""
    if preset not in PRESETS:
        raise ValueError(f"unknown transfer preset {preset!r}: expected one of {', '.join(PRESETS)}")
    every = list(range(1, num_blocks + 1))
    return {"random": every, "all": every, "last_block": every[-1:], "first_block": every[:1],
            "first_last_blocks": sorted(set(every[:1] + every[-1:])), "features": [],
            "two_phase": []}[preset]


@dataclass
class PresetPlan:
    """What :func:`apply_preset` did, and what fit() still has to do."""

    preset: str
    pretrained: bool                       # should the caller load pretrained weights first?
    trainable_blocks: list[int]
    frozen_layers: list[str]
    unfreeze_at_epoch: int | None = None   # two_phase: epoch (0-based) where phase 2 starts
    phase2_lr_factor: float = 0.1

    def callbacks(self) -> list:
        """The callbacks this preset needs in fit() (two_phase: UnfreezeAt)."""
        if self.unfreeze_at_epoch is None:
            return []
        from minicnn.train.callbacks import UnfreezeAt
        return [UnfreezeAt(self.unfreeze_at_epoch, ("*",), self.phase2_lr_factor)]


def apply_preset(model: Module, preset: str, phase1_epochs: int = 5, lr_factor: float = 0.1) -> PresetPlan:
    """Freeze/unfreeze ``model``'s layers for ``preset`` (the model must be built).

    Every layer is first made trainable, then the conv blocks not listed for
    the preset are frozen. For ``two_phase`` the returned plan carries the
    epoch at which fit() must unfreeze everything (``plan.callbacks()``).
    """
    if not model.built:
        raise ValueError("apply_preset: build the model first (call it once or model.build(input_shape))")
    blocks = conv_blocks(model)
    if not blocks:
        raise ValueError(f"apply_preset: model {model.name!r} has no convolutional blocks "
                         "(no block<k>_* layer names and no max-pooling layers)")
    keep = trainable_blocks(preset, len(blocks))
    model.unfreeze()
    frozen = [name for k, block in enumerate(blocks, start=1) if k not in keep for name in block]
    for name in frozen:
        model.freeze(name)
    plan = PresetPlan(preset, PRETRAINED.get(preset, True), keep, frozen)
    if preset == "two_phase":
        plan.unfreeze_at_epoch, plan.phase2_lr_factor = phase1_epochs, lr_factor
    return plan


def param_groups(model: Module, lr: float, multipliers: dict[str, float] | None = None) -> list[dict]:
    """Optimizer parameter groups with per-layer learning rates.

    ``multipliers`` maps layer-name globs to a factor of ``lr``; the first
    matching glob wins, unmatched layers get ``lr``. E.g.
    ``param_groups(model, 1e-3, {"block*": 0.1})`` trains the base 10x slower
    than the head. Each group is {"params": [(name, Parameter), ...], "lr": ...}.
    """
    multipliers = dict(multipliers or {})
    groups: dict[float, list] = {}
    for name, p in model.named_parameters():
        layer = name.rsplit(".", 1)[0]
        factor = next((f for pattern, f in multipliers.items() if fnmatch.fnmatchcase(layer, pattern)), 1.0)
        groups.setdefault(factor, []).append((name, p))
    return [{"params": params, "lr": lr * factor} for factor, params in groups.items()]
