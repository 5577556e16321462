"""Tables and figures from the finished runs of minicnn.experiments.thesis.

Table: one row per class (F1), micro avg and macro avg (F1), balanced accuracy;
one column per configuration. Each cell is ``ours / thesis``: our mean over
seeds (``±`` the standard deviation when there are several seeds) and the
thesis' published value ("-" where it published none). A long CSV holds every
number (mean, sd, seeds, thesis).

Figures (PNG): training accuracy of pretrained vs random weights (Fig. 7.1),
first-conv activations of a test image under both (Fig. 8.1), confusion
matrices, Grad-CAM heatmaps of the best pretrained model.
"""

from __future__ import annotations

import csv
import glob
import io
import json
import os

import numpy as np

from minicnn import figures
from minicnn.experiments.published import published_table
from minicnn.io.storage import atomic_write_text

TITLES = {"majority": "Majority Class", "features": "Features Only (conv frozen)",
          "two_phase": "Two Phases (head, then all at lr/10)"}


def load_runs(folder: str) -> dict[str, list[dict]]:
    """{column: [run dicts, by seed]} from OUT/<dataset>/runs/*.json."""
    runs: dict[str, list[dict]] = {}
    for path in sorted(glob.glob(os.path.join(folder, "runs", "*.json"))):
        with open(path, encoding="utf-8") as f:
            run = json.load(f)
        runs.setdefault(run["column"], []).append(run)
    for column_runs in runs.values():
        column_runs.sort(key=lambda r: r["seed"])
    return runs


def _fmt(v: float | None) -> str:
    if v is None:
        return "-"
    s = f"{v:.2f}"
    return s[1:] if s.startswith("0.") else s


def table_rows(columns: list[str], runs: dict, published: dict, class_names: list[str]) -> list[dict]:
    """Long form: one dict per (row, column) with ours_mean, ours_sd, seeds, thesis."""
    pub_cols = published["columns"]
    out = []
    row_keys = [(name, ("f1", i)) for i, name in enumerate(class_names)]
    row_keys += [("micro avg", "micro_f1"), ("macro avg", "macro_f1"), ("balanced accuracy", "balanced_accuracy")]
    for row, key in row_keys:
        for column in columns:
            values = []
            for run in runs.get(column, []):
                s = run["summary"]
                values.append(s[key[0]][key[1]] if isinstance(key, tuple) else s[key])
            thesis = None
            if column in pub_cols and key != "balanced_accuracy":
                p = pub_cols[column]
                thesis = p["f1"][key[1]] if isinstance(key, tuple) else p.get(key)
            out.append({"row": row, "column": column,
                        "ours_mean": float(np.mean(values)) if values else None,
                        "ours_sd": float(np.std(values, ddof=1)) if len(values) > 1 else None,
                        "seeds": len(values), "thesis": thesis})
    return out


def markdown_table(columns: list[str], long_rows: list[dict], published: dict) -> str:
    titles = [TITLES.get(c) or published["columns"].get(c, {}).get("title", c) for c in columns]
    lines = ["| | " + " | ".join(titles) + " |", "|---" * (len(columns) + 1) + "|"]
    by_row: dict[str, dict] = {}
    for r in long_rows:
        by_row.setdefault(r["row"], {})[r["column"]] = r
    for row, cells in by_row.items():
        texts = []
        for c in columns:
            r = cells[c]
            ours = _fmt(r["ours_mean"]) + (f"±{_fmt(r['ours_sd'])}" if r["ours_sd"] is not None else "")
            texts.append(f"{ours} / {_fmt(r['thesis'])}")
        lines.append(f"| {row} | " + " | ".join(texts) + " |")
    return "\n".join(lines) + "\n"


