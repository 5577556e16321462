"""ONNX -> minicnn: imported models compute what the ONNX graph computes.

References: PyTorch's own outputs for the files torch.onnx wrote
(tests/data/onnx/make_torch_files.py), ONNX Runtime for graphs built here in the
shapes converters emit (NCHW, transposes around convolutions, Gemm with transB,
MatMul + Add, Shape -> Gather / Slice -> Concat -> Reshape, Cast, constants), and the
original minicnn model for our own exports (round trip).
"""

import pathlib

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper, numpy_helper

from minicnn import Model, nn
from minicnn.cli import main
from minicnn.experiments.models import build_model
from minicnn.io import OnnxError, export_onnx, import_onnx, load_keras_weights
from minicnn.io.onnx_import import SUPPORTED_OPS

DATA = pathlib.Path(__file__).parent / "data" / "onnx"
RTOL = 1e-4
RNG = np.random.default_rng(0)


def _close(got, expected, rtol=RTOL):
    assert got.shape == expected.shape
    assert float(np.abs(got - expected).max()) <= rtol * max(float(np.abs(expected).max()), 1e-6)


def _random_weights(model, seed=0):
    rng = np.random.default_rng(seed)
    model.load_state_dict({name: (0.3 * rng.standard_normal(p.shape)).astype(np.float32)
                           for name, p in model.named_parameters()})


# ---- round trip: our export, imported ---------------------------------------------------

ROUND_TRIP_CASES = {
    "conv_same_relu_then_pool": (lambda: [nn.Conv2D(4, 3, activation="relu"), nn.MaxPool2D(2)], (9, 7, 3)),
    "conv_valid_stride_no_bias": (lambda: [nn.Conv2D(3, (3, 2), strides=(2, 1), padding="valid",
                                                     use_bias=False)], (8, 7, 2)),
    "conv_same_stride2_and_maxpool_same": (lambda: [nn.Conv2D(5, 3, strides=2), nn.MaxPool2D(3, 2, "same")],
                                           (9, 8, 2)),
    "average_pool_same": (lambda: [nn.AveragePooling2D(3, 2, "same")], (7, 6, 3)),
    "rescaling_then_conv_gap": (lambda: [nn.Rescaling(np.float32([0.5, 2.0, -1.0]), 0.25), nn.Conv2D(4, 3),
                                         nn.GlobalAveragePooling2D(), nn.Dense(3)], (6, 5, 3)),
    "flatten_dense_dropout_softmax": (lambda: [nn.Conv2D(3, 1), nn.Flatten(), nn.ReLU(), nn.Dense(6, "relu"),
                                               nn.Dropout(0.5), nn.Dense(4), nn.Softmax()], (3, 4, 2)),
}


@pytest.mark.parametrize("case", sorted(ROUND_TRIP_CASES))
def test_our_export_imports_back_to_the_same_model(tmp_path, case):
    make_layers, shape = ROUND_TRIP_CASES[case]
    model = nn.Sequential(make_layers()).build((None, *shape)).eval()
    _random_weights(model)
    export_onnx(model, tmp_path / "m.onnx")
    back = import_onnx(tmp_path / "m.onnx")
    assert back.input_shape == (None, *shape)
    assert [type(a) for a in back.leaf_layers()] == [type(b) for b in model.leaf_layers()
                                                     if not isinstance(b, nn.Dropout)]
    x = RNG.standard_normal((3, *shape)).astype(np.float32)
    _close(back(x).numpy(), model(x).numpy(), 1e-6)


def test_vgg16_with_the_thesis_head_round_trips_by_name(tmp_path):
    model = build_model("vgg16", 32, 7).eval()
    export_onnx(model, tmp_path / "vgg.onnx")
    back = import_onnx(tmp_path / "vgg.onnx", container=Model)
    assert isinstance(back, Model)
    original = dict(model.named_parameters())
    assert sorted(dict(back.named_parameters())) == sorted(original)
    for name, p in back.named_parameters():
        np.testing.assert_array_equal(p.numpy(), original[name].numpy())
    x = RNG.uniform(-1, 1, (2, 32, 32, 3)).astype(np.float32)
    _close(back(x).numpy(), model(x).numpy(), 1e-6)


# ---- files written by torch.onnx ----------------------------------------------------------

def test_a_pytorch_cnn_imports_and_matches_pytorch():
    ref = np.load(DATA / "torch_cnn.npz")
    model = import_onnx(DATA / "torch_cnn.onnx")
    # Sub/Div by the normalisation constants -> Rescaling; the Mul by 0.5 and the ReLUs
    # fold into conv2 / the conv and dense layers; the NCHW view(N, -1) -> Flatten.
    assert [type(layer).__name__ for layer in model.leaf_layers()] == [
        "Rescaling", "Conv2D", "MaxPool2D", "Conv2D", "AveragePooling2D", "Flatten", "Dense", "Dense", "Softmax"]
    assert model.get_layer("conv1").activation == "relu" and model.get_layer("fc2").activation is None
    _close(model(ref["x"].transpose(0, 2, 3, 1)).numpy(), ref["y"])


