"""Launch wrappers: the backend interface of minicnn/backends/__init__.py on top of kernels/cuda.

One ``CudaOps`` object per device. It is parameterised only by the array
module ``xp`` (cupy on a GPU, numpy in the simulator) and by how to find the
stream to launch on; minicnn/backends/cuda.py and cuda_sim.py just build one.
The wrappers allocate outputs with ``xp``, choose grid and block sizes, and
pick an algorithm; the kernels do the arithmetic. Arrays only, no Tensors.
"""

from __future__ import annotations

import math
import os
import warnings

import numpy as np

from kernels.cuda import conv, elementwise, gemm, reduce
from kernels.cuda import loss as loss_kernels
from kernels.cuda import pool as pool_kernels
from kernels.cuda.indexing import GPU_FLAT_THREADS

CONV_ALGORITHMS = ("auto", "implicit", "im2col")
IM2COL_WORKSPACE_LIMIT = 1 << 30   # bytes; bigger im2col matrices are never tried
SIM_FLAT_THREADS = 32              # block size of launch_flat in the simulator (each thread is a Python thread)


def _out_size(size, k, s, before, after):
    return (size + before + after - k) // s + 1


def _ceil_div(a, b):
    return -(-a // b)



# The functions of the backend interface (minicnn/backends/__init__.py) CudaOps provides.
BACKEND_OPS = ("conv2d_forward", "conv2d_backward", "max_pool_forward", "max_pool_backward", "relu",
               "relu_backward", "matmul", "bias_grad", "softmax_cross_entropy",
               "softmax_cross_entropy_backward", "dropout_mask", "sgd_update", "adam_update")

class CudaOps:
    """Backend functions for one CUDA device (or the simulator).

    xp: numpy or cupy.  stream: () -> the stream to launch on (0 = default).
    sm_count: multiprocessors, to size grids.  gemm_library: "ours" or "cublas"
    (cupy.matmul; GPU only, for comparison).  conv_algorithm: one of
    CONV_ALGORITHMS; "auto" times both on the first call for each shape (GPU)
    or takes the implicit GEMM (simulator).
    """

    def __init__(self, xp, stream=lambda: 0, sm_count=2, simulator=False, gemm_library="ours",
                 conv_algorithm="auto"):
        if gemm_library not in ("ours", "cublas"):
            raise ValueError(f"MINICNN_GEMM={gemm_library!r}: expected 'ours' or 'cublas'")
        if conv_algorithm not in CONV_ALGORITHMS:
            raise ValueError(f"MINICNN_CONV_ALGO={conv_algorithm!r}: expected one of {CONV_ALGORITHMS}")
        if gemm_library == "cublas" and simulator:
            raise ValueError("MINICNN_GEMM=cublas needs a GPU (cupy); the simulator has only our GEMM")
        self.xp = xp
        self.stream = stream
        self.simulator = simulator
        self.gemm_library = gemm_library
        self.conv_algorithm = "im2col" if gemm_library == "cublas" else conv_algorithm
        self.sm_count = sm_count
        # elementwise launches: a few blocks per SM on a GPU, tiny grids in the simulator
        self.threads = SIM_FLAT_THREADS if simulator else GPU_FLAT_THREADS
        self.max_blocks = 2 if simulator else 32 * sm_count
        # split-K: aim for two blocks per SM, each split at least this many K steps
        self.min_k_per_split = 8 if simulator else 512
        self._conv_choice: dict = {}

    # ---- plumbing ----------------------------------------------------------------------

    def launch(self, kernel, grid, block, *args):
        if 0 in (grid if isinstance(grid, tuple) else (grid,)):
            return   # an empty output: nothing to compute (CUDA rejects empty grids)
        if self.simulator:
            # the simulator runs splitmix64 on numpy uint64 scalars, which warn when they wrap
            with warnings.catch_warnings():
                warnings.filterwarnings("ignore", "overflow encountered", RuntimeWarning)
                kernel[grid, block](*args)
        else:
            kernel[grid, block, self.stream()](*args)

    def launch_flat(self, kernel, size, *args):
        """A 1-D grid-stride launch covering ``size`` elements."""
        blocks = max(1, min(_ceil_div(size, self.threads), self.max_blocks))
        self.launch(kernel, blocks, self.threads, *args)

    def contiguous(self, a, dtype=None):
        return self.xp.ascontiguousarray(a, dtype=dtype)

    def _bias_or_dummy(self, bias, dtype):
        if bias is None:
            return self.xp.zeros(1, dtype), False
        return self.contiguous(bias, dtype), True

    def _splits(self, tiles, k):
        """How many slices of K (and the slice length) give about two blocks per SM.

        Rounded down: tiles * splits stays within the 2 * SMs resident blocks, so all run in
        one wave (rounding up left a second wave of a few blocks, the GPU idle but for them).
        """
        target = 2 * self.sm_count
        splits = 1
        if 0 < tiles < target:
            splits = min(max(1, target // tiles), max(1, k // self.min_k_per_split))
        k_split = _ceil_div(_ceil_div(k, splits), gemm.BK) * gemm.BK
        return _ceil_div(k, k_split) if k else 1, max(k_split, gemm.BK)

    # ---- GEMM --------------------------------------------------------------------------

    def _operand(self, a):
        """(C-contiguous array, transposed flag) with array.T == a when the flag is set."""
        if a.flags.c_contiguous:
            return a, 0
        if a.T.flags.c_contiguous:
            return a.T, 1
        return self.contiguous(a), 0

    def gemm(self, a, b, bias=None, relu=False, out=None, splits=None):
        """act(a @ b + bias) for 2-D a (M, K), b (K, N); transposed views cost no copy."""
        if a.ndim != 2 or b.ndim != 2 or a.shape[1] != b.shape[0]:
            raise ValueError(f"matmul: shapes {a.shape} and {b.shape} do not chain (need (M, K) @ (K, N))")
        xp = self.xp
        m, k = a.shape
        n = b.shape[1]
        dtype = np.result_type(a.dtype, b.dtype)
        if out is None:
            out = xp.empty((m, n), dtype)
        if self.gemm_library == "cublas":
            xp.matmul(a, b, out=out)
            if bias is not None or relu:
                self.bias_relu(out, bias, relu)
            return out
        a_c, trans_a = self._operand(a)
        b_c, trans_b = self._operand(b)
        tiles = _ceil_div(m, gemm.BM) * _ceil_div(n, gemm.BN)
        if splits is None:
            splits, k_split = self._splits(tiles, k)
        else:
            k_split = max(_ceil_div(_ceil_div(k, splits), gemm.BK) * gemm.BK, gemm.BK)
            splits = max(1, _ceil_div(k, k_split))
        grid = (_ceil_div(m, gemm.BM), _ceil_div(n, gemm.BN), splits)
        if splits == 1:
            bias_arr, has_bias = self._bias_or_dummy(bias, dtype)
            self.launch(gemm.matmul, grid, gemm.THREADS, a_c, b_c, out.reshape(1, m, n), trans_a, trans_b,
                        bias_arr, has_bias, bool(relu), k_split)
            return out
        partial = xp.empty((splits, m, n), dtype)
        dummy = xp.zeros(1, dtype)
        self.launch(gemm.matmul, grid, gemm.THREADS, a_c, b_c, partial, trans_a, trans_b,
                    dummy, False, False, k_split)
        self.column_sum(partial.reshape(splits, m * n), out.reshape(1, m * n), splits=1)
        if bias is not None or relu:
            self.bias_relu(out, bias, relu)
        return out

    def matmul(self, a, b):
        """a @ b for 2-D arrays."""
        return self.gemm(a, b)

    def bias_relu(self, y2, bias, relu):
        bias_arr, has_bias = self._bias_or_dummy(bias, y2.dtype)
        self.launch_flat(elementwise.bias_relu, y2.size, y2, bias_arr, has_bias, relu)

    # ---- reductions --------------------------------------------------------------------

    def column_sum(self, a, out, splits=None):
        """out[0] = a.sum(axis=0) for a (R, C); two passes when the rows are split over blocks."""
        rows, cols = a.shape
        col_blocks = _ceil_div(cols, reduce.COLS_PER_BLOCK)
        block = (reduce.COLS_PER_BLOCK, reduce.ROWS_PER_BLOCK)
        if splits is None:
            splits = max(1, min(_ceil_div(2 * self.sm_count, col_blocks), _ceil_div(rows, 64)))
        if splits == 1:
            self.launch(reduce.column_sum, (col_blocks, 1), block, a, out)
            return out
        partial = self.xp.empty((splits, cols), a.dtype)
        self.launch(reduce.column_sum, (col_blocks, splits), block, a, partial)
        self.launch(reduce.column_sum, (col_blocks, 1), block, partial, out)
        return out

    def bias_grad(self, gy):
        """gb[c] = sum of gy over every axis but the last."""
        gy2 = self.contiguous(gy).reshape(-1, gy.shape[-1])
        out = self.xp.empty((1, gy2.shape[1]), gy.dtype)
        return self.column_sum(gy2, out).reshape(-1)

    # ---- convolution -------------------------------------------------------------------

    def _choose(self, key, workspace_bytes, candidates):
        """The conv algorithm for this shape: forced, or the faster of two timed runs (GPU)."""
        if self.conv_algorithm != "auto":
            return self.conv_algorithm
        if self.simulator or workspace_bytes > IM2COL_WORKSPACE_LIMIT:
            return "implicit"
        if key not in self._conv_choice:
            times = {name: self._time(run) for name, run in candidates.items()}
            self._conv_choice[key] = min(times, key=times.get)
        return self._conv_choice[key]

    def _time(self, run, repeats=3):
        run()  # compile and warm up
        start, stop = self.xp.cuda.Event(), self.xp.cuda.Event()
        start.record()
        for _ in range(repeats):
            run()
        stop.record()
        stop.synchronize()
        return self.xp.cuda.get_elapsed_time(start, stop)

    def conv2d_forward(self, x, w, b, stride, pads, relu, keep):
        """y = act(conv(x, w) + b) in NHWC; saved = (x, w, stride, pads, y if relu)."""
        x = self.contiguous(x)
        w = self.contiguous(w, x.dtype)
        n, h, wd, c = x.shape
        kh, kw, wc, co = w.shape
        if wc != c:
            raise ValueError(f"conv2d: input has {c} channels but the kernel {w.shape} expects {wc}")
        (sh, sw), (pt, pb, pl, pr) = stride, pads
        oh, ow = _out_size(h, kh, sh, pt, pb), _out_size(wd, kw, sw, pl, pr)
        m, k = n * oh * ow, kh * kw * c
        y = self.xp.empty((n, oh, ow, co), x.dtype)
        w2 = w.reshape(k, co)
        bias_arr, has_bias = self._bias_or_dummy(b, x.dtype)

        def implicit():
            grid = (_ceil_div(m, gemm.BM), _ceil_div(co, gemm.BN))
            self.launch(conv.conv2d_forward_implicit, grid, gemm.THREADS, x, w2, bias_arr,
                        y.reshape(1, m, co), has_bias, relu, kw, sh, sw, pt, pl, oh, ow)

        def im2col():
            cols = self.im2col(x, kh, kw, stride, pads, oh, ow)
            self.gemm(cols, w2, b, relu, out=y.reshape(m, co))

        algo = self._choose(("fwd", x.shape, w.shape, stride, pads), 4 * m * k,
                            {"implicit": implicit, "im2col": im2col})
        (implicit if algo == "implicit" else im2col)()
        saved = (x, w, stride, pads, y if relu else None) if keep else None
        return y, saved

    def im2col(self, x, kh, kw, stride, pads, oh, ow):
        n, _, _, c = x.shape
        cols = self.xp.empty((n * oh * ow, kh * kw * c), x.dtype)
        self.launch_flat(conv.im2col, cols.size, x, cols, kh, kw, stride[0], stride[1], pads[0], pads[2],
                         oh, ow)
        return cols

    def conv2d_backward(self, gy, saved, need_x, need_w, need_b):
        """(gx, gw, gb) of conv2d_forward, each None unless asked for."""
        x, w, stride, pads, y_relu = saved
        gy = self.contiguous(gy, x.dtype)
        if y_relu is not None:
            gy = self.relu_backward(gy, y_relu)
        n, h, wd, c = x.shape
        kh, kw, _, co = w.shape
        _, oh, ow, _ = gy.shape
        (sh, sw), (pt, _, pl, _) = stride, pads
        m, k = n * oh * ow, kh * kw * c
        gy2 = gy.reshape(m, co)
        gx = gw = gb = None
        if need_b:
            gb = self.bias_grad(gy2)
        if need_w:
            gw = self.xp.empty((kh, kw, c, co), x.dtype)

            def implicit():
                splits, m_split = self._splits(_ceil_div(k, gemm.BM) * _ceil_div(co, gemm.BN), m)
                grid = (_ceil_div(k, gemm.BM), _ceil_div(co, gemm.BN), splits)
                target = gw.reshape(1, k, co) if splits == 1 else self.xp.empty((splits, k, co), x.dtype)
                self.launch(conv.conv2d_backward_weights_implicit, grid, gemm.THREADS, x, gy2, target,
                            kw, sh, sw, pt, pl, ow, m_split)
                if splits > 1:
                    self.column_sum(target.reshape(splits, k * co), gw.reshape(1, k * co), splits=1)

            def im2col():
                cols = self.im2col(x, kh, kw, stride, pads, oh, ow)
                self.gemm(cols.T, gy2, out=gw.reshape(k, co))

            algo = self._choose(("bww", x.shape, w.shape, stride, pads), 4 * m * k,
                                {"implicit": implicit, "im2col": im2col})
            (implicit if algo == "implicit" else im2col)()
        if need_x:
            gx = self.xp.empty(x.shape, x.dtype)

            def implicit():
                grid = (_ceil_div(n * h * wd, gemm.BM), _ceil_div(c, gemm.BN))
                self.launch(conv.conv2d_backward_data_implicit, grid, gemm.THREADS, gy2,
                            w.reshape(kh * kw, c, co), gx.reshape(1, n * h * wd, c), kw, h, wd, sh, sw, pt, pl,
                            oh, ow)

            def im2col():
                gcols = self.gemm(gy2, w.reshape(k, co).T)
                self.launch_flat(conv.col2im, gx.size, gcols, gx, kh, kw, sh, sw, pt, pl, oh, ow)

            algo = self._choose(("bwd", x.shape, w.shape, stride, pads), 4 * m * k,
                                {"implicit": implicit, "im2col": im2col})
            (implicit if algo == "implicit" else im2col)()
        return gx, gw, gb

    # ---- pooling -----------------------------------------------------------------------

    def max_pool_forward(self, x, pool, stride, pads, keep):
        x = self.contiguous(x)
        n, h, wd, c = x.shape
        (ph, pw), (sh, sw), (pt, pb, pl, pr) = pool, stride, pads
        oh, ow = _out_size(h, ph, sh, pt, pb), _out_size(wd, pw, sw, pl, pr)
        y = self.xp.empty((n, oh, ow, c), x.dtype)
        argmax = self.xp.empty((n, oh, ow, c), np.int32)
        self.launch_flat(pool_kernels.max_pool_forward, y.size, x, y, argmax, ph, pw, sh, sw, pt, pl)
        return y, ((argmax, x.shape, x.dtype, pool, stride, pads) if keep else None)

    def max_pool_backward(self, gy, saved):
        argmax, x_shape, dtype, (ph, pw), (sh, sw), (pt, _, pl, _) = saved
        gx = self.xp.empty(x_shape, dtype)
        self.launch_flat(pool_kernels.max_pool_backward, gx.size, self.contiguous(gy, dtype), argmax, gx,
                         ph, pw, sh, sw, pt, pl)
        return gx

    # ---- elementwise -------------------------------------------------------------------

    def relu(self, x):
        x = self.contiguous(x)
        y = self.xp.empty_like(x)
        self.launch_flat(elementwise.relu, x.size, x.reshape(-1), y.reshape(-1))
        return y

    def relu_backward(self, gy, y):
        gy = self.contiguous(gy)
        gx = self.xp.empty_like(gy)
        self.launch_flat(elementwise.relu_backward, gy.size, gy.reshape(-1),
                         self.contiguous(y).reshape(-1), gx.reshape(-1))
        return gx

    # ---- loss --------------------------------------------------------------------------

    def _labels_and_weights(self, labels, weights, dtype):
        labels = self.contiguous(self.xp.asarray(labels), np.int32)
        if weights is None:
            return labels, self.xp.zeros(1, dtype), False
        return labels, self.contiguous(self.xp.asarray(weights), dtype), True

    def softmax_cross_entropy(self, logits, labels, weights):
        """(per-sample loss -log softmax(logits)[label] * weights[label], softmax probabilities)."""
        logits = self.contiguous(logits)
        labels, weights, has_weights = self._labels_and_weights(labels, weights, logits.dtype)
        loss_out = self.xp.empty(logits.shape[0], logits.dtype)
        probs = self.xp.empty_like(logits)
        self.launch_flat(loss_kernels.softmax_cross_entropy, logits.shape[0], logits, labels, weights,
                         has_weights, loss_out, probs)
        return loss_out, probs

    def softmax_cross_entropy_backward(self, probs, labels, weights, scale):
        probs = self.contiguous(probs)
        labels, weights, has_weights = self._labels_and_weights(labels, weights, probs.dtype)
        grad = self.xp.empty_like(probs)
        self.launch_flat(loss_kernels.softmax_cross_entropy_backward, probs.size, probs, labels, weights,
                         has_weights, float(scale), grad)
        return grad

    # ---- dropout and optimizers --------------------------------------------------------

    def dropout_mask(self, shape, rate, seed, offset, dtype):
        """mask = 1/(1-rate) where kept, 0 where dropped; identical on every device for (seed, offset)."""
        if not 0.0 <= rate < 1.0:
            raise ValueError(f"dropout rate must be in [0, 1), got {rate}")
        mask = self.xp.empty(shape, dtype)
        self.launch_flat(elementwise.dropout_mask, mask.size, np.uint64(seed), np.uint64(offset),
                         float(rate), 1.0 / (1.0 - rate), mask.reshape(-1))
        return mask

    def _check_in_place(self, *arrays):
        for a in arrays:
            if not a.flags.c_contiguous:
                raise ValueError(f"optimizer update: parameter and state arrays must be C-contiguous "
                                 f"(updated in place), got one of shape {a.shape} with strides {a.strides}")

    def sgd_update(self, p, g, v, lr, momentum, nesterov, weight_decay):
        self._check_in_place(p, v)
        g = self.contiguous(g, p.dtype)
        self.launch_flat(elementwise.sgd_update, p.size, p.reshape(-1), g.reshape(-1), v.reshape(-1),
                         float(lr), float(momentum), bool(nesterov), float(weight_decay))

    def adam_update(self, p, g, m, v, step, lr, beta1, beta2, eps):
        self._check_in_place(p, m, v)
        alpha = lr * math.sqrt(1 - beta2 ** step) / (1 - beta1 ** step)
        self.launch_flat(elementwise.adam_update, p.size, p.reshape(-1),
                         self.contiguous(g, p.dtype).reshape(-1), m.reshape(-1), v.reshape(-1),
                         float(alpha), float(beta1), float(beta2), float(eps))


def settings_from_env() -> dict:
    """MINICNN_GEMM (ours | cublas) and MINICNN_CONV_ALGO (auto | implicit | im2col)."""
    return {"gemm_library": os.environ.get("MINICNN_GEMM", "ours"),
            "conv_algorithm": os.environ.get("MINICNN_CONV_ALGO", "auto")}
