"""Training benchmark: the experiment files under scripts/experiments/training/ (each fine-tunes a
model, then encodes, indexes, searches and grades it), with the training stage's wall time and the
peak memory of the whole run.

    python scripts/bench_train.py scripts/experiments/training/scifact.yaml --output runs/bench-train

With ``--seeds 14,15`` each training condition is also trained with those seeds (``NAME@seed14``,
ungraded) and its test nDCG@10 over its seeds is printed (mean, sample sd, each seed's figure).

Prints each graded check (OK / FAIL), then per trained condition: training seconds (this run, or
the run that made a reused model), steps, dev nDCG@10 of the base and of the kept model, terms per
document, and the process's peak resident memory (this process, which holds the model and the JVM,
and the largest child: Anserini's indexer).
"""

from __future__ import annotations

import argparse
import json
import resource
import sys
import time
from pathlib import Path

import splade_lucene  # noqa: F401  (Java before pyserini)
from splade_lucene.experiments.reproduce import reproduce


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("files", nargs="+")
    parser.add_argument("--output", default="runs/bench-train")
    parser.add_argument("--conditions", default=None)
    parser.add_argument("--seeds", default=None, metavar="S,S,...",
                        help="also train each training condition with these seeds (NAME@seedS, ungraded) and print "
                             "its nDCG@10 over its seeds")
    args = parser.parse_args()
    try:
        seeds = [int(x) for x in args.seeds.split(",")] if args.seeds else None
    except ValueError:
        parser.error(f"--seeds takes comma-separated integers (13,14,15), not {args.seeds!r}")
    start = time.perf_counter()
    grades = reproduce(args.files, args.output, conditions=args.conditions.split(",") if args.conditions else None,
                       seeds=seeds)
    wall = time.perf_counter() - start
    self_peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    child_peak = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
    print()
    print("| dataset | condition | train s | steps | dev nDCG@10 base -> kept | terms/doc (dev) | test nDCG@10 |")
    print("|---|---|---|---|---|---|---|")
    for manifest_file in sorted(Path(args.output).glob("*/*/manifest.json")):
        m = json.loads(manifest_file.read_text())
        t = m.get("training")
        if not t:
            continue
        base = (t.get("dev_base") or {}).get("nDCG@10")
        print(f"| {m['dataset']['name']} | {m['condition']} | {t['seconds']['training']:.0f} | "
              f"{t['derived']['steps']} | "
              f"{base if base is None else round(base, 4)} -> {t['kept'].get('nDCG@10', float('nan')):.4f} | "
              f"{t['kept'].get('mean_terms_per_document', float('nan')):.0f} | {m['metrics']['nDCG@10']:.4f} |")
    failed = [g for g in grades if g.status == "FAIL"]
    print(f"\nwall {wall:.0f} s; peak memory: this process {self_peak:,.0f} MiB, largest child {child_peak:,.0f} MiB; "
          f"{sum(g.status == 'OK' for g in grades)} OK, {len(failed)} FAIL")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
