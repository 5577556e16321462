"""The run folder (``--out``) of ``minicnn train``: checked before it is touched, locked while used.

What ``minicnn train`` does, in this order, so that a failed or repeated run never
leaves ``--out`` inconsistent (an old ``best.h5`` beside a new ``split.csv`` would
leak test images into a later ``evaluate``):

1. ``guard`` takes the folder's lock (``OUT/.minicnn.lock``: the owner's pid, host
   and start time, held with ``flock`` so a killed owner's lock is free at once and
   is taken over), then checks the folder: writable, and not holding another run's
   checkpoints unless ``--resume`` or ``--overwrite``;
2. the data set (``ImageFolder`` refuses fewer than 2 classes), the split (``data.split``
   refuses an empty part), the model and, on ``--resume``, the stored run configuration
   (``check_resume``) are checked;
3. only then ``start`` writes ``split.csv`` (and with ``--overwrite`` removes the
   old run's files), and training begins.

Exit status of a guarded run: 0 done, 1 stopped (non-finite loss), 2 bad input,
74 a write failed (disk full, read-only), 130 Ctrl-C, 143 SIGTERM; after 130 and
143 the checkpoint holds the last finished batch and ``--resume`` continues.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import signal
import socket
import sys
import tempfile
import time
import warnings

try:
    import fcntl
except ImportError:  # Windows: no flock; the lock file alone (pid check) guards the folder
    fcntl = None

from minicnn.io.storage import StorageError, atomic_write_text, storage_error
from minicnn.train.runconfig import RunDirError, apply_changes, check_resume, run_config  # noqa: F401 (API)
from minicnn.train.state import Interrupted

LOCK_NAME = ".minicnn.lock"
CHECKPOINTS = ("last.h5", "best.h5")
RUN_FILES = (*CHECKPOINTS, "history.csv", "split.csv", "bad_images.txt")
EXIT_STORAGE, EXIT_SIGINT, EXIT_SIGTERM = 74, 130, 143
MIN_IMAGE_SIZE = 32    # vgg16 and tiny both pool five times


def add_arguments(p: argparse.ArgumentParser) -> None:
    """The options of ``minicnn train`` this module acts on."""
    p.add_argument("--overwrite", action="store_true",
                   help="replace the run already in --out (its checkpoints, history and split)")
    p.add_argument("--allow-changed", action="append", default=[], metavar="SETTING[,SETTING]",
                   help="with --resume: accept these changed settings (e.g. lr) although the result then "
                        "differs from an uninterrupted run")
    p.add_argument("--checkpoint-minutes", type=float, default=None,
                   help="also checkpoint within an epoch every this many minutes (default "
                        "$MINICNN_CHECKPOINT_MINUTES, else 10; 0: after every batch)")


# ---- the lock -------------------------------------------------------------------------------

class RunLock:
    """``OUT/.minicnn.lock``: JSON {pid, host, started}; exclusive while the owner lives."""

    def __init__(self, out: str):
        self.out = os.path.abspath(out)
        self.path = os.path.join(self.out, LOCK_NAME)
        self.fd: int | None = None
        self.created_out = False
        self.took_over: dict | None = None

    def acquire(self) -> RunLock:
        if os.path.exists(self.out) and not os.path.isdir(self.out):
            raise RunDirError(f"--out {self.out} is a file, not a folder")
        self.created_out = not os.path.isdir(self.out)
        try:
            os.makedirs(self.out, exist_ok=True)
            while True:
                fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
                self._lock(fd)
                # the owner that removed the file may have done so after we opened it: retry then
                if os.path.exists(self.path) and os.stat(self.path).st_ino == os.fstat(fd).st_ino:
                    break
                os.close(fd)
        except OSError as err:
            self._forget_created()
            raise storage_error(err, self.path) or err
        self.fd = fd
        previous = _read_owner(fd)
        if previous and previous.get("pid") != os.getpid():
            self.took_over = previous        # its owner died without removing it (SIGKILL, power cut)
        owner = json.dumps({"pid": os.getpid(), "host": socket.gethostname(), "started": time.time()})
        os.ftruncate(fd, 0)
        os.pwrite(fd, owner.encode(), 0)
        return self

    def _lock(self, fd: int) -> None:
        """Lock ``fd`` or close it and raise RunDirError naming the owner."""
        if fcntl is not None:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                return
            except BlockingIOError:
                pass
        owner = _read_owner(fd)
        if fcntl is None and not (owner and _alive(owner)):
            return
        os.close(fd)
        who = (f"pid {owner.get('pid')} on {owner.get('host')}, started "
               f"{time.strftime('%Y-%m-%d %H:%M:%S', time.localtime(owner.get('started', 0)))}") \
            if owner else "another process"
        raise RunDirError(f"{self.out} is in use by another run ({who}; lock file {self.path}): wait for it "
                          f"to finish or choose another --out")

    def release(self, remove_out_if_empty: bool = True) -> None:
        if self.fd is None:
            return
        try:
            os.remove(self.path)             # while still holding it, so nobody locks a dead file
        except OSError:
            pass
        os.close(self.fd)
        self.fd = None
        if remove_out_if_empty:
            self._forget_created()

    def _forget_created(self) -> None:
        if self.created_out and os.path.isdir(self.out) and not os.listdir(self.out):
            os.rmdir(self.out)


def _read_owner(fd: int) -> dict | None:
    try:
        owner = json.loads(os.pread(fd, 4096, 0).decode() or "null")
    except (ValueError, UnicodeDecodeError):
        return None
    return owner if isinstance(owner, dict) else None


def _alive(owner: dict) -> bool:
    if owner.get("host") != socket.gethostname():
        return True                           # cannot tell: assume it runs
    try:
        os.kill(int(owner.get("pid", -1)), 0)
    except (OSError, ValueError):
        return False
    return True


# ---- checks before anything is written --------------------------------------------------------

def check_folder(out: str, resume: bool, overwrite: bool) -> None:
    """Writable, and not another run's folder (unless --resume / --overwrite)."""
    if resume and overwrite:
        raise RunDirError("--resume and --overwrite contradict each other: continue the run in --out, or "
                          "replace it")
    found = [name for name in CHECKPOINTS if os.path.exists(os.path.join(out, name))]
    if found and not (resume or overwrite):
        raise RunDirError(f"{out} already holds a run ({', '.join(found)}): pass --resume to continue it, "
                          f"--overwrite to replace it, or choose another --out")
    if resume and not found:
        raise RunDirError(f"--resume: no checkpoint {os.path.join(out, 'last.h5')} to continue from")
    try:                                      # a probe file: read-only mounts say so even to root
        fd, probe = tempfile.mkstemp(prefix=".minicnn-probe.", dir=out)
        os.close(fd)
        os.remove(probe)
    except OSError as err:
        raise storage_error(err, os.path.join(out, "last.h5")) or err


