"""A guided tour of one F.conv2d call, from Tensor down to the kernels and back through backward.

Each step prints what it found and names the file and function it is in; docs/tour.md
explains the steps and shows exactly this output (tests/test_tour.py checks that it
does). Tiny integer-valued arrays keep every number exact, so the output is the same
on every machine. The CUDA kernels run in Numba's simulator, no GPU needed.

Run:  python examples/tour.py
"""

import os

os.environ["NUMBA_ENABLE_CUDASIM"] = "1"   # the CUDA simulator: must be set before numba is imported

import numpy as np

import minicnn
from kernels import reference
from minicnn import functional as F


def step(title: str) -> None:
    print(f"\n== {title}")


rng = np.random.default_rng(0)
x_data = rng.integers(-2, 3, (1, 4, 4, 8)).astype(np.float32)   # one 4x4 image, 8 channels (NHWC)
w_data = rng.integers(-1, 2, (3, 3, 8, 2)).astype(np.float32)   # 3x3 kernel, 8 -> 2 channels (HWIO)
b_data = np.array([1.0, -1.0], np.float32)

# ---- 1. Tensor ---------------------------------------------------------------------------
step("1. minicnn/tensor.py: Tensor holds an array and the device it lives on")
x = minicnn.Tensor(x_data, requires_grad=True)
w = minicnn.Tensor(w_data, requires_grad=True)
b = minicnn.Tensor(b_data, requires_grad=True)
print(x)
print("x.data is a", type(x.data).__name__, "on device", repr(x.device))

# ---- 2. Function.apply and Conv2d.forward ------------------------------------------------
step("2. minicnn/functional.py: conv2d -> Conv2d.apply (Function.apply, minicnn/tensor.py)")
y = F.conv2d(x, w, b, padding="same", activation="relu")
fn = y._ctx                                     # the Function that made y, kept for backward
print("y =", y)
print("made by", fn.name, "| needs_input_grad", fn.needs_input_grad, "| keep for backward:", fn.keep)

# ---- 3. the device's backend -------------------------------------------------------------
step("3. minicnn/backends/__init__.py: get_backend(device) picks the module that computes")
print("Conv2d.forward called", fn.backend.__name__ + ".conv2d_forward")
for device in ("cpu", "cuda-sim", "reference"):             # "cuda" needs CuPy and a GPU
    print(f"  get_backend({device!r:11}) -> {minicnn.backends.get_backend(device).__name__}")

# ---- 4. the CPU backend chooses an algorithm ---------------------------------------------
step("4. minicnn/backends/cpu/__init__.py: conv_algorithm chooses how the convolution runs")
cpu = fn.backend
print("this call:", cpu.conv_algorithm(x.shape, w.shape, (1, 1), (1, 1, 1, 1), 4))
print(f"  why: 8 >= DIRECT_MAX_CHANNELS = {cpu.DIRECT_MAX_CHANNELS} input channels, not 1x1, 2x2 output tiles "
      f"4 < WINOGRAD_MIN_TILES = {cpu.WINOGRAD_MIN_TILES},\n       8 < TAPS_MIN_CHANNELS = {cpu.TAPS_MIN_CHANNELS}"
      " channels; the layer is one small GEMM, so gx takes col2im")
print("saved for backward:", fn.saved[5])
for name, x_shape, w_shape in [("VGG16 block1_conv1, 64px batch 16", (16, 64, 64, 3), (3, 3, 3, 64)),
                               ("VGG16 block2_conv1, 64px batch 16", (16, 32, 32, 64), (3, 3, 64, 128)),
                               ("VGG16 block5_conv1, 64px batch 2", (2, 4, 4, 512), (3, 3, 512, 512))]:
    print(f"  {name}: {cpu.conv_algorithm(x_shape, w_shape, (1, 1), (1, 1, 1, 1), 4).algorithm}")

# ---- 5. the Numba kernel -----------------------------------------------------------------
step("5. kernels/cpu/im2col.py: im2col_rows copies each output pixel's 3x3 window into a row")
from kernels.cpu import im2col as cpu_im2col

cols = np.empty((16, 3 * 3 * 8), np.float32)    # N*OH*OW rows, kh*kw*cin columns
cpu_im2col.im2col_rows(x_data, 3, 3, 1, 1, 1, 1, 4, 4, 0, 16, cols)
print("cols", cols.shape, "; pixel (0, 0)'s window, channel 0 (zeros = padding):")
print(cols[0].reshape(3, 3, 8)[:, :, 0].astype(int))
y_by_hand = np.maximum(cols @ w_data.reshape(72, 2) + b_data, 0).reshape(1, 4, 4, 2)
print("relu(cols @ w.reshape(72, 2) + b) == y:", np.array_equal(y_by_hand, y.numpy()))
print("y[0, :, :, 0] =")
print(y.numpy()[0, :, :, 0].astype(int))

# ---- 6. its CUDA twin in the simulator ---------------------------------------------------
step("6. kernels/cuda/conv.py: im2col, the same columns with one CUDA thread per element")
from kernels.cuda import conv as cuda_conv

cuda_cols = np.empty_like(cols)
cuda_conv.im2col[2, 32](x_data, cuda_cols, 3, 3, 1, 1, 1, 1, 4, 4)     # 2 blocks of 32 threads
print("CUDA columns == CPU columns:", np.array_equal(cuda_cols, cols))
y_sim = F.conv2d(x.to("cuda-sim"), w.to("cuda-sim"), b.to("cuda-sim"), padding="same", activation="relu")
print("the whole conv2d on device 'cuda-sim' (implicit GEMM) == y:", np.array_equal(y_sim.numpy(), y.numpy()))

# ---- 7. backward -------------------------------------------------------------------------
step("7. Tensor.backward -> Conv2d.backward -> cpu.conv2d_backward")
gy = rng.integers(-1, 2, y.shape).astype(np.float32)
y.backward(gy)
print("x.grad", x.grad.shape, "w.grad", w.grad.shape, "b.grad", b.grad.tolist())
print("the graph is freed after backward:", fn.released)
g = gy * (y.numpy() > 0)                                   # through the ReLU: dL/dz = gy * 1[y > 0]
print("x.grad == reference.conv2d_backward_data:",
      np.array_equal(x.grad, reference.conv2d_backward_data(g, w_data, x.shape, (1, 1), (1, 1, 1, 1))))
print("w.grad == reference.conv2d_backward_weights:",
      np.array_equal(w.grad, reference.conv2d_backward_weights(g, x_data, w.shape, (1, 1), (1, 1, 1, 1))))

step("8. kernels/cpu/im2col.py col2im and kernels/cuda/conv.py col2im: gx = col2im(g @ w^T)")
gcols = g.reshape(16, 2) @ w_data.reshape(72, 2).T
gx_cpu = np.empty_like(x_data)
cpu_im2col.col2im(gcols, 3, 3, 1, 1, 1, 1, 4, 4, gx_cpu, 0, 4)
gx_cuda = np.empty_like(x_data)
cuda_conv.col2im[2, 32](gcols, gx_cuda, 3, 3, 1, 1, 1, 1, 4, 4)
print("CPU col2im == x.grad:", np.array_equal(gx_cpu, x.grad), "| CUDA col2im == x.grad:",
      np.array_equal(gx_cuda, x.grad))
print("x.grad[0, 0, :, 0] =", x.grad[0, 0, :, 0].astype(int).tolist())