def write_table(cfg, class_names: list[str], runs: dict) -> tuple[str, str]:
    published = published_table(cfg.dataset)
    columns = [c for c in cfg.table_columns()]
    long_rows = table_rows(columns, runs, published, class_names)
    csv_path = os.path.join(cfg.folder, f"table_{published['table'].replace('.', '_')}.csv")
    text = io.StringIO()                  # written whole and renamed: a full disk leaves no torn table
    writer = csv.DictWriter(text, ["row", "column", "ours_mean", "ours_sd", "seeds", "thesis"])
    writer.writeheader()
    writer.writerows(long_rows)
    atomic_write_text(csv_path, text.getvalue())
    seeds = sorted({len(v) for k, v in runs.items() if k != "majority"}) or [0]
    legend = (f"Cells: **ours / thesis**. Ours: F1 on our test split (20%), mean over {max(seeds)} seed(s) "
              "(± sample standard deviation when more than one). Thesis: the published value "
              "('-': not published). Balanced accuracy = mean per-class recall.")
    setup = (f"Setup: model {cfg.model}, {cfg.image_size}x{cfg.image_size} px, split 60/20/20 by {cfg.split_by}, "
             f"SGD lr {cfg.lr} momentum {cfg.momentum}, batch {cfg.batch_size}, up to {cfg.epochs} epochs, early "
             f"stopping on val accuracy (patience {cfg.patience}), augmentation {'on' if cfg.augment else 'off'}, "
             f"pixels '{cfg.preprocess}'; baselines on {cfg.baseline_size}x{cfg.baseline_size} raw pixels, "
             "trained on train+val (80%).")
    md = [f"# Thesis Table {published['table']} re-run: {published['caption']}", "", legend, "", setup, ""]
    if cfg.quick:
        md += [("**Quick mode: a tiny model on a generated stand-in; the numbers only show that the pipeline "
                "runs, they say nothing about the thesis.**"), ""]
    md += [f"- note: {n}" for n in cfg.notes] + ([""] if cfg.notes else [])
    missing = [c for c in columns if not runs.get(c)]
    if missing:
        md += [f"Not run yet: {', '.join(missing)}.", ""]
    md.append(markdown_table(columns, long_rows, published))
    md_path = os.path.join(cfg.folder, f"table_{published['table'].replace('.', '_')}.md")
    atomic_write_text(md_path, "\n".join(md))
    return md_path, csv_path


def _model_from(cfg, column: str, classes: int):
    from minicnn.experiments.models import build_model
    from minicnn.io import load_checkpoint

    path = os.path.join(cfg.folder, "models", f"{column}_seed0.h5")
    if not os.path.exists(path):
        return None
    model = build_model(cfg.model, cfg.image_size, classes)
    load_checkpoint(path, model)
    return model


def write_figures(cfg, parts, runs: dict) -> list[str]:
    """Fig. 7.1, Fig. 8.1, confusion matrices and Grad-CAM, from seed-0 runs and saved models."""
    from minicnn.experiments.loading import loader
    from minicnn.experiments.models import last_conv_layer
    from minicnn.train.explain import activations, gradcam

    out_dir = os.path.join(cfg.folder, "figures")
    written = []
    class_names = list(parts[0].class_names)
    pretrained = "all" if cfg.dataset == "ham10000" else "imagenet"
    used = bool(runs.get(pretrained) and runs[pretrained][0].get("pretrained"))
    label = "pretrained weights" if used else f"'{pretrained}' column (no weights found: random start)"
    curves = {}
    for column, name in ((pretrained, label), ("random", "random weights")):
        if runs.get(column) and runs[column][0].get("history"):
            curves[name] = runs[column][0]["history"]
    if curves:
        written.append(figures.training_curves(curves, os.path.join(out_dir, "fig7_1_training_accuracy.png"),
                                               "accuracy", "Training accuracy (thesis Fig. 7.1)"))
    for column, column_runs in runs.items():
        if column_runs and "confusion" in column_runs[0]:
            written.append(figures.confusion_matrix(np.array(column_runs[0]["confusion"]), class_names,
                                                    os.path.join(out_dir, f"confusion_{column}.png"),
                                                    f"{column} (seed 0, test split)"))
    test = parts[2]
    raw = next(iter(loader(cfg, test, False, 0, False, raw=True)))[0][:3]
    scaled = next(iter(loader(cfg, test, False, 0, False)))[0][:3]
    models = {name: _model_from(cfg, column, len(class_names))
              for column, name in ((pretrained, label), ("random", "random weights"))}
    models = {k: m for k, m in models.items() if m is not None}
    if models:
        acts = {name: activations(m, scaled[0], "block1_conv1") for name, m in models.items()}
        written.append(figures.activation_maps(raw[0], acts, os.path.join(out_dir, "fig8_1_first_conv.png"),
                                               title="First conv layer activations (thesis Fig. 8.1)"))
    explain = models.get(label) or next(iter(models.values()), None)
    if explain is not None:
        layer = last_conv_layer(explain)
        for k in range(len(scaled)):
            cam, c, probs = gradcam(explain, scaled[k], layer)
            written.append(figures.gradcam_overlay(
                raw[k], cam, os.path.join(out_dir, f"gradcam_{k}.png"),
                f"Grad-CAM {layer}: predicted {class_names[c]} ({probs[c]:.2f})"))
    return written


def write_report(cfg, ds, parts) -> dict:
    runs = load_runs(cfg.folder)
    md_path, csv_path = write_table(cfg, list(ds.class_names), runs)
    figs = write_figures(cfg, parts, runs)
    return {"markdown": md_path, "csv": csv_path, "figures": figs}