def test_a_pytorch_gap_cnn_with_matmul_plus_add_matches_pytorch():
    ref = np.load(DATA / "torch_gap.npz")
    model = import_onnx(DATA / "torch_gap.onnx")
    assert [type(layer).__name__ for layer in model.leaf_layers()] == ["Conv2D", "GlobalAveragePooling2D", "Dense"]
    assert model.leaf_layers()[-1].bias is not None      # the Add became the Dense's bias
    _close(model(ref["x"].transpose(0, 2, 3, 1)).numpy(), ref["y"])


# ---- graphs shaped like converters write them, checked by ONNX Runtime --------------------

def _write(tmp_path, nodes, weights, input_dims, name="g.onnx", out_rank=2):
    inits = [numpy_helper.from_array(np.asarray(v), k) for k, v in weights.items()]
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, input_dims)],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [f"d{i}" for i in range(out_rank)])], initializer=inits)
    proto = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8)
    onnx.checker.check_model(proto)
    path = tmp_path / name
    onnx.save(proto, str(path))
    return path


def _compare_with_onnx_runtime(path, x_onnx, x_ours, **kwargs):
    expected = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"]).run(None, {"x": x_onnx})[0]
    model = import_onnx(path, **kwargs)
    _close(model(x_ours).numpy(), expected)
    return model


def _f32(*shape):
    return RNG.standard_normal(shape).astype(np.float32)


def test_tf2onnx_style_nhwc_graph_with_transposes_reshape_matmul_add_cast(tmp_path):
    n = helper.make_node
    nodes = [n("Transpose", ["x"], ["t"], perm=[0, 3, 1, 2]),
             n("Conv", ["t", "w", "b"], ["c"], kernel_shape=[3, 3], strides=[2, 2], auto_pad="SAME_UPPER"),
             n("Relu", ["c"], ["r"]),
             n("Transpose", ["r"], ["back"], perm=[0, 2, 3, 1]),
             n("Reshape", ["back", "flat_shape"], ["f"]),
             n("Cast", ["f"], ["fc"], to=TensorProto.FLOAT),
             n("MatMul", ["fc", "k"], ["m"]), n("Add", ["m", "bias"], ["a"]), n("Relu", ["a"], ["y"])]
    weights = {"w": _f32(4, 3, 3, 3), "b": _f32(4), "flat_shape": np.int64([-1, 5 * 4 * 4]),
               "k": _f32(80, 6), "bias": _f32(6)}
    path = _write(tmp_path, nodes, weights, ["N", 10, 8, 3])
    x = _f32(2, 10, 8, 3)
    model = _compare_with_onnx_runtime(path, x, x)
    assert [type(layer).__name__ for layer in model.leaf_layers()] == ["Conv2D", "Flatten", "Dense"]


def test_nchw_graph_with_constants_shape_chain_and_gemm_transb(tmp_path):
    n = helper.make_node
    nodes = [n("Mul", ["x", "in_scale"], ["s"]),                      # after ReLU: stays a Rescaling
             n("Sub", ["in_offset", "s"], ["s2"]),                    # c - x
             n("Conv", ["s2", "w"], ["c"], kernel_shape=[3, 3], pads=[1, 1, 1, 1]),
             n("Mul", ["c", "ch_scale"], ["c2"]), n("Add", ["c2", "ch_shift"], ["c3"]),   # fold into the conv
             n("Relu", ["c3"], ["r"]),
             n("MaxPool", ["r"], ["p"], kernel_shape=[2, 2], strides=[2, 2]),
             n("Shape", ["p"], ["shape"]),
             n("Slice", ["shape", "zero", "one"], ["batch"]),
             n("Concat", ["batch", "minus_one"], ["target"], axis=0),
             n("Reshape", ["p", "target"], ["f"]),
             n("Gemm", ["f", "wt", "gb"], ["g"], transB=1, alpha=0.5, beta=2.0),
             n("Div", ["g", "two"], ["d"]),
             n("Softmax", ["d"], ["y"], axis=1)]
    weights = {"in_scale": np.float32([[[[2.0]], [[0.5]], [[-1.0]]]]), "in_offset": np.float32(0.25),
               "w": _f32(6, 3, 3, 3), "ch_scale": _f32(1, 6, 1, 1), "ch_shift": _f32(6, 1, 1),
               "zero": np.int64([0]), "one": np.int64([1]), "minus_one": np.int64([-1]),
               "wt": _f32(5, 6 * 3 * 2), "gb": _f32(1, 5), "two": np.float32(2.0)}
    path = _write(tmp_path, nodes, weights, ["N", 3, 6, 5])
    x = _f32(4, 3, 6, 5)
    model = _compare_with_onnx_runtime(path, x, x.transpose(0, 2, 3, 1).copy())
    # The NCHW flatten order is in the Dense kernel: its rows are permuted, not the activations.
    assert [type(layer).__name__ for layer in model.leaf_layers()] == [
        "Rescaling", "Conv2D", "MaxPool2D", "Flatten", "Dense", "Softmax"]


