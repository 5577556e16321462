"""VGG16 passes run in a process of their own: TensorFlow's, or another minicnn tree's.

TensorFlow pins a NumPy of its own, so it cannot share minicnn's environment; and
importing both in one process would also share one BLAS and one thread pool between
them. The benchmark starts a worker in TensorFlow's interpreter that builds the same
network (keras.applications.VGG16 conv base, weights=None; the GAP/Dense head) and
then waits on stdin: each line names a pass, the worker runs it once and answers
"done". The parent times that round trip (a pipe's ~0.1 ms against passes of 50 ms and
more), so TensorFlow's passes take their turn in the same round-robin as the others.
A "minicnn" worker runs minicnn's own cases with another tree first on its path (the
code before a change), so before and after are timed in one run. A "tf_layers" worker
(conv_layers.py) runs one VGG16 convolution's passes, named "block3_conv2 forward".

    python benchmarks/_workers.py --worker tf 64x16       # what the parent starts
    python benchmarks/_workers.py --worker tf_layers 64x16
    python benchmarks/_workers.py --memory tf 64x16 4     # peak RSS of 4 training steps, as JSON

The interpreter is $MINICNN_TF_PYTHON, else /work/venvs/tf/bin/python if it exists.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).parent


def tf_python() -> str | None:
    """TensorFlow's interpreter, or None when there is none (the TF columns then read "-")."""
    path = os.environ.get("MINICNN_TF_PYTHON", "/work/venvs/tf/bin/python")
    return path if Path(path).exists() else None


def tf_cases(size: int, batch: int) -> dict:
    """forward / forward+backward / training step as tf.functions, the same network and data."""
    import tensorflow as tf

    tf.config.threading.set_intra_op_parallelism_threads(os.cpu_count() or 1)
    tf.config.threading.set_inter_op_parallelism_threads(1)   # one op at a time, as the others
    import keras
    from vgg16_step import CLASSES, LR, MOMENTUM, data

    keras.utils.set_random_seed(0)
    base = keras.applications.VGG16(weights=None, include_top=False, input_shape=(size, size, 3))
    head = keras.Sequential([keras.layers.GlobalAveragePooling2D(), keras.layers.Dense(256, activation="relu"),
                             keras.layers.Dense(CLASSES)])
    head.build(base.output_shape)
    opt = keras.optimizers.SGD(learning_rate=LR, momentum=MOMENTUM)
    x, labels, gy = (tf.constant(a) for a in data(size, batch))
    variables = base.trainable_variables + head.trainable_variables
    loss_fn = keras.losses.SparseCategoricalCrossentropy(from_logits=True)
    last_base = keras.applications.VGG16(weights=None, include_top=False, input_shape=(size, size, 3))
    for layer in last_base.layers:
        layer.trainable = layer.name.startswith("block5")
    last_head = keras.models.clone_model(head)
    last_head.build(base.output_shape)
    last_opt = keras.optimizers.SGD(learning_rate=LR, momentum=MOMENTUM)
    last_variables = last_base.trainable_variables + last_head.trainable_variables

    @tf.function
    def forward():
        return base(x, training=False)

    @tf.function
    def forward_backward():
        with tf.GradientTape() as tape:
            out = base(x, training=True)
        return tape.gradient(out, base.trainable_variables, output_gradients=gy)

    def step_of(b, h, optimizer, trained):
        @tf.function
        def train_step():
            with tf.GradientTape() as tape:
                loss = loss_fn(labels, h(b(x, training=True), training=True))
            optimizer.apply_gradients(zip(tape.gradient(loss, trained), trained))
            return loss
        return train_step

    def run(fn):
        def call():
            out = fn()
            return [t.numpy() for t in out] if isinstance(out, list) else out.numpy()   # wait for it
        return call

    return {"forward": run(forward), "forward+backward": run(forward_backward),
            "training step": run(step_of(base, head, opt, variables)),
            "last_block step": run(step_of(last_base, last_head, last_opt, last_variables))}


def layer_arrays(index: int, batch: int, hw: int, cin: int, cout: int) -> tuple:
    """x, w, b, gy of conv_layers.py's ``index``-th layer (NHWC, HWIO; every process draws the same)."""
    import numpy as np

    rng = np.random.default_rng(index)
    x = rng.standard_normal((batch, hw, hw, cin), np.float32)
    w = (rng.standard_normal((3, 3, cin, cout), np.float32) * np.sqrt(2 / (9 * cin))).astype(np.float32)
    b = rng.standard_normal(cout).astype(np.float32) * 0.1
    gy = rng.standard_normal((batch, hw, hw, cout), np.float32)
    return x, w, b, gy