def resume_point(out: str) -> str:
    """The checkpoint --resume continues from: last.h5, else best.h5.

    At an epoch's end best.h5 is written before last.h5; a run killed between the two
    (in its first epoch there is no older last.h5) leaves best.h5 alone, itself a
    complete checkpoint of that epoch.
    """
    last = os.path.join(out, "last.h5")
    return last if os.path.exists(last) else os.path.join(out, "best.h5")


def remove_temporary_files(folder: str, names) -> None:
    """Delete the temporary files (``.<name>.*.tmp``) that a killed atomic write of ``names`` left."""
    if not os.path.isdir(folder):
        return
    for entry in os.listdir(folder):
        base = entry[1:].rsplit(".", 2)[0] if entry.startswith(".") and entry.endswith(".tmp") else None
        if base is not None and (base in names or names == "*"):
            os.remove(os.path.join(folder, entry))


def check_batch(train, batch_size: int) -> None:
    """Warn when the training part is smaller than one batch (``data.split`` has refused an empty
    part and a class missing from training, and warned about a class missing from val/test)."""
    if len(train) < batch_size:
        warnings.warn(f"the training part has {len(train)} images, fewer than --batch-size {batch_size}: "
                      f"each epoch is a single batch", UserWarning, stacklevel=2)


def check_numbers(args: argparse.Namespace) -> None:
    """Command-line numbers that cannot work, named with the value given."""
    rules = [("batch_size", args.batch_size >= 1, "at least 1"), ("epochs", args.epochs >= 1, "at least 1"),
             ("lr", math.isfinite(args.lr) and args.lr > 0, "a positive finite number"),
             ("momentum", math.isfinite(args.momentum) and 0 <= args.momentum < 1, "in [0, 1)"),
             ("image_size", args.image_size >= 1, "a positive number of pixels"),
             ("patience", args.patience >= 0, "0 (off) or more"),
             ("checkpoint_minutes", args.checkpoint_minutes is None or
              (math.isfinite(args.checkpoint_minutes) and args.checkpoint_minutes >= 0), "0 or more")]
    for name, ok, expected in rules:
        if not ok:
            raise RunDirError(f"--{name.replace('_', '-')} must be {expected}, got {getattr(args, name)!r}")
    if args.image_size < MIN_IMAGE_SIZE:
        raise RunDirError(f"--image-size {args.image_size} is below what --model {args.model} takes: at least "
                          f"{MIN_IMAGE_SIZE} (five 2x2 poolings halve it five times)")