def test_input_layout_can_be_given(tmp_path):
    nodes = [helper.make_node("Flatten", ["x"], ["f"]), helper.make_node("MatMul", ["f", "k"], ["y"])]
    path = _write(tmp_path, nodes, {"k": _f32(24, 3)}, ["N", 2, 3, 4])   # no conv: NCHW by convention
    x = _f32(2, 2, 3, 4)
    _compare_with_onnx_runtime(path, x, x.transpose(0, 2, 3, 1).copy())
    model = _compare_with_onnx_runtime(path, x, x, input_layout="NHWC")
    assert model.input_shape == (None, 2, 3, 4)


# ---- bad files ---------------------------------------------------------------------------

def _exported(tmp_path):
    model = nn.Sequential([nn.Conv2D(2, 3), nn.Flatten(), nn.Dense(3)]).build((None, 4, 4, 1))
    export_onnx(model, tmp_path / "ok.onnx")
    return (tmp_path / "ok.onnx").read_bytes()


def test_a_truncated_file_is_named(tmp_path):
    data = _exported(tmp_path)
    (tmp_path / "cut.onnx").write_bytes(data[: len(data) // 3])
    with pytest.raises(OnnxError, match=r"cut\.onnx: not a readable ONNX model"):
        import_onnx(tmp_path / "cut.onnx")


def test_an_unsupported_op_names_the_node_its_op_and_the_supported_list(tmp_path):
    nodes = [helper.make_node("Conv", ["x", "w"], ["c"], kernel_shape=[1, 1]),
             helper.make_node("Sigmoid", ["c"], ["y"], name="gate")]
    path = _write(tmp_path, nodes, {"w": _f32(2, 3, 1, 1)}, ["N", 3, 4, 4], out_rank=4)
    with pytest.raises(OnnxError, match=r"node 'gate' \(Sigmoid\): op Sigmoid is not supported; supported ops: "
                                        r"Add, AveragePool, Cast, Concat") as err:
        import_onnx(path)
    assert err.value.layer == "gate" and all(op in str(err.value) for op in SUPPORTED_OPS)


def test_a_dynamic_spatial_shape_is_refused(tmp_path):
    path = _write(tmp_path, [helper.make_node("Relu", ["x"], ["y"])], {}, ["N", 3, "H", "W"], out_rank=4)
    with pytest.raises(OnnxError, match=r"input 'x' has a dynamic spatial shape \['N', 3, 'H', 'W'\]"):
        import_onnx(path)


def test_an_input_that_is_not_4d_is_refused(tmp_path):
    path = _write(tmp_path, [helper.make_node("MatMul", ["x", "k"], ["y"])], {"k": _f32(8, 2)}, ["N", 8])
    with pytest.raises(OnnxError, match=r"input 'x' must be 4-D images .* got shape \['N', 8\]"):
        import_onnx(path)


def test_pads_minicnn_cannot_express_and_branches_are_named(tmp_path):
    conv = helper.make_node("Conv", ["x", "w"], ["y"], name="down", kernel_shape=[3, 3], strides=[2, 2],
                            pads=[1, 1, 1, 1])        # torch's pad 1 on an even size: not TensorFlow's "same"
    path = _write(tmp_path, [conv], {"w": _f32(2, 3, 3, 3)}, ["N", 3, 8, 8], out_rank=4)
    with pytest.raises(OnnxError, match=r"'down' \(Conv\): pads \[1, 1, 1, 1\] are neither 0 .* \[0, 0, 1, 1\]"):
        import_onnx(path)
    nodes = [helper.make_node("Relu", ["x"], ["r"]), helper.make_node("Add", ["r", "x"], ["y"], name="skip")]
    with pytest.raises(OnnxError, match=r"tensor 'x' feeds \['r', 'skip'\]: the graph branches"):
        import_onnx(_write(tmp_path, nodes, {}, ["N", 3, 4, 4], name="branch.onnx", out_rank=4))


def test_import_onnx_command_prints_the_layers_and_writes_loadable_weights(tmp_path, capsys):
    out = tmp_path / "torch_cnn.h5"
    assert main(["import-onnx", str(DATA / "torch_cnn.onnx"), str(out)]) == 0
    printed = capsys.readouterr().out
    assert "AveragePooling2D" in printed and "wrote" in printed and "weights of 4 layers" in printed
    model = import_onnx(DATA / "torch_cnn.onnx")
    for _, p in model.named_parameters():
        p.data[...] = 0
    load_keras_weights(model, out)                     # by name: conv1, conv2, fc1, fc2
    ref = np.load(DATA / "torch_cnn.npz")
    _close(model(ref["x"].transpose(0, 2, 3, 1)).numpy(), ref["y"])
    (tmp_path / "cut.onnx").write_bytes((DATA / "torch_cnn.onnx").read_bytes()[:500])
    assert main(["import-onnx", str(tmp_path / "cut.onnx")]) == 2
    assert "not a readable ONNX model" in capsys.readouterr().err
