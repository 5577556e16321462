"""VGG16 as a table: layer names, kinds and weight shapes, exactly as keras.applications.vgg16.

Pure data (no minicnn.nn import), shared by the model builder, the synthetic weight
files and ``minicnn info``. Shapes follow Keras: NHWC activations, HWIO conv kernels,
(in, out) dense kernels; 3x3 "same" convolutions with ReLU, 2x2/2 "valid" max pools.
"""

from __future__ import annotations

from dataclasses import dataclass

VGG16_BLOCKS = ((64, 2), (128, 2), (256, 3), (512, 3), (512, 3))  # (filters, convolutions) per block
NOTOP_PARAMS = 14_714_688
WITH_TOP_PARAMS = 138_357_544  # at 224x224x3 with 1000 classes


@dataclass(frozen=True)
class LayerInfo:
    name: str
    kind: str  # "conv", "pool", "flatten", "dense"
    output_shape: tuple[int, ...]  # per sample, NHWC without N
    kernel_shape: tuple[int, ...] | None = None
    activation: str | None = None

    @property
    def bias_shape(self) -> tuple[int, ...] | None:
        return None if self.kernel_shape is None else (self.kernel_shape[-1],)

    @property
    def params(self) -> int:
        if self.kernel_shape is None:
            return 0
        count = 1
        for dim in self.kernel_shape:
            count *= dim
        return count + self.kernel_shape[-1]


def vgg16_layer_table(include_top: bool = False, input_shape: tuple[int, int, int] = (224, 224, 3),
                      classes: int = 1000) -> list[LayerInfo]:
    """The Keras VGG16 layers for this input shape: 13 convs and 5 pools, plus the top if asked."""
    height, width, channels = input_shape
    if height < 32 or width < 32:
        raise ValueError(f"VGG16 needs an input of at least 32x32 (five 2x2 poolings); got {input_shape}")
    table: list[LayerInfo] = []
    for block, (filters, convs) in enumerate(VGG16_BLOCKS, start=1):
        for k in range(1, convs + 1):
            table.append(LayerInfo(f"block{block}_conv{k}", "conv", (height, width, filters),
                                   (3, 3, channels, filters), "relu"))
            channels = filters
        height, width = height // 2, width // 2
        table.append(LayerInfo(f"block{block}_pool", "pool", (height, width, channels)))
    if include_top:
        flat = height * width * channels
        table += [LayerInfo("flatten", "flatten", (flat,)),
                  LayerInfo("fc1", "dense", (4096,), (flat, 4096), "relu"),
                  LayerInfo("fc2", "dense", (4096,), (4096, 4096), "relu"),
                  LayerInfo("predictions", "dense", (classes,), (4096, classes), None)]
    return table


def vgg16_weight_shapes(include_top: bool = False, input_shape=(224, 224, 3),
                        classes: int = 1000) -> dict[str, list[tuple[int, ...]]]:
    """{layer name: [kernel shape, bias shape]} for the weighted layers, in order."""
    return {info.name: [info.kernel_shape, info.bias_shape]
            for info in vgg16_layer_table(include_top, input_shape, classes) if info.kernel_shape}


def match_vgg16(shapes: dict[str, list[tuple[int, ...]]]) -> tuple[str | None, list[str]]:
    """Does a file with these {layer name: [kernel shape, bias shape]} fit VGG16?

    Returns (a description of the vgg16 call it fits, or None; a list of problems /
    notes). The convolutions fit at any input size; a Keras top fixes the input size
    through fc1 (its rows are H/32 * W/32 * 512; a square input is assumed).
    """
    problems = []
    for name, expected in vgg16_weight_shapes(False).items():
        found = shapes.get(name)
        if found is None:
            problems.append(f"{name}: missing")
        elif [tuple(s) for s in found] != expected:
            problems.append(f"{name}: expected {expected}, found {[tuple(s) for s in found]}")
    if problems:
        return None, problems
    others = [name for name in shapes if not name.startswith("block")]
    if not others:
        return "vgg16(include_top=False)", []
    top = ("fc1", "fc2", "predictions")
    if set(others) == set(top):
        fc1, fc2, pred = (shapes[n] for n in top)
        rows = fc1[0][0] if len(fc1[0]) == 2 else 0
        side = round((rows / 512) ** 0.5) * 32 if rows % 512 == 0 else 0
        classes = pred[0][-1] if len(pred[0]) == 2 else 0
        if side and ([tuple(s) for s in fc1], [tuple(s) for s in fc2], [tuple(s) for s in pred]) == (
                [(rows, 4096), (4096,)], [(4096, 4096), (4096,)], [(4096, classes), (classes,)]) \
                and (side // 32) ** 2 * 512 == rows:
            return f"vgg16(include_top=True, input_shape=({side}, {side}, 3), classes={classes})", []
        return "vgg16(include_top=False) (the fc1/fc2/predictions shapes are not Keras's top)", \
            [f"{n}: {[tuple(s) for s in shapes[n]]}" for n in top]
    return "vgg16(include_top=False) plus other layers (a new head)", \
        [f"{n}: {[tuple(s) for s in shapes[n]]}" for n in others]
