"""Command line of the experiments: ``python -m minicnn.experiments thesis ...`` and
``minicnn experiments thesis ...`` (registered through minicnn.cli's COMMAND_MODULES)."""

from __future__ import annotations

import argparse
import sys


def add_thesis_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--dataset", required=True, choices=["ham10000", "xray"],
                   help="ham10000: Table 7.1; xray: Table 7.2")
    p.add_argument("--data", help="data set folder (HAM10000 root with HAM10000_metadata.csv, or the folder "
                                  "holding chest_xray/); optional with --quick (a stand-in is generated)")
    p.add_argument("--weights", help="Keras VGG16 notop weights file (default: the ImageNet file in "
                                     "$MINICNN_WEIGHTS or ~/.keras/models; none: random start, noted)")
    p.add_argument("--ham-weights", help="X-ray 'HAM10000 weights' column: a checkpoint of the HAM10000 'all' "
                                         "model (default: OUT/ham10000/models/all_seed0.h5)")
    p.add_argument("--out", default="runs/thesis", help="output folder")
    p.add_argument("--image-size", type=int, help="pixels per side (default 224; 32 with --quick)")
    p.add_argument("--seeds", type=int, help="runs per configuration (default 3; 1 with --quick)")
    p.add_argument("--epochs", type=int, help="maximum epochs (default 50; 2 with --quick)")
    p.add_argument("--patience", type=int, help="early stopping patience on val accuracy (default 5)")
    p.add_argument("--batch-size", type=int, help="default 32 (16 with --quick)")
    p.add_argument("--lr", type=float, help="SGD learning rate (default 1e-4, the thesis')")
    p.add_argument("--momentum", type=float, help="SGD momentum (default 0.9)")
    p.add_argument("--split-by", choices=["image", "group"], help="image (thesis, leaks near-duplicates) or "
                                                                  "group (lesion / patient)")
    p.add_argument("--augment", action=argparse.BooleanOptionalAction, default=None,
                   help="augment training images (default: on for HAM10000 as the thesis, off for X-ray)")
    p.add_argument("--preprocess", choices=["tf", "caffe", "torch"], help="pixel scaling (default tf = [-1, 1], "
                                                                          "the thesis'; caffe = Keras VGG16's)")
    p.add_argument("--model", choices=["vgg16", "tiny"], help="vgg16 (default) or tiny (quick runs)")
    p.add_argument("--columns", nargs="+", help="run only these columns (e.g. random all last_block); the "
                                                "extras 'features' and 'two_phase' run only when named here")
    p.add_argument("--baseline-size", type=int, help="pixels per side for tree baselines (default 28)")
    p.add_argument("--quick", action="store_true", help="tiny model, tiny generated stand-in, 2 epochs, 1 seed: "
                                                        "checks the pipeline in seconds")
    p.add_argument("--workers", type=int, help="image decoding threads (default 2)")
    p.add_argument("--verbose", type=int, default=1, help="0: quiet training")
    p.add_argument("--parallel", choices=["data", "configs"], default="data",
                   help="under mpiexec: data = each run data-parallel over all ranks (default); configs = "
                        "each rank trains whole runs alone, rank 0 writes the table")


def config_from_args(args: argparse.Namespace):
    from minicnn.experiments.thesis import ThesisConfig, quick_config

    names = ("data", "weights", "ham_weights", "out", "image_size", "seeds", "epochs", "patience", "batch_size",
             "lr", "momentum", "split_by", "augment", "preprocess", "model", "columns", "baseline_size",
             "workers", "verbose")
    given = {k: getattr(args, k) for k in names if getattr(args, k) is not None}
    if args.quick:
        return quick_config(args.dataset, **given)
    return ThesisConfig(dataset=args.dataset, **given)


def run_thesis_command(args: argparse.Namespace) -> int:
    from minicnn import distributed as dist
    from minicnn.experiments.thesis import run_thesis

    dist.init()
    dist.silence_others()                  # rank 0 prints the table
    try:
        cfg = config_from_args(args)
        paths = run_thesis(cfg, parallel=args.parallel)
    except KeyboardInterrupt:
        print("\ninterrupted: finished runs are kept; run the same command again to resume", file=sys.stderr)
        return 130
    except (FileNotFoundError, ValueError) as err:
        if dist.world_size() > 1:       # perhaps this rank's alone: the others must not wait for it
            dist.abort(f"error: {err}", 2)
        print(f"error: {err}", file=sys.stderr)
        return 2
    if paths is None:
        return 0
    with open(paths["markdown"], encoding="utf-8") as f:
        print(f.read())
    print(f"table: {paths['markdown']}\n       {paths['csv']}")
    for p in paths["figures"]:
        print(f"figure: {p}")
    return 0


def add_arguments(parser: argparse.ArgumentParser) -> None:
    sub = parser.add_subparsers(dest="experiment", metavar="EXPERIMENT", required=True)
    from minicnn.helpformat import DefaultsFormatter
    thesis = sub.add_parser("thesis", help="re-run the thesis' Table 7.1 (HAM10000) or 7.2 (X-ray)",
                            formatter_class=DefaultsFormatter,
                            description="Re-run every configuration of the thesis' Table 7.1 (HAM10000) or "
                                        "Table 7.2 (X-ray) and write markdown/CSV tables beside the published "
                                        "numbers, plus figures. Re-running resumes an unfinished table.")
    add_thesis_arguments(thesis)
    thesis.set_defaults(experiment_run=run_thesis_command)


def run(args: argparse.Namespace) -> int:
    return args.experiment_run(args)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m minicnn.experiments",
                                     description="Re-run the experiments of the seed thesis.")
    add_arguments(parser)
    return run(parser.parse_args(argv))


COMMANDS = {"experiments": ("re-run the thesis' experiments (Tables 7.1 / 7.2) and figures", add_arguments, run)}
