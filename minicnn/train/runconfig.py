"""The run configuration stored in every checkpoint of ``minicnn train``, compared on ``--resume``.

``run_config(args)`` (the command line's settings) goes into each checkpoint's info as
"run". ``check_resume`` compares it with the command line of a resumed run and refuses
a setting that changed (naming it with both values), unless ``--allow-changed`` names
it; settings in NEUTRAL (paths, verbosity, the epoch count: more epochs continue what an
uninterrupted run with more epochs computes) may change freely. ``apply_changes`` puts an
allowed new learning rate or momentum into the restored optimizer, whose state still
holds the old one.
"""

from __future__ import annotations

import argparse
import sys

# settings that may change on --resume without changing what training computes
NEUTRAL = {"verbose", "out", "resume", "overwrite", "allow_changed", "data", "epochs", "checkpoint_minutes"}


class RunDirError(ValueError):
    """The run folder or the command line does not allow this run (one line for the user)."""


def run_config(args: argparse.Namespace) -> dict:
    """The settings of this run (JSON-able), stored in every checkpoint's info as "run"."""
    return {k: v for k, v in sorted(vars(args).items())
            if k not in ("run", "command") and (v is None or isinstance(v, (str, int, float, bool, list)))}


def stored_config(path: str) -> dict | None:
    """The "run" settings in a checkpoint's info (None for a checkpoint written before they were stored)."""
    from minicnn.io.checkpoint import decode_tree
    from minicnn.io.keras_h5 import open_h5

    with open_h5(path) as f:
        if "state" not in f or "info" not in f["state"]:
            return None
        info = decode_tree(f["state"]["info"])
    run = info.get("run") if isinstance(info, dict) else None
    return run if isinstance(run, dict) else None


def allowed_changes(args: argparse.Namespace) -> set[str]:
    return {a.strip().lstrip("-").replace("-", "_") for item in args.allow_changed for a in item.split(",")
            if a.strip()}


def check_resume(args: argparse.Namespace, checkpoint: str) -> dict:
    """Refuse settings that differ from the checkpoint's run (naming each with both values) unless
    allowed with --allow-changed; returns {setting: (old, new)} of the allowed changes."""
    stored = stored_config(checkpoint)
    if stored is None:
        print(f"minicnn: warning: {checkpoint} does not record its run's settings; make sure this command "
              f"line matches the interrupted one", file=sys.stderr)
        return {}
    now = run_config(args)
    allowed = allowed_changes(args)
    unknown = sorted(allowed - set(now))
    if unknown:
        raise RunDirError(f"--allow-changed: unknown setting(s) {unknown}; settings are "
                          f"{sorted(set(now) - NEUTRAL)}")
    changed = {k: (stored.get(k), now.get(k)) for k in sorted(set(stored) | set(now))
               if k not in NEUTRAL and stored.get(k) != now.get(k)}
    refused = {k: v for k, v in changed.items() if k not in allowed}
    if refused:
        said = "; ".join(f"--{k.replace('_', '-')} was {old!r}, now {new!r}" for k, (old, new) in refused.items())
        raise RunDirError(f"--resume: {said} (the run in {checkpoint} used the old value"
                          f"{'s' if len(refused) > 1 else ''}): resuming would no longer equal an uninterrupted "
                          f"run; give the old value{'s' if len(refused) > 1 else ''}, or pass --allow-changed "
                          f"{','.join(refused)} to continue with the new")
    for k, (old, new) in changed.items():
        print(f"minicnn: note: --{k.replace('_', '-')} changed on resume ({old!r} -> {new!r}), as allowed",
              file=sys.stderr)
    return changed


def apply_changes(changed: dict):
    """A function for fit(after_resume=...) that puts allowed new learning rates / momentum into the
    optimizer, whose restored state holds the old ones (scaled per group, so a two-phase x0.1 is kept)."""
    def apply(trainer) -> None:
        for key, group_key in (("lr", "lr"), ("momentum", "momentum")):
            if key in changed:
                old, new = changed[key]
                for group in trainer.optimizer.param_groups:
                    if group_key in group:
                        group[group_key] = group[group_key] * new / old if key == "lr" and old else new
                        if key == "lr":
                            group["initial_lr"] = new
    return apply
