"""Data-parallel fit(): N ranks compute what one process with the same global batch computes.

One step of a global batch of B samples (positions order[b*B:(b+1)*B] of the
epoch's shuffled order, drawn from the same seed on every rank):

    rank r takes the contiguous slice [lo_r, hi_r) of it, n_r = hi_r - lo_r samples
    L = (1/B) sum_i l_i = sum_r (n_r / B) * mean_{i in r} l_i
    so  dL/dw = sum_r (n_r / B) * g_r,   g_r the gradient of rank r's local mean loss

which is one Allreduce(SUM) of the scaled local gradients: exact up to the order
float32 additions happen in, and right for a last partial batch and for slices of
unequal size. A dropout mask is drawn per element of the *global* batch
(``minicnn.random.batch_offset`` = lo_r), so masks do not depend on N; the
DataLoader's augmentation is already a function of (seed, epoch, sample).

Gradients travel in flat buckets of ~25 MB (one Allreduce each, not one per
parameter: VGG16's last block is 8 tensors but the head's kernel alone is 25 MB);
frozen parameters are never sent. They are summed after backward: starting a
non-blocking Iallreduce during backward did not pay in benchmarks/distributed.py.
Each step also gathers the batch's labels, predictions and loss (a few hundred
bytes), so the epoch's totals and mid-epoch checkpoints are those of one process.

Validation: rank r evaluates whole batches r, r + N, ... of the single-process
order, so every logit is the one a single process computes, and the confusion
matrices, summed, give exactly its metrics.
"""

from __future__ import annotations

import signal
import threading

import numpy as np

from minicnn import distributed as dist
from minicnn import random as mrandom

BUCKET_BYTES = dist.BUCKET_BYTES
STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM)


def shard_bounds(n: int, size: int, rank: int) -> tuple[int, int]:
    """[lo, hi) of rank ``rank``'s contiguous part of n samples: the first n % size ranks take one more."""
    base, extra = divmod(n, size)
    lo = rank * base + min(rank, extra)
    return lo, lo + base + (1 if rank < extra else 0)


def confusion(y_true: np.ndarray, y_pred: np.ndarray, classes: int) -> np.ndarray:
    """counts[t, p] = how many samples of class t were predicted p."""
    counts = np.zeros((classes, classes), np.int64)
    np.add.at(counts, (np.asarray(y_true, np.int64), np.asarray(y_pred, np.int64)), 1)
    return counts


