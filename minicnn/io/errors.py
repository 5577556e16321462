"""The one exception type of minicnn.io."""

from __future__ import annotations


class WeightsError(ValueError):
    """A weights or checkpoint file that cannot be used as asked.

    The message names the file, the layer and, for shape problems, the expected and
    the found shape. ``problems`` holds one line per problem found (all of them are
    collected before anything is assigned, so the model is never half-loaded).
    """

    def __init__(self, message: str, path: str | None = None, layer: str | None = None,
                 expected=None, found=None, problems: list[str] | None = None):
        super().__init__(message)
        self.path = path
        self.layer = layer
        self.expected = expected
        self.found = found
        self.problems = list(problems) if problems else [message]