class TFLayerCases:
    """conv_layers.py's three passes of one VGG16 convolution in TensorFlow, by "layer pass".

    forward: relu(conv2d + bias); backward-data: Conv2DBackpropInput; backward-weights:
    Conv2DBackpropFilter and BiasAddGrad -- the ops TensorFlow's registered conv2d and
    bias_add gradients emit, called directly so each pass runs alone (no ReLU mask, like
    the others). Each is a tf.function on NHWC tensors; eager execution is synchronous, so
    a call returns when its ops are done. Only the layer asked for last is kept."""

    def __init__(self, size: int, batch: int):
        import tensorflow as tf

        from _limits import vgg16_layers

        tf.config.threading.set_intra_op_parallelism_threads(os.cpu_count() or 1)
        tf.config.threading.set_inter_op_parallelism_threads(1)
        tf.get_logger().setLevel("ERROR")   # each layer's new tf.functions trace once, in the warm-up
        self.tf, self.batch, self.layers = tf, batch, vgg16_layers(size)
        self.name, self.passes = None, {}

    def _build(self, name: str) -> dict:
        tf = self.tf
        index = [layer[0] for layer in self.layers].index(name)
        _, hw, cin, cout = self.layers[index]
        x, w, b, gy = (tf.constant(a) for a in layer_arrays(index, self.batch, hw, cin, cout))
        ones = [1, 1, 1, 1]

        @tf.function
        def forward():
            return tf.nn.relu(tf.nn.bias_add(tf.nn.conv2d(x, w, 1, "SAME"), b))

        @tf.function
        def backward_data():
            return tf.raw_ops.Conv2DBackpropInput(input_sizes=tf.shape(x), filter=w, out_backprop=gy,
                                                  strides=ones, padding="SAME")

        @tf.function
        def backward_weights():
            return (tf.raw_ops.Conv2DBackpropFilter(input=x, filter_sizes=tf.shape(w), out_backprop=gy,
                                                    strides=ones, padding="SAME"),
                    tf.raw_ops.BiasAddGrad(out_backprop=gy))

        return {"forward": forward, "backward-data": backward_data, "backward-weights": backward_weights}

    def __getitem__(self, case: str):
        name, pass_name = case.split()
        if name != self.name:
            self.name, self.passes = None, {}          # free the last layer's tensors first
            self.passes, self.name = self._build(name), name
        return self.passes[pass_name]


class Worker:
    """A framework's passes behind a pipe: ``cases()`` gives callables that run one pass each.

    ``framework`` "tf", or "minicnn" with ``tree`` (a checkout whose minicnn is imported)."""

    def __init__(self, python: str, framework: str, size: int, batch: int, tree: str | None = None):
        env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"}
        if tree is not None:
            env["PYTHONPATH"] = str(Path(tree).resolve())
        self.proc = subprocess.Popen([python, str(Path(__file__).resolve()), "--worker", framework,
                                      f"{size}x{batch}"], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                     text=True, bufsize=1, env=env)
        self._expect("ready")

    def _expect(self, word: str) -> None:
        line = self.proc.stdout.readline().strip()
        if line != word:
            raise RuntimeError(f"TensorFlow worker answered {line!r}, expected {word!r} (its stderr is above)")

    def case(self, name: str):
        def call():
            self.proc.stdin.write(name + "\n")
            self._expect("done")
        return call

    def cases(self) -> dict:
        return {k: self.case(k) for k in ("forward", "forward+backward", "training step", "last_block step")}

    def close(self) -> None:
        self.proc.stdin.close()
        self.proc.wait(timeout=60)


def _cases(framework: str, size: int, batch: int) -> dict:
    if framework == "tf":
        return tf_cases(size, batch)
    if framework == "tf_layers":
        return TFLayerCases(size, batch)
    from vgg16_step import minicnn_cases
    return minicnn_cases(size, batch)


def _serve(framework: str, size: int, batch: int) -> None:
    cases = _cases(framework, size, batch)
    print("ready", flush=True)
    for line in sys.stdin:
        cases[line.strip()]()
        print("done", flush=True)


def _memory(size: int, batch: int, steps: int) -> None:
    import keras  # noqa: F401  (import cost belongs to the baseline)
    import tensorflow  # noqa: F401
    from vgg16_step import _status_mb
    baseline = _status_mb("VmRSS")
    step = tf_cases(size, batch)["training step"]
    for _ in range(steps):
        step()
    print(json.dumps({"peak_rss_mb": _status_mb("VmHWM"), "after_imports_mb": baseline}))


if __name__ == "__main__":
    sys.path.insert(0, str(HERE))
    config = tuple(int(v) for v in sys.argv[3].split("x"))
    if sys.argv[1] == "--worker":
        _serve(sys.argv[2], *config)
    else:
        _memory(*config, int(sys.argv[4]))