def start(out: str, overwrite: bool, split_file: str | None = None, parts=None) -> None:
    """The run is known to start: remove temporary files a killed run left, a replaced run's files
    (--overwrite), and write the split."""
    from minicnn.data import save_split

    remove_temporary_files(out, RUN_FILES)     # of writes a kill cut short
    if overwrite:
        for name in RUN_FILES:
            path = os.path.join(out, name)
            if os.path.exists(path):
                os.remove(path)
    if split_file is not None:
        try:
            save_split(split_file, parts)
        except OSError as err:
            raise storage_error(err, split_file) or err


def report_bad_files(out: str, bad_files: dict[str, str]) -> None:
    """Count the skipped unreadable images in the run's summary and list them in OUT/bad_images.txt."""
    if not bad_files:
        return
    from minicnn.data.loader import describe_bad_files

    path = os.path.join(out, "bad_images.txt")
    atomic_write_text(path, f"# {len(bad_files)} unreadable image(s), skipped\n"
                      + "".join(f"{p}\t{r}\n" for p, r in sorted(bad_files.items())))
    print(f"{len(bad_files)} unreadable image(s) skipped: {describe_bad_files(bad_files)} (listed in {path})",
          file=sys.stderr)


# ---- the guard --------------------------------------------------------------------------------

def guard(run):
    """Wrap ``train_run``: lock and check --out first; one line and an exit status for interruptions,
    failed writes and refused runs (see the module docstring)."""
    def wrapped(args: argparse.Namespace) -> int:
        lock = RunLock(args.out)
        try:
            lock.acquire()
            if lock.took_over:
                print(f"minicnn: note: took over the lock of a run that is gone (pid {lock.took_over.get('pid')} "
                      f"on {lock.took_over.get('host')})", file=sys.stderr)
            check_folder(args.out, args.resume, args.overwrite)
            check_numbers(args)
            return run(args)
        except RunDirError as err:
            print(f"minicnn: error: {err}", file=sys.stderr)
            return 2
        except StorageError as err:
            print(f"minicnn: error: {err}", file=sys.stderr)
            return EXIT_STORAGE
        except KeyboardInterrupt as err:
            signum = err.signum if isinstance(err, Interrupted) else signal.SIGINT
            where = f" {err.where}" if isinstance(err, Interrupted) and err.where else ""
            print(f"\n{signal.Signals(signum).name}: stopped{where}; continue with --resume", file=sys.stderr)
            return EXIT_SIGTERM if signum == signal.SIGTERM else EXIT_SIGINT
        finally:
            lock.release()
    return wrapped
