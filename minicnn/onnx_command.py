"""The ``minicnn export-onnx`` / ``import-onnx`` subcommands.

    minicnn export-onnx runs/ham/best.h5 ham.onnx [--softmax]   a trained checkpoint as ONNX
    minicnn import-onnx model.onnx [weights.h5]                 what minicnn makes of an ONNX file

The model is rebuilt from the checkpoint (its vgg16 config or its ``info``) at the
input size it was trained for; the ONNX graph takes NHWC float32 images after the
checkpoint's preprocessing (``info["preprocess"]``, "tf" by default).
"""

from __future__ import annotations

import argparse
import os
import sys


def export_onnx_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("checkpoint", help="a checkpoint written by `minicnn train` (or minicnn.io.save_checkpoint)")
    p.add_argument("out", metavar="OUT.onnx", help="the ONNX file to write")
    p.add_argument("--softmax", action="store_true", help="end the graph with a Softmax (probabilities, "
                                                           "not logits)")


def export_onnx_run(args: argparse.Namespace) -> int:
    from minicnn.commands import rebuild_model
    from minicnn.io.onnx_export import OPSET, export_onnx

    if not os.path.exists(args.checkpoint):
        print(f"minicnn export-onnx: error: checkpoint not found: {args.checkpoint}", file=sys.stderr)
        return 2
    try:
        model, info = rebuild_model(args.checkpoint)
        model.eval()
        export_onnx(model, args.out, model.input_shape, softmax=args.softmax)
    except (ValueError, KeyError) as err:   # OnnxError and WeightsError are ValueErrors
        print(f"minicnn export-onnx: error: {err}", file=sys.stderr)
        return 2
    _, h, w, c = model.input_shape
    print(f"wrote {args.out}: opset {OPSET}, input 'input' (N, {h}, {w}, {c}) float32 NHWC, preprocessed "
          f"with {info.get('preprocess', 'tf')!r}; output 'output' {'probabilities' if args.softmax else 'logits'}")
    return 0


def import_onnx_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("onnx", metavar="IN.onnx", help="an ONNX file (ours, torch.onnx's, tf2onnx's)")
    p.add_argument("out", metavar="OUT.h5", nargs="?", help="write the weights here, in the Keras 2 layout "
                                                            "(model.load_weights / minicnn info read it)")
    p.add_argument("--input-layout", choices=("NCHW", "NHWC"), help="the ONNX input's layout, if the graph "
                                                                     "does not show it")


def import_onnx_run(args: argparse.Namespace) -> int:
    from minicnn.io import import_onnx, save_keras_weights

    if not os.path.exists(args.onnx):
        print(f"minicnn import-onnx: error: file not found: {args.onnx}", file=sys.stderr)
        return 2
    try:
        model = import_onnx(args.onnx, input_layout=args.input_layout)
    except ValueError as err:              # OnnxError
        print(f"minicnn import-onnx: error: {err}", file=sys.stderr)
        return 2
    model.summary()
    print(f"input: NHWC float32 {model.input_shape}")
    if args.out:
        save_keras_weights(model, args.out)
        constants = [layer.name for layer in model.leaf_layers() if type(layer).__name__ == "Rescaling"]
        note = f" (not the constants of {', '.join(constants)}: they are not weights)" if constants else ""
        weighted = [layer for layer in model.leaf_layers() if list(layer.own_parameters())]
        print(f"wrote {args.out}: the weights of {len(weighted)} layers{note}")
    return 0


COMMANDS = {
    "export-onnx": ("write a checkpoint's model as an ONNX file (opset 17, NHWC input, dynamic batch)",
                    export_onnx_arguments, export_onnx_run),
    "import-onnx": ("read an ONNX CNN into minicnn: print its layers, optionally write its weights (.h5)",
                    import_onnx_arguments, import_onnx_run),
}
