"""model.summary(): what each layer costs, for one sample.

FLOPs count a multiply-add as 2. "Bytes" is what a layer must at least read
and write: its input, its weights and its output (at the weights' dtype
size). Their ratio, FLOPs per byte, is the arithmetic intensity: a layer far
below the machine's FLOPs/bandwidth ratio (about 10-20 on a CPU) is limited by
memory, not arithmetic -- why conv1_1 (3 input channels) and the 4x4 layers
of a VGG are slow for their FLOPs.
"""

from __future__ import annotations

import numpy as np


def _count(shape) -> int:
    return int(np.prod([d for d in shape[1:] if d is not None]))


def _human(n: float) -> str:
    for unit in ("", "K", "M", "G", "T"):
        if abs(n) < 1000:
            return f"{n:.0f}{unit}" if unit == "" else f"{n:.1f}{unit}"
        n /= 1000
    return f"{n:.1f}P"


def summary(model, input_shape=None, print_fn=print) -> str:
    if input_shape is not None:
        model.build(tuple(input_shape))
    if not model.built:
        raise ValueError(f"summary(): {model.name!r} is not built; call model.build((None, H, W, C)) "
                         "or pass input_shape")
    itemsize = 4
    rows = []
    totals = {"trainable": 0, "frozen": 0, "flops": 0, "bytes": 0}
    for layer in model.leaf_layers():
        trainable = sum(p.size for _, p in layer.own_parameters() if p.trainable)
        frozen = sum(p.size for _, p in layer.own_parameters() if not p.trainable)
        for _, p in layer.own_parameters():
            itemsize = p.data.itemsize
        flops = layer.flops()
        moved = (_count(layer.input_shape) + trainable + frozen + _count(layer.output_shape)) * itemsize
        rows.append((layer.name, type(layer).__name__, str(layer.output_shape), trainable, frozen, flops,
                     _count(layer.output_shape) * itemsize, moved, flops / moved if moved else 0.0))
        totals["trainable"] += trainable
        totals["frozen"] += frozen
        totals["flops"] += flops
        totals["bytes"] += moved
    header = ("layer", "type", "output shape", "trainable", "frozen", "FLOPs", "act. mem", "bytes",
              "FLOP/B")
    table = [header] + [(r[0], r[1], r[2], f"{r[3]:,}", f"{r[4]:,}", _human(r[5]), _human(r[6]) + "B",
                         _human(r[7]) + "B", f"{r[8]:.1f}") for r in rows]
    widths = [max(len(row[i]) for row in table) for i in range(len(header))]
    lines = [f'Model "{model.name}", input {model.input_shape}, per sample']
    for k, row in enumerate(table):
        lines.append("  ".join(cell.ljust(w) if i < 3 else cell.rjust(w) for i, (cell, w) in
                               enumerate(zip(row, widths))))
        if k == 0:
            lines.append("-" * len(lines[-1]))
    lines.append("-" * len(lines[1]))
    total = totals["trainable"] + totals["frozen"]
    lines.append(f"params: {total:,} (trainable {totals['trainable']:,}, frozen {totals['frozen']:,}); "
                 f"FLOPs {_human(totals['flops'])}; bytes moved {_human(totals['bytes'])}B")
    text = "\n".join(lines)
    if print_fn is not None:
        print_fn(text)
    return text
