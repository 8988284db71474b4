#!/usr/bin/env python
"""The sparsity lever: SciFact fine-tuned at several FLOPS weights on documents (--lambda-d), against
static pruning (each document's top-k terms) of the base and of the fine-tuned model, on the same
axes as docs/pruning.png: nDCG@10 against postings per document and against query latency (p50 at
k=10, memory engine and Lucene engine).

Each model is trained with the recommended recipe (`splade-lucene train` defaults) but its
lambda_d, on the train split only (a model already in OUTPUT with the same settings and data is
reused), then every setting is encoded, quantized at scale 100, indexed, searched with all judged
test queries (k=1000, BEIR convention) and timed one query at a time.

    bash scripts/env.sh python scripts/sparsity_sweep.py --json runs/sparsity-sweep.json --plot docs/sparsity.png
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import splade_lucene  # noqa: F401  (Java set-up)
from splade_lucene.encoding.model import SpladeEncoder
from splade_lucene.experiments.experiment import dataset_files, find_dataset, judged_dataset
from splade_lucene.training.settings import make_settings
from splade_lucene.training.trainer import train, trained_with

sys.path.insert(0, str(Path(__file__).resolve().parent))
import pruning_sweep  # noqa: E402

PRUNE_TOP_K = (256, 128, 64, 32)


def trained(dataset: Path, out: Path, lambda_d: float) -> Path:
    """The model fine-tuned at ``lambda_d`` (reused where its settings and data match)."""
    model = out / f"model-lambda-d-{lambda_d:g}"
    if not trained_with(model, make_settings(lambda_d=lambda_d)):
        train(dataset, model, overwrite=True, lambda_d=lambda_d)
    return model


def measure(label: str, encoder: SpladeEncoder, corpus: Path, doc_vectors, docs, queries, qrels, where: Path,
            doc_top_k: int | None) -> dict:
    return pruning_sweep.measure(label, encoder, corpus, [d.id for d in docs], doc_vectors, queries, qrels, where,
                                 doc_top_k=doc_top_k)


def plot(rows: list[dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 3, figsize=(15, 4.2))
    series = {"trained (lambda_d)": "tab:red", "pruned base": "tab:blue", "pruned fine-tuned": "tab:green"}
    for ax, key, label in ((axes[0], "postings_per_doc", "postings per document"),
                           (axes[1], "memory_p50_ms", "p50 ms, memory engine (k=10)"),
                           (axes[2], "lucene_p50_ms", "p50 ms, Lucene engine (k=10)")):
        for name, color in series.items():
            points = sorted((r[key], r["nDCG@10"]) for r in rows if r["series"] == name)
            ax.plot([p[0] for p in points], [p[1] for p in points], "o-", color=color, label=name)
        ax.set_xlabel(label)
        ax.set_ylabel("nDCG@10")
        ax.grid(alpha=0.3)
    axes[0].legend(fontsize=8)
    fig.suptitle("SciFact: training sparser (FLOPS on documents) against static pruning")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--dataset", default=None, help="BEIR folder with a train split (default: scifact)")
    ap.add_argument("--lambdas", default="0,0.001,0.01,0.1", help="lambda_d values (default: 0,0.001,0.01,0.1)")
    ap.add_argument("--output", default="runs/sparsity-sweep")
    ap.add_argument("--json", default=None)
    ap.add_argument("--plot", default=None)
    args = ap.parse_args()

    dataset = find_dataset(args.dataset)
    docs, queries, qrels = judged_dataset(dataset)
    out = Path(args.output)
    lambdas = [float(x) for x in args.lambdas.split(",")]
    default = make_settings().lambda_d
    rows = []
    models = {"base": None, **{lam: trained(dataset, out, lam) for lam in lambdas}}
    for key, model in models.items():
        encoder = SpladeEncoder(model)
        doc_vectors = encoder.encode([d.text for d in docs])
        if key == "base":
            tops, series = (None, *PRUNE_TOP_K), "pruned base"
        else:
            tops, series = ((None, *PRUNE_TOP_K), "pruned fine-tuned") if key == default else ((None,), None)
        for top in tops:
            name = series if top is not None or key == "base" else "trained (lambda_d)"
            label = f"{'base' if key == 'base' else f'lambda_d {key:g}'}" + (f", doc top-{top}" if top else "")
            row = measure(label, encoder, dataset_files(dataset)[0], doc_vectors, docs, queries, qrels,
                          out / label.replace(" ", "").replace(",", "-"), top)
            rows.append({**row, "series": name, "lambda_d": None if key == "base" else key})
    print("| setting | nDCG@10 | R@1000 | postings/doc | terms/query | Lucene MiB | p50 ms memory | p50 ms Lucene |")
    print("|---|---|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['setting']} | {r['nDCG@10']:.4f} | {r['R@1000']:.4f} | {r['postings_per_doc']:.0f} | "
              f"{r['terms_per_query']:.1f} | {r['lucene_mb']:.2f} | {r['memory_p50_ms']:.2f} | "
              f"{r['lucene_p50_ms']:.2f} |")
    pruning_sweep.write_rows(rows, args.json)
    if args.plot:
        plot(rows, Path(args.plot))
    return 0


if __name__ == "__main__":
    sys.exit(main())
