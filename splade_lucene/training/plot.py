"""Training curves: loss and dev nDCG@10 against steps."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ..core.errors import require


def plot_training(manifest: dict, png: str | Path) -> None:
    """Loss (ranking and FLOPS parts) and dev nDCG@10 against steps."""
    matplotlib = require("matplotlib", "plot", "--plot")
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    steps = manifest["steps"]
    x = [r["step"] for r in steps]
    fig, (left, right) = plt.subplots(1, 2, figsize=(11, 4))
    window = max(1, min(20, len(steps) // 10))

    def smooth(values):  # the trailing mean over `window` steps
        values = np.asarray(values, dtype=float)
        sums = np.cumsum(np.concatenate([[0.0], values]))
        starts = np.maximum(0, np.arange(1, len(values) + 1) - window)
        return (sums[1:] - sums[starts]) / (np.arange(1, len(values) + 1) - starts)

    left.plot(x, [r["loss"] for r in steps], color="0.8", lw=0.8, label="total, per step")
    left.plot(x, smooth([r["loss"] for r in steps]), lw=1.5, label=f"total, mean of {window} steps")
    left.plot(x, smooth([r["rank"] for r in steps]), lw=1.5, label="ranking part")
    left.plot(x, smooth([r["loss"] - r["rank"] for r in steps]), lw=1.5, label="FLOPS part (weighted)")
    left.set_xlabel("step")
    left.set_ylabel("loss")
    left.legend()
    left.set_title("training loss")
    dev = ([manifest["dev_base"]] if manifest.get("dev_base") else []) + manifest["dev"]
    if dev:
        right.plot([r["step"] for r in dev], [r["nDCG@10"] for r in dev], marker="o")
    right.set_xlabel("step")
    right.set_ylabel("dev nDCG@10")
    right.set_title("dev nDCG@10 (carved from the training queries)")
    fig.tight_layout()
    Path(png).parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(png, dpi=120)
    plt.close(fig)
