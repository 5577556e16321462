"""Inference: minicnn's forward pass against the deployment runtimes, on the CPU.

The model is VGG16 with the thesis head (13 convolutions, 5 max-pools, Flatten,
Dense 256 ReLU, Dropout, Dense 256 ReLU, Dropout, Dense 7) in eval mode, random
weights. It is exported once per input size with ``minicnn.io.export_onnx`` and the
same file is run by

    minicnn       model(x) under no_grad (Winograd / im2col convolutions, fused conv+pool)
    onnxruntime   InferenceSession, CPUExecutionProvider, all graph optimisations
    openvino      core.compile_model(file, "CPU"), float32 inference precision

all with one thread per core, round-robin in one process (the ratios are what counts on
a shared VM). The outputs are compared (largest difference / largest output). With
``--layers``, each layer is timed alone in minicnn and per node in ONNX Runtime's
profiler at one configuration, to show where the time goes.

    python benchmarks/inference.py [--configs 224x1,224x8,64x32] [--rounds 5] [--layers 224x8] [--no-spin]

Writes results/inference.json (results/inference_no_spin.json with --no-spin).
"""

from __future__ import annotations

import argparse
import functools
import json
import os
import tempfile
import time
from collections import defaultdict
from pathlib import Path

import _harness as H  # benchmarks/ is the script's directory, so first on sys.path
import numpy as np

CLASSES = 7


def build(size: int, onnx_path: Path):
    import minicnn
    from minicnn.experiments.models import build_model
    from minicnn.io import export_onnx

    minicnn.seed(0)
    model = build_model("vgg16", size, CLASSES).eval()
    export_onnx(model, onnx_path, input_shape=(None, size, size, 3))
    return model


def runtimes(model, onnx_path: Path, threads: int, spin: bool = True) -> dict:
    """name -> f(x) returning the logits as a NumPy array."""
    import onnxruntime as ort
    import openvino as ov

    import minicnn

    def run_minicnn(x):
        with minicnn.no_grad():
            return model(x).numpy()

    options = ort.SessionOptions()
    options.intra_op_num_threads, options.inter_op_num_threads = threads, 1
    if not spin:       # idle ORT threads sleep instead of spinning: kinder to a machine shared with other jobs
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    session = ort.InferenceSession(str(onnx_path), options, providers=["CPUExecutionProvider"])
    core = ov.Core()
    compiled = core.compile_model(str(onnx_path), "CPU", {"INFERENCE_NUM_THREADS": threads,
                                                          "INFERENCE_PRECISION_HINT": "f32"})
    request = compiled.create_infer_request()

    def run_openvino(x):
        return request.infer({0: x})[compiled.output(0)].copy()

    return {"minicnn": run_minicnn, "onnxruntime": lambda x: session.run(None, {"input": x})[0],
            "openvino": run_openvino}


