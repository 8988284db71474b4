"""Results table (Markdown, through pandas) and plot (PNG) from reproduce output folders."""

from __future__ import annotations

import json
from pathlib import Path

from ..core.atomic import check_output_path, write_text
from ..core.errors import NotFoundError, require
from ..formats.trec import read_qrels, read_run
from .metrics import METRICS, recall_at_depths

RECALL_DEPTHS = (1, 2, 5, 10, 20, 50, 100, 200, 500, 1000)
TYPE_ORDER = {"bm25": 0, "splade": 1, "rrf": 2, "interpolation": 3}


def collect(output: str | Path):
    """One row per DIR/<dataset>/<condition>/ with metrics.json and manifest.json."""
    import pandas as pd

    rows = []
    for metrics_file in sorted(Path(output).glob("*/*/metrics.json")):
        folder = metrics_file.parent
        manifest = json.loads((folder / "manifest.json").read_text())
        metrics = json.loads(metrics_file.read_text())
        index = manifest.get("index", {})
        rows.append({"dataset": folder.parent.name, "condition": folder.name,
                     "order": (TYPE_ORDER.get(manifest.get("type"), len(TYPE_ORDER)), folder.name), **metrics,
                     "index_mb": index["size_bytes"] / 2**20 if "size_bytes" in index else None})
    if not rows:
        raise NotFoundError(f"no */*/metrics.json under {output}: run `splade-lucene reproduce` first")
    frame = pd.DataFrame(rows).sort_values(["dataset", "order"], kind="mergesort")
    return frame.drop(columns="order").reset_index(drop=True)


def markdown_table(frame, metrics=METRICS) -> str:
    """Collections x conditions x metrics, conditions in the order they were run."""
    cols = ["dataset", "condition", *metrics, "index_mb"]
    header = "| collection | condition | " + " | ".join(metrics) + " | index MB |"
    lines = [header, "|" + "---|" * len(cols)]
    for row in frame[cols].itertuples(index=False):
        values = [f"{v:.4f}" for v in row[2:2 + len(metrics)]]
        mb = "-" if row[-1] is None or row[-1] != row[-1] else f"{row[-1]:.1f}"  # None or NaN: no index
        lines.append(f"| {row[0]} | {row[1]} | " + " | ".join(values) + f" | {mb} |")
    return "\n".join(lines) + "\n"


def recall_curve(run_file: Path, qrels_file: Path, remove_query: bool = True) -> list[float]:
    return recall_at_depths(read_qrels(qrels_file), read_run(run_file), RECALL_DEPTHS, remove_query=remove_query)


def plot(frame, output: str | Path, png: str | Path) -> None:
    """Left: nDCG@10 per collection and condition. Right: recall against depth on each collection."""
    matplotlib = require("matplotlib", "plot", "the results plot")
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    datasets = sorted(frame["dataset"].unique())
    conditions = list(dict.fromkeys(frame["condition"]))
    fig, axes = plt.subplots(1, 1 + len(datasets), figsize=(4.2 * (1 + len(datasets)), 4.0))
    ax = axes[0]
    width = 0.8 / len(conditions)
    for i, cond in enumerate(conditions):
        values = [frame[(frame.dataset == d) & (frame.condition == cond)]["nDCG@10"].mean() for d in datasets]
        bars = ax.bar([x + i * width for x in range(len(datasets))], values, width, label=cond)
        ax.bar_label(bars, fmt="%.3f", fontsize=6, rotation=90, padding=2)
    ax.set_xticks([x + width * (len(conditions) - 1) / 2 for x in range(len(datasets))], datasets)
    ax.set_ylabel("nDCG@10")
    ax.set_ylim(0, max(1.0, max(frame["nDCG@10"]) * 1.4))
    ax.set_title("nDCG@10 by condition")
    ax.legend(fontsize=7, loc="upper left", ncol=2)
    for ax, dataset in zip(axes[1:], datasets):
        for cond in conditions:
            folder = Path(output) / dataset / cond
            manifest = json.loads((folder / "manifest.json").read_text())
            ds = manifest["dataset"]
            qrels_file = Path(ds["folder"]) / "qrels" / f"{ds['split']}.tsv"
            ax.plot(RECALL_DEPTHS, recall_curve(folder / "run.trec", qrels_file, manifest["remove_query"]),
                    marker="o", markersize=3, label=cond)
        ax.set_xscale("log")
        ax.set_xlabel("depth k")
        ax.set_ylabel("recall@k")
        ax.set_ylim(0, 1)
        ax.grid(alpha=0.3)
        ax.set_title(f"{dataset}: recall against depth")
        ax.legend(fontsize=7, loc="lower right")
    fig.tight_layout()
    fig.savefig(png, dpi=130)
    plt.close(fig)


def write_report(output: str | Path, markdown: str | Path | None = None, png: str | Path | None = None) -> str:
    markdown = Path(markdown) if markdown else Path(output) / "results.md"
    png = Path(png) if png else Path(output) / "results.png"
    for path in (markdown, png):
        check_output_path(path, "file")
    frame = collect(output)
    table = markdown_table(frame)
    write_text(markdown, table)
    plot(frame, output, png)
    return table
