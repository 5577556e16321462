"""The ``minicnn export-onnx`` subcommand: a trained checkpoint as an ONNX file.

    minicnn export-onnx runs/ham/best.h5 ham.onnx [--softmax]

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


COMMANDS = {
    "export-onnx": ("write a checkpoint's model as an ONNX file (opset 17, NHWC input, dynamic batch)",
                    export_onnx_arguments, export_onnx_run),
}
