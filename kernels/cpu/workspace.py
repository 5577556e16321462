"""Memory reuse for the CPU backend: scratch buffers and recycled outputs.

Touching fresh memory is slow on small VMs (a new 150 MB array costs about
twice as much to fill as one already mapped), and a VGG training step would
otherwise allocate and fault in hundreds of MB per batch. Two kinds of reuse:

* ``scratch(role, shape, dtype)``: one flat buffer per (role, dtype, calling
  thread), grown to the largest request and handed out as a view. It is valid
  only until the next request for the same role from the same thread, so only
  temporaries that never leave a backend call (im2col columns, masked
  gradients) may live there.
* ``output(shape, dtype)``: a fresh-looking array for a result that leaves the
  backend (an activation, a gradient). A pooled array is handed out again
  only when nothing but the pool refers to it -- no Tensor, no autograd
  record, no view (a view holds its base) -- which ``sys.getrefcount`` tells
  exactly. So a returned output is never overwritten while anyone can see it.

Arrays created here never import or know about minicnn Tensors.
"""

from __future__ import annotations

import math
import sys
import threading
from collections import OrderedDict

import numpy as np


def _refs(arrays: list, i: int) -> int:
    """References to ``arrays[i]``; always measured through this one function."""
    return sys.getrefcount(arrays[i])


# What _refs reports for an array that only its pool list holds (calibrated
# rather than assumed, since interpreters differ in temporary references).
_ONLY_POOL = _refs([np.empty(1)], 0)


class Workspaces:
    """Scratch buffers by role and a pool of recyclable output arrays.

    ``max_free_bytes`` bounds the memory the pool keeps in arrays no one
    uses; beyond it the least recently used free arrays are dropped.
    """

    def __init__(self, max_free_bytes: int = 1 << 30):
        self.max_free_bytes = max_free_bytes
        self._scratch: dict = {}
        self._pool: OrderedDict = OrderedDict()   # (shape, dtype) -> [arrays]
        self._lock = threading.Lock()
        self.hits = 0
        self.misses = 0

    def scratch(self, role: str, shape: tuple, dtype) -> np.ndarray:
        """A C-contiguous view of ``shape`` into the buffer of ``role``; contents undefined."""
        dtype = np.dtype(dtype)
        size = math.prod(int(s) for s in shape)       # np.prod costs ~20 us a call
        key = (role, dtype.str, threading.get_ident())
        buf = self._scratch.get(key)
        if buf is None or buf.size < size:
            buf = np.empty(max(size, 1), dtype)
            self._scratch[key] = buf
        return buf[:size].reshape(shape)

    def output(self, shape: tuple, dtype) -> np.ndarray:
        """An array of ``shape`` that no one else references; contents undefined."""
        with self._lock:
            return self._output(shape, dtype)

    def _output(self, shape: tuple, dtype) -> np.ndarray:
        key = (tuple(int(s) for s in shape), np.dtype(dtype).str)
        arrays = self._pool.get(key)
        if arrays is not None:
            self._pool.move_to_end(key)
            for i in range(len(arrays)):
                if _refs(arrays, i) <= _ONLY_POOL:
                    self.hits += 1
                    return arrays[i]
        self.misses += 1
        self._trim(math.prod(key[0]) * np.dtype(dtype).itemsize)
        a = np.empty(key[0], dtype)
        self._pool.setdefault(key, []).append(a)
        return a

    def free_bytes(self) -> int:
        """Bytes held in pooled arrays that nothing outside the pool references."""
        total = 0
        for arrays in self._pool.values():
            for i in range(len(arrays)):
                if _refs(arrays, i) <= _ONLY_POOL:
                    total += arrays[i].nbytes
        return total

    def _trim(self, incoming: int) -> None:
        """Drop free pooled arrays, least recently used first, to stay under the bound."""
        excess = self.free_bytes() + incoming - self.max_free_bytes
        for key in list(self._pool):
            if excess <= 0:
                break
            arrays = self._pool[key]
            for i in reversed(range(len(arrays))):
                if excess > 0 and _refs(arrays, i) <= _ONLY_POOL:
                    excess -= arrays.pop(i).nbytes
            if not arrays:
                del self._pool[key]

    def clear(self) -> None:
        """Forget every buffer (arrays still referenced elsewhere stay valid)."""
        self._scratch.clear()
        self._pool.clear()
