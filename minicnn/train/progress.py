"""``ProgressBar``: what fit() shows while it trains, as Keras' ``verbose=1``.

During an epoch a tqdm bar with the running loss, accuracy and images/s; at its end
the bar clears and the epoch's summary -- every metric, validation included -- is
printed as a line of its own, so it is seen whole at any terminal width and is all
there is in a log file, CI, or a pty that was never given a width.
"""

from __future__ import annotations

import os
import sys

from minicnn.train.callbacks import Callback


def _format(key: str, value: float) -> str:
    if key == "images_per_s":
        return f"{value:.1f} img/s"
    if key in ("time_s", "val_time_s"):
        return f"{value:.1f} s" if key == "time_s" else f"val {value:.1f} s"
    return f"{key} {value:.4f}"


def epoch_line(epoch: int, epochs: int, logs: dict) -> str:
    """"epoch 3/50 - loss 0.4120 - accuracy 0.8500 - 41.2 img/s - 12.3 s - val_loss ... - val 2.1 s"."""
    return f"epoch {epoch + 1}/{epochs} - " + " - ".join(_format(k, v) for k, v in logs.items() if k != "lr")


def _columns(stream) -> int:
    """The terminal's width (0 when it has none, as a pty that was never sized)."""
    try:
        return os.get_terminal_size(stream.fileno()).columns
    except (AttributeError, OSError, ValueError):
        return 80


class ProgressBar(Callback):
    """A tqdm bar during each epoch (loss, accuracy, images/s so far), then the epoch's
    summary on a line of its own, as Keras' ``verbose=1``: so validation metrics are
    seen at any terminal width.

    verbose=0: silent. When the stream is not a terminal (logs, CI), or a terminal
    too narrow to draw in (a pty of width 0), only the summary lines.
    """

    MIN_COLUMNS = 40
    BAR_FORMAT = "{desc} {percentage:3.0f}%|{bar}| {n_fmt}/{total_fmt} [{elapsed}<{remaining}{postfix}]"

    def __init__(self, verbose: int = 1, stream=None):
        self.verbose = verbose
        self.stream = stream or sys.stderr
        self.bar = None
        self.epochs = 0

    def on_train_begin(self, trainer):
        self.epochs = trainer.epochs

    def _interactive(self) -> bool:
        return (self.verbose > 0 and hasattr(self.stream, "isatty") and self.stream.isatty()
                and _columns(self.stream) >= self.MIN_COLUMNS)

    def on_epoch_begin(self, trainer, epoch):
        if self._interactive():
            from tqdm import tqdm
            # one images/s figure: ours (images so far / time so far), not tqdm's smoothed rate too
            self.bar = tqdm(total=trainer.samples_per_epoch, desc=f"epoch {epoch + 1}/{self.epochs}", unit="img",
                            file=self.stream, leave=False, dynamic_ncols=True, bar_format=self.BAR_FORMAT)

    def on_batch_end(self, trainer, batch, logs):
        if self.bar is not None:
            self.bar.update(logs["size"])
            self.bar.set_postfix_str(f"loss {trainer.running['loss']:.4f}, acc {trainer.running['accuracy']:.3f}, "
                                     f"{trainer.running['images_per_s']:.1f} img/s", refresh=False)

    def on_epoch_end(self, trainer, epoch, logs):
        if self.bar is not None:
            self.bar.close()               # leave=False: the bar clears, the summary line takes its place
            self.bar = None
        if self.verbose > 0:
            print(epoch_line(epoch, self.epochs, logs), file=self.stream, flush=True)
