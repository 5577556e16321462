"""The argument types minicnn launches each CUDA kernel with (kernels/cuda/launch.py).

Used to compile every kernel ahead of time to PTX (``python -m kernels.cuda --ptx``)
without a GPU; tests check that every launch in the simulator matches an entry.
Arrays are float32 and C-contiguous (the launchers make them so), argmax and
labels int32, sizes int64, flags bool, hyperparameters float64, dropout seed
and offset uint64.
"""

from __future__ import annotations

from numba import boolean, float32, float64, int32, int64, uint64

from kernels.cuda import conv, elementwise, gemm, loss, pool, reduce

F1, F2, F3, F4 = float32[::1], float32[:, ::1], float32[:, :, ::1], float32[:, :, :, ::1]
I1, I4 = int32[::1], int32[:, :, :, ::1]
I = int64

KERNELS = {
    "matmul": (gemm.matmul, (F2, F2, F3, I, I, F1, boolean, boolean, I)),
    "im2col": (conv.im2col, (F4, F2) + (I,) * 8),
    "col2im": (conv.col2im, (F2, F4) + (I,) * 8),
    "conv2d_forward_implicit": (conv.conv2d_forward_implicit,
                                (F4, F2, F1, F3, boolean, boolean) + (I,) * 7),
    "conv2d_backward_data_implicit": (conv.conv2d_backward_data_implicit, (F2, F3, F3) + (I,) * 9),
    "conv2d_backward_weights_implicit": (conv.conv2d_backward_weights_implicit, (F4, F2, F3) + (I,) * 7),
    "max_pool_forward": (pool.max_pool_forward, (F4, F4, I4) + (I,) * 6),
    "max_pool_backward": (pool.max_pool_backward, (F4, I4, F4) + (I,) * 6),
    "relu": (elementwise.relu, (F1, F1)),
    "relu_backward": (elementwise.relu_backward, (F1, F1, F1)),
    "bias_relu": (elementwise.bias_relu, (F2, F1, boolean, boolean)),
    "dropout_mask": (elementwise.dropout_mask, (uint64, uint64, float64, float64, F1)),
    "sgd_update": (elementwise.sgd_update, (F1, F1, F1, float64, float64, boolean, float64)),
    "adam_update": (elementwise.adam_update, (F1, F1, F1, F1, float64, float64, float64, float64)),
    "column_sum": (reduce.column_sum, (F2, F2)),
    "softmax_cross_entropy": (loss.softmax_cross_entropy, (F2, I1, F1, boolean, F1, F2)),
    "softmax_cross_entropy_backward": (loss.softmax_cross_entropy_backward,
                                       (F2, I1, F1, boolean, float64, F2)),
}