def pairs_from_confusion(counts: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(y_true, y_pred) with the given confusion counts: every count-based metric equals the original's."""
    t, p = np.nonzero(counts)
    reps = counts[t, p]
    return np.repeat(t, reps).astype(np.int64), np.repeat(p, reps).astype(np.int64)


class GradientBuckets:
    """Sum ``scale * grad`` of the trainable parameters over all ranks, in flat buckets."""

    def __init__(self, bucket_bytes: int = BUCKET_BYTES):
        self.bucket_bytes = bucket_bytes
        self._key: tuple = ()
        self._buckets: list[tuple[list, np.ndarray]] = []

    def _build(self, params: list) -> None:
        self._buckets = [(b, np.empty(sum(int(np.prod(p.shape)) for _, p in b), b[0][1].dtype))
                         for b in dist.plan_buckets(params, self.bucket_bytes)]
        self._key = tuple((n, p.shape) for n, p in params)

    def reduce(self, params: list, scale: float) -> None:
        """params: [(name, Parameter)] of the trainable ones; their .grad becomes the sum over ranks."""
        if tuple((n, p.shape) for n, p in params) != self._key:      # first step, or UnfreezeAt
            self._build(params)
        for bucket, flat in self._buckets:
            pos = 0
            for _, p in bucket:              # flat[piece] = scale * grad, written once
                size = int(np.prod(p.shape))
                piece = flat[pos:pos + size]
                if p.grad is None:
                    piece[:] = 0
                else:
                    np.multiply(np.asarray(p.grad).reshape(-1), scale, out=piece)
                pos += size
            if dist.world_size() > 1:
                dist._comm.Allreduce(dist._in_place(), flat)
            pos = 0
            for _, p in bucket:              # views into the bucket: valid until the next step's reduce
                size = int(np.prod(p.shape))
                p.grad = flat[pos:pos + size].reshape(p.shape)
                pos += size


class DataParallel:
    """What fit() asks of the ranks: a synchronised start, shards, gradient sums, reduced metrics."""

    def __init__(self, bucket_bytes: int = BUCKET_BYTES):
        self.rank, self.size = dist.rank(), dist.world_size()
        self.buckets = GradientBuckets(bucket_bytes)
        self.n_local, self.n_global = 0, 0
        self._nccl = None
        self._pending: list[int] = []           # signals received here, not yet told to the others
        self._held = None

    # ---- start -------------------------------------------------------------------------
    def start(self, model, optimizer, sizes: list[int], settings: dict) -> None:
        """Check the ranks agree, then give every rank rank 0's weights, optimizer and random state.
        sizes: the global batch sizes of an epoch."""
        params = list(model.named_parameters())
        groups = [{k: v for k, v in g.items() if k != "names"} for g in optimizer.state_dict()["groups"]]
        dist.check_same("the training settings", {
            **settings, "batches": sizes, "optimizer settings": groups,
            "parameters": [[n, list(p.shape), str(p.dtype), bool(p.trainable)] for n, p in params]})
        if min(sizes) < self.size:
            n, where = sum(sizes), ("the last batch" if sizes[-1] < sizes[0] else "each batch")
            raise dist.DistributedError(
                f"{self.size} ranks but {where} holds only {min(sizes)} samples ({n} samples, global "
                f"batch {sizes[0]}): every rank needs at least one sample of every batch -- use at most "
                f"{min(sizes)} ranks, or a batch size that leaves a last batch of at least {self.size}")
        arrays = dist.broadcast([np.ascontiguousarray(p.numpy()) for _, p in params])
        for (_, p), a in zip(params, arrays):
            p.data[...] = a if isinstance(p.data, np.ndarray) else _to_gpu(a)
            p.mark_changed()    # written in place: cached transforms of the old weights are stale
        self._broadcast_optimizer(optimizer)
        state = dist.broadcast(mrandom.get_state())
        mrandom.set_state(state)

    def _broadcast_optimizer(self, optimizer) -> None:
        saved = optimizer.state_dict()
        layout = dist.broadcast({"type": saved["type"], "groups": saved["groups"],
                                 "state": {k: {b: (v if b == "step" else None) for b, v in e.items()}
                                           for k, e in saved["state"].items()}})
        mine = saved["state"]
        for key in sorted(layout["state"]):
            for b in sorted(layout["state"][key]):
                if b == "step":
                    continue
                local = mine.get(key, {}).get(b)
                sent = dist.broadcast(np.ascontiguousarray(local) if local is not None else np.empty(0))
                layout["state"][key][b] = sent
        optimizer.load_state_dict(layout)

    # ---- batches -------------------------------------------------------------------------
    def batches(self, source, batch_size: int, shuffle: bool, epoch: int, start: int = 0):
        """This rank's slice of every global batch from batch ``start`` on: (indices, x, y). Sets
        the dropout offset, and ``source.cursor`` to the global batch count (what a checkpoint
        stores, so it resumes under any number of ranks)."""
        for b, (positions, fetch) in enumerate(source.plan(batch_size, shuffle, epoch, start), start=start):
            lo, hi = shard_bounds(len(positions), self.size, self.rank)
            mrandom.set_batch_offset(lo)
            try:
                batch = fetch(positions[lo:hi])
                if batch is None:
                    raise dist.DistributedError(f"rank {self.rank}: none of the images of its slice of batch "
                                                f"{b + 1} (positions {positions[lo:hi].tolist()[:8]}) can be "
                                                f"read; remove the unreadable files or use fewer ranks")
                source.cursor = b + 1
                self.n_local = len(batch[2])
                yield batch
            finally:
                mrandom.set_batch_offset(0)

    def gather_batch(self, loss_value: float, y: np.ndarray, pred: np.ndarray, signals=None):
        """(mean loss, labels, predictions) of the whole global batch, in single-process order, on
        every rank (one small Allgather). It also carries a SIGINT / SIGTERM that reached any rank:
        every rank then stops after this same batch (fit's at_boundary), and rank 0 checkpoints."""
        self._hold_signals(signals)
        received = self._pending[0] if self._pending else None
        parts = dist.allgather([loss_value * len(y), np.asarray(y).tolist(), np.asarray(pred).tolist(), received])
        self.n_global = sum(len(part[1]) for part in parts)
        stops = [part[3] for part in parts if part[3] is not None]
        if stops and signals is not None:       # agreed: fit's at_boundary stops every rank here
            signals.received = stops[0]
            dist.stopping_together()
        y_all = np.concatenate([np.asarray(part[1], np.int64) for part in parts])
        pred_all = np.concatenate([np.asarray(part[2], np.int64) for part in parts])
        return sum(part[0] for part in parts) / self.n_global, y_all, pred_all

    def _hold_signals(self, signals) -> None:
        """Catch SIGINT / SIGTERM ourselves while fit's StopSignals is active (its __exit__ puts the
        handlers back): a signal only counts once the next gather_batch has told every rank, so no
        rank stops alone. A second signal stops this rank at once (and MPI_Abort ends the job)."""
        if signals is None or self._held is signals or threading.current_thread() is not threading.main_thread():
            return
        def handle(signum, frame):
            if self._pending:
                raise KeyboardInterrupt(f"{signal.Signals(signum).name} again: stopped at once")
            self._pending.append(signum)

        self._held = signals
        if signals.received is not None:
            self._pending.append(signals.received)
            signals.received = None
        for sig in STOP_SIGNALS:
            signal.signal(sig, handle)

    def fail(self, error: BaseException) -> None:
        """An error only this rank saw (a bad input batch): end the whole job, naming it."""
        dist.abort(f"failed with {type(error).__name__}: {error}")

    def average_gradients(self, params: list) -> None:
        """grad <- sum over ranks of (n_local / n_global) * grad: the global batch's gradient."""
        scale = self.n_local / self.n_global
        if params and params[0][1].device == "cuda":
            from minicnn.distributed.nccl import nccl_reduce
            self._nccl = nccl_reduce(params, scale, self._nccl)
            return
        self.buckets.reduce(params, scale)

    # ---- the frozen-prefix feature cache ---------------------------------------------------
    def share_cache(self, cache) -> None:
        """Give every rank the feature rows the others computed this epoch, so each rank's own
        cache (memory, or a file in its own folder) is complete after the first epoch: later
        epochs then skip the frozen prefix for every sample, whichever rank it lands on."""
        if cache is None or self.sums(float(cache.complete))[0] == self.size:
            return
        have = dist.allgather(np.flatnonzero(cache.filled).tolist())
        owner = np.full(cache.num_samples, -1)
        for r in reversed(range(self.size)):      # the lowest rank that has a row sends it
            owner[np.asarray(have[r], np.int64)] = r
        for r in range(self.size):
            idx = np.flatnonzero(owner == r)
            rows = dist.broadcast(np.ascontiguousarray(cache.get(idx)) if r == self.rank else np.empty(0), r)
            if r != self.rank and len(idx):      # not logged: a resume recomputes them where needed
                cache.rows[idx] = rows
                cache.filled[idx] = True

    # ---- metrics -----------------------------------------------------------------------------
    def labels(self, y_true: np.ndarray, y_pred: np.ndarray, classes: int) -> tuple[np.ndarray, np.ndarray]:
        """Every rank's (label, prediction) pairs as one set, via summed confusion matrices."""
        counts = dist.allreduce([confusion(y_true, y_pred, classes)])[0]
        return pairs_from_confusion(counts)

    def sums(self, *values: float) -> list[float]:
        """Sums of numbers over all ranks."""
        return [float(v) for v in dist.allreduce([np.array(values, np.float64)])[0]]

    def evaluate(self, trainer, source, k: int, cache, classes: int, run_inference) -> dict:
        """Loss, accuracy and (label, prediction) pairs over all ranks' validation batches
        (``run_inference``: fit's eval pass, run on this rank's batches)."""
        shard = _EvalShard(source, self.rank, self.size)
        signals, trainer.signals = trainer.signals, None     # a signal waits for the next training batch
        try:
            out = run_inference(trainer, shard, k, cache, with_loss=True) if shard.count(trainer.batch_size) \
                else {"loss": 0.0, "y_true": np.zeros(0, np.int64), "y_pred": np.zeros(0, np.int64)}
        finally:
            trainer.signals = signals
        total, seen = self.sums(out["loss"] * len(out["y_true"]), len(out["y_true"]))
        t, p = self.labels(out["y_true"], out["y_pred"], classes)
        return {"loss": total / max(seen, 1), "accuracy": float(np.mean(t == p)), "y_true": t, "y_pred": p}


class _EvalShard:
    """Batches rank, rank + size, ... of a source's unshuffled batches (whole batches, so every
    logit is computed as in a single process)."""

    def __init__(self, source, rank: int, size: int):
        self.source, self.rank, self.size = source, rank, size
        self.labels, self.indexable, self.augmented = source.labels, source.indexable, source.augmented

    def __len__(self) -> int:
        return len(self.source)

    def __getattr__(self, name: str):             # bad_files, class_names, ...: the source's
        return getattr(self.source, name)

    def count(self, batch_size: int) -> int:
        batches = sum(1 for _ in self.source.plan(batch_size, False))
        return len(range(self.rank, batches, self.size))

    def batches(self, batch_size: int, shuffle: bool = False, epoch: int = 0):
        for b, (positions, take) in enumerate(self.source.plan(batch_size, False, epoch)):
            if b % self.size == self.rank:
                batch = take(positions)
                if batch is not None:
                    yield batch


WRITERS = ("ModelCheckpoint", "CSVLogger", "ProgressBar")
_EVENTS = ("on_train_begin", "on_epoch_begin", "on_batch_end", "on_epoch_end", "on_train_end")


def attach(trainer, train_src, val_src, settings: dict):
    """Make ``trainer`` data-parallel when this process is one of several ranks (else None).

    On ranks other than 0 the callbacks that print or write (checkpoints, CSV, the
    progress bar) are silenced, and so are the trainer's messages. Every rank then gets
    rank 0's weights, optimizer state and random state.
    """
    sizes = [len(p) for p, _ in train_src.plan(trainer.batch_size, False)]
    trainer.sampler = {"samples": sum(sizes), "global_batch": sizes[0], "batches": len(sizes)}
    if trainer.resumed_sampler and trainer.resumed_sampler != trainer.sampler:
        raise ValueError(f"the checkpoint to resume from was written for {trainer.resumed_sampler} (training "
                         f"samples, global batch size, batches per epoch); this run has {trainer.sampler}: "
                         f"resume with the same training data and batch size (any number of ranks)")
    dist.init()
    if dist.world_size() == 1:
        return None
    par = DataParallel()
    if not dist.is_main():
        trainer.verbose = 0
        for cb in trainer.callbacks:
            if type(cb).__name__ in WRITERS:
                for event in _EVENTS:
                    setattr(cb, event, _nothing)
    if trainer.cache_dir is not None:            # per-rank feature caches: no rank opens another's file
        import os
        trainer.cache_dir = os.path.join(os.fspath(trainer.cache_dir), f"rank{dist.rank()}")
    settings = {**settings, "callbacks": [type(cb).__name__ for cb in trainer.callbacks],
                "validation samples": len(val_src) if val_src is not None else 0}
    par.start(trainer.model, trainer.optimizer, sizes, settings)
    user_hook = trainer.grad_hook

    def hook(params):
        par.average_gradients(params)
        if user_hook is not None:
            user_hook(params)

    trainer.grad_hook = hook
    return par


def _nothing(*args, **kwargs) -> None:
    return None


def _to_gpu(a: np.ndarray):
    import cupy
    return cupy.asarray(a)
