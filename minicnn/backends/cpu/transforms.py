"""Transformed kernels kept between calls until their weights change.

A kernel's transform (Winograd's U = G w G^T) depends on nothing but the kernel, so an
eval pass or a frozen layer need not compute it again. An entry is keyed on the weight
array the caller passed (held weakly: the entry goes when the array does) and the
weight's version, which a Parameter changes on every optimizer update, load and
assignment (minicnn/nn/module.py). Without a version nothing is kept.
"""

from __future__ import annotations

import threading
import weakref


class TransformCache:
    """One transform per (weight array, kind), valid for one version of the weights."""

    def __init__(self):
        self._entries: dict = {}       # (id(w), kind) -> (weakref to w, version, transform)
        self._lock = threading.Lock()
        self.computed = 0              # transforms computed (tests count them)
        self.reused = 0

    def get(self, w, version, kind: str, compute):
        """The transform of ``w`` made by ``compute()``, reused while ``version`` is the stored one."""
        if version is None:
            self.computed += 1
            return compute()
        key = (id(w), kind)
        with self._lock:
            entry = self._entries.pop(key, None)
            if entry is not None and entry[0]() is w and entry[1] == version:
                self._entries[key] = entry
                self.reused += 1
                return entry[2]
        # the stale entry is dropped before computing, so the pool can hand its array out again
        del entry
        transform = compute()
        self.computed += 1
        ref = weakref.ref(w, lambda r, key=key: self._forget(key, r))
        with self._lock:
            self._entries[key] = (ref, version, transform)
        return transform

    def drop(self, w, kind: str) -> None:
        """Let go of the transform of ``w`` kept for ``kind``, if any."""
        with self._lock:
            entry = self._entries.get((id(w), kind))
            if entry is not None and entry[0]() is w:
                del self._entries[(id(w), kind)]

    def _forget(self, key, ref) -> None:
        with self._lock:
            entry = self._entries.get(key)
            if entry is not None and entry[0] is ref:
                del self._entries[key]

    def clear(self) -> None:
        with self._lock:
            self._entries.clear()


cache = TransformCache()
