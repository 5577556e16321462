"""minicnn.cli's registry imports this module for its ``COMMANDS`` (train, evaluate, predict)."""

from minicnn.train.cli_commands import COMMANDS

__all__ = ["COMMANDS"]
