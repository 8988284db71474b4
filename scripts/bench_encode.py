#!/usr/bin/env python
"""Document-encoding benchmark: this project's encoder against Pyserini's, a plain transformers
implementation of the SPLADE formula, and sentence-transformers' SparseEncoder.

One invocation runs everything side by side on the same documents (a fixed sample of the SciFact
corpus: its first N documents), the same model, max length and threads. Each encoder runs in its own
child process, so that peak resident memory (ru_maxrss) is its own; speed is the median of R
repetitions after a warm-up batch. Agreement is measured on the integer vectors (scale 100) against
the plain implementation: the share of identical (term, weight) pairs and the largest difference.
The speed part is repeated with a BERT-base-shaped model (12 layers, hidden 768, random weights).

    bash scripts/env.sh python scripts/bench_encode.py --docs 1000 --reps 3 --json runs/bench_encode.json
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

BATCH_SIZE = 32
SCALE = 100
DEVICE = "cpu"  # set from --device in each child


def load_texts(n: int) -> list[str]:
    from splade_lucene.experiments.experiment import find_dataset
    from splade_lucene.formats.collection import read_corpus

    docs = []
    for doc in read_corpus(find_dataset(None, "scifact") / "corpus.jsonl"):
        docs.append(doc.text)
        if len(docs) == n:
            break
    return docs


# ---- the encoders, each returning {term: int} per text ---------------------------------------

def run_ours(model: str, texts, max_length: int, variant: str):
    from splade_lucene.core.quantize import quantize_terms
    from splade_lucene.encoding.model import SpladeEncoder

    kwargs = {"dtype": "bf16"} if variant == "ours-bf16" else {}
    enc = SpladeEncoder(model, max_length=max_length, batch_size=BATCH_SIZE, device=DEVICE, **kwargs)

    def encode(batch):
        return [quantize_terms(enc.to_terms(v), SCALE) for v in enc.encode(batch)]
    return encode


def run_pyserini(model: str, texts, max_length: int, variant: str):
    import splade_lucene  # noqa: F401  (Java set-up before pyserini)

    # isort: split
    from pyserini.encode import SpladeDocumentEncoder

    enc = SpladeDocumentEncoder(model, device=DEVICE)

    def encode(batch):
        out = []
        for start in range(0, len(batch), BATCH_SIZE):
            out.extend(enc.encode(batch[start:start + BATCH_SIZE], max_length=max_length))
        return out  # Pyserini quantizes with round(w / 5 * 256); not compared
    return encode


def run_plain(model: str, texts, max_length: int, variant: str):
    import torch
    from transformers import AutoModelForMaskedLM, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(model)
    mlm = AutoModelForMaskedLM.from_pretrained(model).eval().to(DEVICE)
    vocab = tok.convert_ids_to_tokens(list(range(mlm.config.vocab_size)))
    special = tok.all_special_ids

    def encode(batch):
        out = []
        for start in range(0, len(batch), BATCH_SIZE):
            inputs = tok(batch[start:start + BATCH_SIZE], max_length=max_length, truncation=True, padding=True,
                         return_tensors="pt").to(DEVICE)
            with torch.inference_mode():
                logits = mlm(**inputs).logits
            values, _ = torch.max(torch.log(1 + torch.relu(logits)) * inputs["attention_mask"].unsqueeze(-1), dim=1)
            values[:, special] = 0
            for row in values.cpu().numpy():
                ids = row.nonzero()[0]
                q = {vocab[i]: round(float(row[i]) * SCALE) for i in ids}
                out.append({t: w for t, w in q.items() if w > 0})
        return out
    return encode


def run_st(model: str, texts, max_length: int, variant: str):
    from sentence_transformers import SparseEncoder
    from sentence_transformers.sparse_encoder.models import MLMTransformer, SpladePooling

    mlm = MLMTransformer(model, max_seq_length=max_length)
    enc = SparseEncoder(modules=[mlm, SpladePooling(pooling_strategy="max")], device=DEVICE)

    def encode(batch):
        return enc.encode_document(batch, batch_size=BATCH_SIZE, convert_to_tensor=True)
    return encode


RUNNERS = {"ours": run_ours, "ours-bf16": run_ours, "pyserini": run_pyserini, "plain": run_plain,
           "sentence-transformers": run_st}


def child(args) -> None:
    """Run one encoder; print a JSON line with its timings, peak memory and (optionally) vectors."""
    import torch

    global DEVICE
    DEVICE = args.device
    torch.set_num_threads(args.threads)
    texts = load_texts(args.docs)
    encode = RUNNERS[args.encoder](args.model, texts, args.max_length, args.encoder)
    encode(texts[:BATCH_SIZE])  # warm-up
    times, vectors = [], None
    for _ in range(args.reps):
        start = time.perf_counter()
        vectors = encode(texts)
        times.append(time.perf_counter() - start)
    result = {"seconds": times, "docs": len(texts),
              "peak_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}
    if DEVICE.startswith("cuda"):
        result["peak_gpu_mb"] = torch.cuda.max_memory_allocated() / 2**20
    if args.vectors_out and isinstance(vectors, list):
        Path(args.vectors_out).write_text(json.dumps(vectors))
    print("RESULT " + json.dumps(result), flush=True)


def streaming_child(args) -> None:
    """encode_corpus on the first N SciFact documents (written to a temporary corpus); peak RSS."""
    import torch

    from splade_lucene.encoding.local import encode_corpus
    from splade_lucene.encoding.model import SpladeEncoder
    from splade_lucene.experiments.experiment import find_dataset

    torch.set_num_threads(args.threads)
    tmp = Path(tempfile.mkdtemp(prefix="bench-stream-"))
    # The first BASE documents, repeated with new ids up to N: every copy has the same lengths, so a
    # growth of peak memory with N could only come from the corpus size itself.
    base = []
    with open(find_dataset(None, "scifact") / "corpus.jsonl", encoding="utf-8") as src:
        for line in src:
            base.append(json.loads(line))
            if len(base) == args.stream_base:
                break
    with open(tmp / "corpus.jsonl", "w", encoding="utf-8") as dst:
        for i in range(args.docs):
            dst.write(json.dumps({**base[i % len(base)], "_id": f"d{i}"}) + "\n")
    start = time.perf_counter()
    summary = encode_corpus(tmp / "corpus.jsonl", tmp / "collection", progress=False,
                            encoder=SpladeEncoder(max_length=args.max_length))
    print("RESULT " + json.dumps({"docs": summary.documents, "seconds": [time.perf_counter() - start],
                                  "peak_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}), flush=True)


def run_child(encoder: str, model: str, max_length: int, docs: int, reps: int, threads: int,
              vectors_out: str | None = None, stream_base: int = 0) -> dict | None:
    cmd = [sys.executable, __file__, "--child", "--encoder", encoder, "--model", model, "--max-length",
           str(max_length), "--docs", str(docs), "--reps", str(reps), "--threads", str(threads),
           "--stream-base", str(stream_base), "--device", DEVICE]
    if vectors_out:
        cmd += ["--vectors-out", vectors_out]
    proc = subprocess.run(cmd, capture_output=True, text=True)
    for line in proc.stdout.splitlines():
        if line.startswith("RESULT "):
            return json.loads(line[7:])
    print(f"  {encoder} failed:\n{proc.stderr[-1500:]}", file=sys.stderr)
    return None


def agreement(ours: list[dict], ref: list[dict]) -> tuple[float, int]:
    same = total = 0
    worst = 0
    for a, b in zip(ours, ref):
        for term in set(a) | set(b):
            total += 1
            diff = abs(a.get(term, 0) - b.get(term, 0))
            same += diff == 0
            worst = max(worst, diff)
    return same / total, worst


def bert_base_shape(folder: Path, tiny: Path) -> Path:
    """A randomly initialised BERT-base-shaped masked LM, saved with SPLADE-tiny's tokenizer."""
    import shutil

    import torch
    from transformers import BertConfig, BertForMaskedLM

    torch.manual_seed(0)
    config = BertConfig(vocab_size=30522, hidden_size=768, num_hidden_layers=12, num_attention_heads=12,
                        intermediate_size=3072, max_position_embeddings=512)
    BertForMaskedLM(config).save_pretrained(folder)
    for name in ("tokenizer.json", "tokenizer_config.json"):
        shutil.copy(tiny / name, folder / name)
    return folder


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--docs", type=int, default=1000)
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--max-lengths", default="256,512")
    ap.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    ap.add_argument("--json", default=None)
    ap.add_argument("--encoders", default="ours,ours-bf16,pyserini,plain,sentence-transformers")
    ap.add_argument("--base-docs", type=int, default=200, help="documents for the BERT-base-shaped model")
    ap.add_argument("--skip-base", action="store_true")
    ap.add_argument("--stream-docs", type=int, default=1000,
                    help="streaming check: encode_corpus on N and 4N documents, peak memory of each")
    # child mode
    ap.add_argument("--device", default="cpu", help="cpu (default) or cuda: every encoder runs there")
    ap.add_argument("--tiny-model", default=None, help="SPLADE-tiny folder (default: the installed one)")
    ap.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--encoder", help=argparse.SUPPRESS)
    ap.add_argument("--model", help=argparse.SUPPRESS)
    ap.add_argument("--max-length", type=int, help=argparse.SUPPRESS)
    ap.add_argument("--vectors-out", help=argparse.SUPPRESS)
    ap.add_argument("--stream-base", type=int, default=0, help=argparse.SUPPRESS)
    ap.add_argument("--stream-only", action="store_true", help="only the streaming-memory check")
    args = ap.parse_args()
    global DEVICE
    DEVICE = args.device
    if args.child:
        streaming_child(args) if args.encoder == "stream" else child(args)
        return 0

    from splade_lucene.encoding.loading import default_model_path

    tiny = Path(args.tiny_model) if args.tiny_model else default_model_path()
    encoders = args.encoders.split(",")
    rows = []
    tmp = Path(tempfile.mkdtemp(prefix="bench-encode-"))
    models = [] if args.stream_only else [("splade-tiny", str(tiny), args.docs)]
    if not args.skip_base and not args.stream_only:
        models.append(("bert-base-shape", str(bert_base_shape(tmp / "bert-base-shape", tiny)), args.base_docs))
    for label, path, docs in models:
        for max_length in [int(x) for x in args.max_lengths.split(",")]:
            print(f"\n{label}, max length {max_length}, {docs} SciFact documents, {DEVICE}, {args.threads} threads, "
                  f"batch {BATCH_SIZE}, median of {args.reps}", flush=True)
            results, vectors = {}, {}
            for enc in encoders:
                vec_file = str(tmp / f"{label}-{max_length}-{enc}.json") if label == "splade-tiny" else None
                r = run_child(enc, path, max_length, docs, args.reps, args.threads, vec_file)
                if r is None:
                    continue
                results[enc] = r
                if vec_file and Path(vec_file).exists():
                    vectors[enc] = json.loads(Path(vec_file).read_text())
            ours_speed = None
            for enc, r in results.items():
                dps = r["docs"] / statistics.median(r["seconds"])
                if enc == "ours":
                    ours_speed = dps
                ident = worst = None
                if enc.startswith("ours") and "plain" in vectors and enc in vectors:
                    ident, worst = agreement(vectors[enc], vectors["plain"])
                rows.append({"model": label, "max_length": max_length, "encoder": enc, "docs_per_s": dps,
                             "peak_mb": r["peak_mb"], "identical_pairs": ident, "max_weight_diff": worst,
                             "seconds": r["seconds"], "device": DEVICE, "peak_gpu_mb": r.get("peak_gpu_mb")})
            gpu = DEVICE != "cpu"
            print(f"| encoder | docs/s | ours / it | peak MB |{' peak GPU MB |' if gpu else ''} "
                  f"identical (term, weight) pairs vs plain | largest diff |\n"
                  f"|---|---|---|---|{'---|' if gpu else ''}---|---|")
            for row in [r for r in rows if r["model"] == label and r["max_length"] == max_length]:
                ratio = f"{ours_speed / row['docs_per_s']:.2f}x" if ours_speed else "-"
                ident = f"{row['identical_pairs'] * 100:.3f}%" if row["identical_pairs"] is not None else "-"
                worst = row["max_weight_diff"] if row["max_weight_diff"] is not None else "-"
                gpu_mb = f" {row['peak_gpu_mb']:.0f} |" if gpu else ""
                print(f"| {row['encoder']} | {row['docs_per_s']:.1f} | {ratio} | {row['peak_mb']:.0f} |{gpu_mb} "
                      f"{ident} | {worst} |", flush=True)
    if args.stream_docs:
        print("\nstreaming: encode_corpus (SPLADE-tiny, max length 512) on the first N SciFact documents, "
              "and on the same N repeated 4 times (new ids)")
        print("| documents | seconds | peak MB |\n|---|---|---|")
        peaks = []
        for n in (args.stream_docs, 4 * args.stream_docs):
            r = run_child("stream", str(tiny), 512, n, 1, args.threads, stream_base=args.stream_docs)
            if r:
                peaks.append(r["peak_mb"])
                rows.append({"model": "splade-tiny", "max_length": 512, "encoder": f"ours-encode-corpus-{r['docs']}",
                             "docs_per_s": r["docs"] / r["seconds"][0], "peak_mb": r["peak_mb"],
                             "identical_pairs": None})
                print(f"| {r['docs']} | {r['seconds'][0]:.1f} | {r['peak_mb']:.0f} |", flush=True)
        if len(peaks) == 2:
            print(f"peak at 4N / peak at N: {peaks[1] / peaks[0]:.3f}")
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps(rows, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
