"""The ``minicnn`` command (also ``python -m minicnn``): argparse subcommands.

Each subcommand is a (help, add_arguments(parser), run(args) -> exit code) triple in
``COMMANDS``. Other parts of minicnn add theirs without touching this file: a module
named in ``COMMAND_MODULES`` that defines ``COMMANDS`` in the same form is merged in
(a module that does not exist yet is skipped).

    minicnn info FILE.h5          format, layers, shapes, parameter counts, fit to VGG16
    minicnn summary [FILE]        a VGG16's layer table, or a checkpoint's model's
"""

from __future__ import annotations

import argparse
import importlib
import sys

from minicnn.io.errors import WeightsError

COMMAND_MODULES = ("minicnn.commands", "minicnn.experiments.cli", "minicnn.onnx_command")


# ---- info -------------------------------------------------------------------------------

def _info_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("file", help="a Keras HDF5 weights/model file (any layout) or a minicnn checkpoint")


def _info_run(args: argparse.Namespace) -> int:
    from minicnn.io.checkpoint import FORMAT
    from minicnn.io.keras_h5 import open_h5

    with open_h5(args.file) as f:
        is_checkpoint = f.attrs.get("format") == FORMAT
    print(_checkpoint_info(args.file) if is_checkpoint else _keras_info(args.file))
    return 0


def _table(rows: list[tuple], header: tuple) -> list[str]:
    rows = [header] + [tuple(str(c) for c in row) for row in rows]
    widths = [max(len(row[i]) for row in rows) for i in range(len(header))]
    lines = ["  ".join(c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in enumerate(zip(row, widths)))
             for row in rows]
    return lines[:1] + ["-" * len(lines[0])] + lines[1:]


def _keras_info(path: str) -> str:
    from minicnn.io.keras_h5 import read_keras_weights
    from minicnn.models.vgg16_layers import match_vgg16

    weights = read_keras_weights(path)
    lines = [f"{path}", f"format {weights.format}: {weights.description}"]
    if weights.keras_version or weights.backend:
        lines.append(f"keras_version {weights.keras_version}, backend {weights.backend}")
    rows = [(layer.label + (f"  ({layer.hdf5_path.removesuffix('/vars').lstrip('/')})" if weights.format == "E"
                            else ""), "  ".join(str(tuple(a.shape)) for a in layer.arrays),
             ", ".join(sorted({str(a.dtype) for a in layer.arrays})), f"{sum(a.size for a in layer.arrays):,}")
            for layer in weights.layers]
    lines += _table(rows, ("layer", "weights", "dtype", "params"))
    lines.append(f"{len(weights.layers)} weighted layers, {weights.parameter_count():,} parameters")
    if any(layer.name is None for layer in weights.layers):
        lines.append("no layer names in this file (Keras 3 without @name): layers are matched by class order")
        return "\n".join(lines)
    fits, notes = match_vgg16({layer.name: [a.shape for a in layer.arrays] for layer in weights.layers})
    lines.append(f"fits {fits}" if fits else "does not fit vgg16:")
    lines += [f"  {note}" for note in notes]
    return "\n".join(lines)


def _checkpoint_info(path: str) -> str:
    import h5py

    from minicnn.io.checkpoint import decode_tree, read_checkpoint_weights

    arrays, trainable, config = read_checkpoint_weights(path)
    with h5py.File(path, "r") as f:
        state = decode_tree(f["state"])
        optimizer = f["optimizer"].attrs.get("class") if "optimizer" in f else None
    described = config
    if config and config.get("architecture") == "sequential":     # every layer's arguments: too long to print
        described = (f"sequential {config.get('name')!r}, input {config.get('input_shape')}, "
                     f"{len(config['layers'])} layers: {' '.join(e['class_name'] for e in config['layers'])}")
    lines = [f"{path}", "minicnn checkpoint", f"model config: {described}"]
    rows = [(name, tuple(a.shape), a.dtype, "yes" if trainable[name] else "frozen", f"{a.size:,}")
            for name, a in arrays.items()]
    lines += _table(rows, ("parameter", "shape", "dtype", "trainable", "size"))
    total = sum(a.size for a in arrays.values())
    frozen = sum(a.size for n, a in arrays.items() if not trainable[n])
    lines.append(f"{total:,} parameters ({frozen:,} frozen); optimizer: {optimizer}")
    for key, value in (state.get("info") or {}).items():      # what evaluate / predict take from it
        lines.append(f"info {key}: {value}")
    for key, value in state.items():
        if key not in ("rng_state", "info"):
            text = repr(value)
            lines.append(f"{key}: {text if len(text) < 200 else text[:200] + ' ...'}")
    return "\n".join(lines)


# ---- summary ----------------------------------------------------------------------------

def _summary_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("file", nargs="?", help="a minicnn checkpoint (default: a fresh vgg16)")
    parser.add_argument("--include-top", action="store_true", help="Keras's fc1/fc2/predictions top")
    parser.add_argument("--head", choices=["keras", "thesis", "gap"], help="classifier head")
    parser.add_argument("--input-shape", type=int, nargs=3, default=(224, 224, 3), metavar=("H", "W", "C"),
                        help="input height, width, channels")
    parser.add_argument("--classes", type=int, default=1000, help="output classes of the head")


def _summary_run(args: argparse.Namespace) -> int:
    from minicnn.models import load_model, vgg16

    if args.file:
        try:
            model = load_model(args.file, compile=False)
        except ValueError as err:                    # a checkpoint that does not describe its model
            raise WeightsError(str(err), path=args.file) from None
    else:
        model = vgg16(include_top=args.include_top, head=args.head, input_shape=tuple(args.input_shape),
                      classes=args.classes)
    model.summary()
    return 0


COMMANDS: dict = {
    "info": ("show a weights file or checkpoint: format, layers, shapes, parameters, fit to VGG16",
             _info_arguments, _info_run),
    "summary": ("print a VGG16's (or a vgg16 checkpoint's) layer table", _summary_arguments, _summary_run),
}


def all_commands() -> dict:
    """COMMANDS plus those of the modules in COMMAND_MODULES that exist."""
    commands = dict(COMMANDS)
    for module_name in COMMAND_MODULES:
        try:
            module = importlib.import_module(module_name)
        except ModuleNotFoundError as err:
            if err.name == module_name:
                continue
            raise
        commands.update(getattr(module, "COMMANDS", {}))
    return commands


def build_parser() -> argparse.ArgumentParser:
    from minicnn.helpformat import DefaultsFormatter
    parser = argparse.ArgumentParser(prog="minicnn", description="minicnn: a small, readable CNN framework")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name, (help_text, add_arguments, run) in all_commands().items():
        command_parser = sub.add_parser(name, help=help_text, description=help_text,
                                        formatter_class=DefaultsFormatter)
        add_arguments(command_parser)
        command_parser.set_defaults(run=run)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``minicnn`` console script; returns the exit status."""
    parser = build_parser()
    args = parser.parse_args(argv)
    if getattr(args, "run", None) is None:
        parser.print_help()
        return 2
    try:
        return int(args.run(args) or 0)
    except (WeightsError, FileNotFoundError) as err:
        print(f"minicnn {args.command}: error: {err}", file=sys.stderr)
        return 2