def layer_times(model, onnx_path: Path, x: np.ndarray, threads: int, rounds: int) -> list[list]:
    """Per layer: minicnn's median time with the layer run alone, ONNX Runtime's from its profiler."""
    import onnxruntime as ort

    import minicnn

    ours: dict = defaultdict(list)
    for _ in range(rounds):
        h = minicnn.Tensor(x)
        with minicnn.no_grad():
            for layer in model.leaf_layers():
                start = time.perf_counter()
                h = layer(h)
                ours[layer.name].append(time.perf_counter() - start)
    options = ort.SessionOptions()
    options.intra_op_num_threads, options.inter_op_num_threads = threads, 1
    options.enable_profiling = True
    options.profile_file_prefix = str(onnx_path.with_suffix(""))
    session = ort.InferenceSession(str(onnx_path), options, providers=["CPUExecutionProvider"])
    for _ in range(rounds + 1):
        session.run(None, {"input": x})
    theirs: dict = defaultdict(list)
    for event in json.loads(Path(session.end_profiling()).read_text()):
        if event.get("cat") == "Node" and event["name"].endswith("_kernel_time"):
            layer = event["name"].split(":")[0].split("/")[0]   # our node names: "<layer>:<Op>"
            theirs[layer].append(event["dur"] / 1e6)
    rows = []
    names = {layer.name for layer in model.leaf_layers()}
    other = sum(sum(v) for k, v in theirs.items() if k not in names) / (rounds + 1)
    for layer in model.leaf_layers():
        mine = float(np.median(ours[layer.name]))
        runs = theirs.get(layer.name, [])
        ort_s = sum(runs) / (rounds + 1) if runs else None   # fused nodes (Conv+Relu) keep the conv's name
        rows.append([layer.name, f"{mine * 1e3:.1f}", "-" if ort_s is None else f"{ort_s * 1e3:.1f}",
                     "-" if not ort_s else f"{mine / ort_s:.2f}x"])
    rows.append(["(ORT's own layout nodes)", "", f"{other * 1e3:.1f}", ""])
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--configs", default="224x1,224x8,64x32", help="SIZExBATCH, comma-separated")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--no-spin", action="store_true", help="ONNX Runtime threads sleep when idle")
    parser.add_argument("--layers", default="", help="a SIZExBATCH to break down per layer (e.g. 224x8)")
    args = parser.parse_args()
    threads = int(os.environ.get("MINICNN_NUM_THREADS") or os.environ.get("OMP_NUM_THREADS") or os.cpu_count())
    rows, results = [], {"machine": H.machine_info(), "threads": threads, "ort_spinning": not args.no_spin,
                         "configs": {}}
    tmp = Path(tempfile.mkdtemp(prefix="minicnn_inference_"))
    models = {}
    for config in args.configs.split(","):
        size, batch = (int(v) for v in config.lower().split("x"))
        path = tmp / f"vgg16_{size}.onnx"
        if size not in models:
            models[size] = build(size, path)
        run = runtimes(models[size], path, threads, spin=not args.no_spin)
        x = np.random.default_rng(1).uniform(-1, 1, (batch, size, size, 3)).astype(np.float32)
        outputs = {name: f(x) for name, f in run.items()}
        scale = float(np.abs(outputs["minicnn"]).max())
        diff = {name: float(np.abs(y - outputs["minicnn"]).max()) / scale for name, y in outputs.items()}
        times = H.interleaved({name: functools.partial(f, x) for name, f in run.items()}, rounds=args.rounds)
        best = min(times["onnxruntime"], times["openvino"])
        ratios = {name: times["minicnn"] / times[name] for name in ("onnxruntime", "openvino")}
        rows.append([config, *(f"{times[n] * 1e3:.0f}" for n in run), *(f"{ratios[n]:.2f}x" for n in ratios),
                     f"{times['minicnn'] / best:.2f}x", f"{diff['onnxruntime']:.1e} / {diff['openvino']:.1e}"])
        results["configs"][config] = {"median_s": times, "minicnn_over": ratios, "minicnn_over_faster":
                                      times["minicnn"] / best, "max_rel_diff_vs_minicnn": diff}
    H.print_table(["size x batch", "minicnn ms", "ORT ms", "OpenVINO ms", "minicnn / ORT", "minicnn / OpenVINO",
                   "minicnn / faster", "output diff ORT / OV"], rows)
    if args.layers:
        size, batch = (int(v) for v in args.layers.lower().split("x"))
        path = tmp / f"vgg16_{size}.onnx"
        if size not in models:
            models[size] = build(size, path)
        x = np.random.default_rng(1).uniform(-1, 1, (batch, size, size, 3)).astype(np.float32)
        layer_rows = layer_times(models[size], path, x, threads, args.rounds)
        print(f"\nper layer at {args.layers} (minicnn alone per layer; ORT from its profiler, fused nodes):")
        H.print_table(["layer", "minicnn ms", "ORT ms", "ratio"], layer_rows)
        results["layers"] = {args.layers: layer_rows}
    results["load_average_at_end"] = [round(v, 2) for v in os.getloadavg()]
    H.write_json("inference_no_spin.json" if args.no_spin else "inference.json", results)


if __name__ == "__main__":
    main()
