#!/usr/bin/env python
"""Search benchmark: this project's searcher against Pyserini's impact searcher, PISA, BMP, an exact
brute-force scorer and Seismic, on the same index and the same pre-encoded, quantized queries.

Indexes (built under --root on first use, reused after):
- ``scifact``: the SciFact corpus encoded with the default model (SPLADE-tiny, scale 100);
- ``wiki-100k``: ``wiki-passages-100k`` (100,000 real Wikipedia passages) encoded the same way
  (about 20 minutes on 2 cores: 15 to encode, 4 to index);
- ``synthetic-100k``, ``synthetic-1m``: documents drawn from SciFact's term and weight distributions
  by ``scripts/synthetic_collection.py`` (seeded), indexed the same way.

Queries: the test queries of SciFact and ArguAna (--query-sets; judged in qrels/test.tsv, at most
--queries of each), encoded once with the index's query encoder. For each index, query set and k (10
and 1000), each searcher answers every query:
- ``ours``: ``Searcher.search_terms``, one query at a time, with its default engine (``auto``: the
  block-max engine or the memory-mapped impact table, as measured faster for the index, k and query);
- ``ours-blockmax``, ``ours-blockmax-approx``: the block-max engine (:mod:`splade_lucene.indexing.blockmax`,
  written on first use), exact and with --approx-alpha / --approx-query-terms (recall@10 reported);
  ``ours-pruned``, ``ours-exhaustive``: the same kernel with pruning forced on or off;
- ``ours-batch``: ``Searcher.batch_search_terms`` with --threads threads, in batches of --batch;
- ``ours-lucene``, ``ours-lucene-batch``: the same with ``engine="lucene"`` (Lucene's evaluation);
- ``pyserini``: ``LuceneImpactSearcher(index, encoder, min_idf=-1).search``, reading each hit's
  docid and score as a user does; ``pyserini-batch``: its ``batch_search`` with --threads threads;
- ``pisa-maxscore``, ``pisa-bmw``, ``pisa-maxscore-batch`` (pyterrier-pisa, ``scripts/peers.py``):
  PISA's MaxScore and block-max WAND with the ``quantized`` scorer on the same integer weights (one
  query at a time; MaxScore also in batches on --threads threads);
- ``bmp``, ``bmp-alpha0.8`` (bmp): BMP exact (alpha 1) and approximate, with recall@10; BMP keeps
  8-bit impacts (weights above 255 clipped) and rescales each query to a largest weight of 32, so its
  scores are not ours and ``same_results`` compares documents only;
- ``bruteforce``: exact integer dot products with scipy (``splade_lucene.search.searcher.exact_search``):
  the reference for correctness, computed for every query; timed one query at a time on the first
  --brute-queries;
- ``seismic``: pyseismic-lsr (approximate), with its recall@10 against the exact top 10.
Single-query rows give p50/p99 of each query's latency; batch rows give p50/p99 of the per-query
time of each batch (batch time / batch size). ``same_results``: every query's hits equal the brute
force's, ties aside (same documents above the k-th score, the same integer scores, as many hits).
The peers' indexes are built beside each benchmark index on first use (``--peers none`` skips them).
A last part times a SciFact text query end to end (encoding included) through ``Searcher.search``.

``--json PATH`` gets the rows of the fixed contract (searchers ours, ours-batch, pyserini,
pyserini-batch, bruteforce, seismic); the other rows (ours-lucene, ours-lucene-batch, ours-text,
query-encoding) go to PATH with ``.extra.json`` for ``.json``.

    bash scripts/env.sh python scripts/bench_search.py --indexes scifact,wiki-100k,synthetic-1m \\
        --json runs/bench_search.json
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import statistics
import sys
import time
from pathlib import Path

import numpy as np

import splade_lucene  # noqa: F401  (Java set-up before pyserini)
from splade_lucene.encoding.local import encode_corpus
from splade_lucene.encoding.model import SpladeEncoder
from splade_lucene.experiments.experiment import dataset_files, find_dataset
from splade_lucene.formats.collection import collection_files, read_queries
from splade_lucene.formats.trec import read_qrels
from splade_lucene.indexing.blockmax import BLOCK_DIR, write_blockmax
from splade_lucene.indexing.build import build_index
from splade_lucene.indexing.impacts import TABLE_DIR, ImpactTable, write_impact_table
from splade_lucene.search.encoders import QueryEncoder
from splade_lucene.search.exact import exact_search
from splade_lucene.search.searcher import Searcher

SYNTHETIC = {"synthetic-100k": 100_000, "synthetic-1m": 1_000_000}
# real collections: benchmark name -> dataset folder name
REAL = {"scifact": "scifact", "wiki-100k": "wiki-passages-100k", "wiki-1m": "wiki-passages-1m"}
WARMUP = 20
CONTRACT = ("ours", "ours-batch", "pyserini", "pyserini-batch", "bruteforce", "seismic")


# ---- indexes ---------------------------------------------------------------------------------

def ensure_index(name: str, root: Path, seed: int, threads: int) -> Path:
    """The folder holding ``collection/`` and ``index/`` for a benchmark index, built if missing."""
    folder = root / name
    if (folder / "index").is_dir():
        ensure_table(folder)
        return folder
    folder.mkdir(parents=True, exist_ok=True)
    if name in REAL:
        folder_of = find_dataset(None, REAL[name])
        corpus = dataset_files(folder_of)[0] if name == "scifact" else next(
            p for p in (folder_of / "corpus.jsonl", folder_of / "corpus.jsonl.xz") if p.exists())
        if not (folder / "collection").is_dir():
            encode_corpus(corpus, folder / "collection", encoder=SpladeEncoder(), progress=True)
    elif name in SYNTHETIC:
        from synthetic_collection import generate

        source = ensure_index("scifact", root, seed, threads) / "collection"
        if not (folder / "collection").is_dir():
            t = time.perf_counter()
            generate(source, folder / "collection", docs=SYNTHETIC[name], seed=seed, arrays=folder / "vectors.npz")
            print(f"{name}: generated in {time.perf_counter() - t:.0f} s", file=sys.stderr, flush=True)
    else:
        raise SystemExit(f"unknown index {name!r}: {', '.join([*REAL, *SYNTHETIC])}")
    t = time.perf_counter()
    build_index(folder / "collection", folder / "index", threads=threads)
    print(f"{name}: indexed in {time.perf_counter() - t:.0f} s", file=sys.stderr, flush=True)
    return folder


def ensure_blockmax(folder: Path) -> dict:
    """The index's block-max engine (default settings: BP order, blocks of ``blockmax.BLOCK``), written if missing; its
    metadata (build seconds, bytes)."""
    meta = folder / "index" / BLOCK_DIR / "blockmax.json"
    if not meta.is_file():
        t = time.perf_counter()
        write_blockmax(folder / "index")
        print(f"{folder.name}: block-max engine written in {time.perf_counter() - t:.0f} s", file=sys.stderr,
              flush=True)
    return json.loads(meta.read_text())


def ensure_table(folder: Path) -> None:
    """The index's impact table, written if missing (indexes built before tables existed)."""
    if not (folder / "index" / TABLE_DIR).is_dir():
        t = time.perf_counter()
        write_impact_table(folder / "index", folder / "collection")
        print(f"{folder.name}: impact table written in {time.perf_counter() - t:.0f} s", file=sys.stderr, flush=True)


def read_collection(folder: Path) -> tuple[list[str], list[str], object]:
    """(vocabulary, doc ids, CSR matrix of integer weights) of a benchmark collection: from the
    synthetic generator's arrays where they exist, else from the collection's JSON records."""
    import scipy.sparse as sp

    if (folder / "vectors.npz").is_file():
        arrays = np.load(folder / "vectors.npz")
        lengths = arrays["lengths"]
        width = max(7, len(str(len(lengths) - 1)))
        indptr = np.concatenate([[0], np.cumsum(lengths, dtype=np.int64)])
        matrix = sp.csr_matrix((arrays["weights"].astype(np.float32), arrays["terms"], indptr),
                               shape=(len(lengths), len(arrays["vocab"])))
        return arrays["vocab"].tolist(), [f"syn{i:0{width}d}" for i in range(len(lengths))], matrix
    collection = folder / "collection"

    vocab: dict[str, int] = {}
    docids, indptr, indices, data = [], [0], [], []
    for path in collection_files(collection):
        with open(path, encoding="utf-8") as fh:
            for line in fh:
                rec = json.loads(line)
                docids.append(rec["id"])
                for term, weight in rec["vector"].items():
                    indices.append(vocab.setdefault(term, len(vocab)))
                    data.append(weight)
                indptr.append(len(indices))
    # float32 holds every score exactly: integer dot products stay far below 2**24 here
    matrix = sp.csr_matrix((np.array(data, dtype=np.float32), np.array(indices, dtype=np.int32),
                            np.array(indptr, dtype=np.int64)), shape=(len(docids), len(vocab)))
    return list(vocab), docids, matrix


def test_queries(dataset: str) -> list[tuple[str, str]]:
    """(qid, text) of a dataset's test queries (those judged in qrels/test.tsv), in file order."""
    _, queries_file, qrels_file = dataset_files(find_dataset(None, dataset))
    judged = read_qrels(qrels_file)
    return [(q, t) for q, t in read_queries(queries_file) if q in judged]


def query_matrix(encoded: list[dict[str, int]], vocab: list[str]):
    import scipy.sparse as sp

    index = {t: i for i, t in enumerate(vocab)}
    rows, cols, vals = [], [], []
    for r, terms in enumerate(encoded):
        for term, weight in terms.items():
            if term in index:
                rows.append(r), cols.append(index[term]), vals.append(weight)
    return sp.csr_matrix((np.array(vals, dtype=np.float32), (rows, cols)), shape=(len(encoded), len(vocab)))


# ---- timing and checks -----------------------------------------------------------------------

def timed_each(fn, items):
    """Per-item latencies (s) and results, after a warm-up on the first items."""
    for item in items[:WARMUP]:
        fn(item)
    latencies, results = [], []
    for item in items:
        start = time.perf_counter()
        results.append(fn(item))
        latencies.append(time.perf_counter() - start)
    return latencies, results


def timed_batches(fn, items, batch: int):
    """Per-query latency of each batch (batch time / batch size) and the results, after a warm-up."""
    fn(items[:WARMUP])
    latencies, results = [], []
    for start in range(0, len(items), batch):
        chunk = items[start:start + batch]
        t = time.perf_counter()
        results.extend(fn(chunk))
        latencies.extend([(time.perf_counter() - t) / len(chunk)] * len(chunk))
    return latencies, results


def summary(latencies: list[float]) -> dict:
    ms = np.array(latencies) * 1000
    return {"qps": len(ms) / (ms.sum() / 1000), "p50_ms": float(np.percentile(ms, 50)),
            "p99_ms": float(np.percentile(ms, 99))}


def same_as_exact(hits: list[tuple[str, float]], exact: list[tuple[str, float]]) -> bool:
    """The same documents with the same integer scores above the k-th exact score, and as many hits."""
    if len(hits) != len(exact):
        return False
    if not exact:
        return True
    kth = round(exact[-1][1])
    above = sorted((d, round(s)) for d, s in exact if round(s) > kth)
    return above == sorted((d, round(s)) for d, s in hits if round(s) > kth) and \
        all(round(s) >= kth for _, s in hits)


def same_documents(hits: list[tuple[str, float]], exact: list[tuple[str, float]]) -> bool:
    """The same documents as the exact top k, ties at the k-th score aside (scores not compared)."""
    if len(hits) != len(exact):
        return False
    if not exact:
        return True
    kth = round(exact[-1][1])
    scores = {d: round(s) for d, s in exact}
    above = {d for d, s in exact if round(s) > kth}
    found = {d for d, _ in hits}
    return above <= found and all(scores.get(d, -1) >= kth for d in found)


def recall_at_10(hits: list[str], exact: list[tuple[str, float]]) -> float:
    """Share of the exact top 10 found, ties aside: a hit counts when its exact score reaches the 10th."""
    top = exact[:10]
    if not top:
        return 1.0
    kth = top[-1][1]
    scores = dict(exact)
    return min(1.0, sum(1 for d in hits[:10] if scores.get(d, -1) >= kth) / len(top))


# ---- searchers -------------------------------------------------------------------------------

class Precomputed:
    """A Pyserini query encoder that returns pre-encoded queries (looked up by the query string)."""

    def __init__(self, encoded: dict[str, dict[str, int]]):
        self.encoded = encoded

    def encode(self, text: str) -> dict[str, int]:
        return self.encoded[text]


def bench_index(name: str, folder: Path, query_sets: dict[str, list[str]], encoded: dict[str, dict[str, int]],
                ks: list[int], threads: int, batch: int, use_seismic: bool, brute_queries: int,
                peers: list[str], approx: dict, seismic_settings: list[tuple[int, float]]) -> list[dict]:
    from pyserini.search.lucene import LuceneImpactSearcher

    index = folder / "index"
    t = time.perf_counter()
    vocab, docids, docs = read_collection(folder)
    print(f"{name}: {len(docids)} documents, {docs.nnz} postings, read in {time.perf_counter() - t:.0f} s",
          file=sys.stderr, flush=True)
    t = time.perf_counter()
    built = ensure_blockmax(folder)
    ours = Searcher(index, QueryEncoder.from_index(index))  # the default engine, as a user opens it
    opened = time.perf_counter() - t
    table = ImpactTable.load(index)
    print(f"{name}: searcher opened in {opened:.1f} s; impact table {table.postings:,} postings, "
          f"{table.nbytes / 2**20:,.0f} MiB memory-mapped ({table.nbytes / table.postings:.2f} bytes a posting) "
          f"(Lucene index {sum(f.stat().st_size for f in index.iterdir() if f.is_file()) / 2**20:,.0f} MiB on disk)",
          file=sys.stderr, flush=True)
    ours_lucene = Searcher(index, ours.query_encoder, engine="lucene")
    ours_pruned = Searcher(index, ours.query_encoder, engine="memory", prune=True)
    ours_exhaustive = Searcher(index, ours.query_encoder, engine="memory", prune=False)
    peer_indexes = {peer: peer_index(peer, folder) for peer in peers}
    ours_blockmax = Searcher(index, ours.query_encoder, engine="blockmax")
    ours_approx = Searcher(index, ours.query_encoder, engine="blockmax", alpha=approx["alpha"],
                           query_terms=approx["query_terms"])
    print(f"{name}: block-max engine {built['bytes'] / built['postings']:.2f} bytes a posting, ordered in "
          f"{built['seconds']['order_s']:.0f} s, built in {built['seconds']['build_s']:.0f} s", file=sys.stderr,
          flush=True)
    theirs = LuceneImpactSearcher(str(index), Precomputed(encoded), min_idf=-1)
    seismic_built = seismic_index(folder, docs, docids, threads) if use_seismic else None
    seismic = {}
    if seismic_built is not None:
        seismic["seismic"] = seismic_searcher(seismic_built, vocab)
        for cut, factor in seismic_settings:  # more settings, for the recall each reaches
            seismic[f"seismic-qc{cut}-hf{factor}"] = seismic_searcher(seismic_built, vocab, cut, factor)
    rows = []
    for (query_set, qids), k in ((item, k) for item in query_sets.items() for k in ks):
        queries = query_matrix([encoded[q] for q in qids], vocab)
        runs: dict[str, tuple[list[float], list[list[tuple[str, float]]]]] = {}
        row_of = {qid: i for i, qid in enumerate(qids)}

        def brute(qid):
            hits = exact_search(queries[row_of[qid]:row_of[qid] + 1], docs, [qid], docids, k=k)[qid]
            return [(h.docid, h.score) for h in hits]
        # the reference for every query, in blocks; the timing on the first --brute-queries, one by one
        reference = exact_search(queries, docs, qids, docids, k=k)
        exact = [[(h.docid, h.score) for h in reference[q]] for q in qids]
        runs["bruteforce"] = timed_each(brute, qids[:brute_queries])
        runs["ours"] = timed_each(lambda q: [(h.docid, h.score) for h in ours.search_terms(encoded[q], k)], qids)
        runs["ours-batch"] = timed_batches(
            lambda qs: [[(h.docid, h.score) for h in hits] for hits in
                        ours.batch_search_terms({q: encoded[q] for q in qs}, k, threads=threads).values()],
            qids, batch)
        runs["ours-pruned"] = timed_each(
            lambda q: [(h.docid, h.score) for h in ours_pruned.search_terms(encoded[q], k)], qids)
        runs["ours-exhaustive"] = timed_each(
            lambda q: [(h.docid, h.score) for h in ours_exhaustive.search_terms(encoded[q], k)], qids)
        runs["ours-blockmax"] = timed_each(
            lambda q: [(h.docid, h.score) for h in ours_blockmax.search_terms(encoded[q], k)], qids)
        runs["ours-blockmax-approx"] = timed_each(
            lambda q: [(h.docid, h.score) for h in ours_approx.search_terms(encoded[q], k)], qids)
        for peer, peer_dir in peer_indexes.items():
            runs.update(peer_runs(peer, peer_dir, [encoded[q] for q in qids], k, threads, batch))
        runs["ours-lucene"] = timed_each(
            lambda q: [(h.docid, h.score) for h in ours_lucene.search_terms(encoded[q], k)], qids)
        runs["ours-lucene-batch"] = timed_batches(
            lambda qs: [[(h.docid, h.score) for h in hits] for hits in
                        ours_lucene.batch_search_terms({q: encoded[q] for q in qs}, k, threads=threads).values()],
            qids, batch)
        runs["pyserini"] = timed_each(lambda q: [(h.docid, h.score) for h in theirs.search(q, k)], qids)

        def pyserini_batch(qs):
            found = theirs.batch_search(qs, qs, k=k, threads=threads)
            return [[(h.docid, h.score) for h in found[q]] for q in qs]
        runs["pyserini-batch"] = timed_batches(pyserini_batch, qids, batch)
        for label, search in seismic.items():
            runs[label] = timed_each(lambda q, search=search: search(encoded[q], k), qids)
        for searcher, (latencies, results) in runs.items():
            row = {"index": name, "query_set": query_set, "k": k, "searcher": searcher, **summary(latencies),
                   "same_results": None, "recall_at_10": None, "documents": len(docids), "queries": len(latencies)}
            if searcher.startswith(("seismic", "bmp")) or searcher == "ours-blockmax-approx":
                row["recall_at_10"] = float(np.mean([recall_at_10([d for d, _ in r], e)
                                                     for r, e in zip(results, exact)]))
            if searcher.startswith("bmp"):  # BMP scores with its own rescaled query weights: documents only
                row["same_results"] = all(same_documents(r, e) for r, e in zip(results, exact))
            elif searcher != "bruteforce" and not searcher.startswith("seismic") and searcher != "ours-blockmax-approx":
                row["same_results"] = all(same_as_exact(r, e) for r, e in zip(results, exact))
            rows.append(row)
    for searcher in (ours, ours_lucene, ours_pruned, ours_exhaustive, ours_blockmax, ours_approx):
        searcher.close()
    return rows


# ---- peers: PISA and BMP (scripts/peers.py), on the same quantized vectors ----------------------

PEERS = ("pisa", "bmp")
PEER_MODULES = {"pisa": "pyterrier_pisa", "bmp": "bmp"}  # the module each peer imports
BMP_APPROX_ALPHA = 0.8


def ordered_collection(folder: Path) -> Path:
    """The benchmark collection with its documents in our block-max engine's order (recursive graph
    bisection), written beside it on first use: the peers are built from it, so that PISA and BMP get
    the document order their speed depends on, the same as ours."""
    out = folder / "collection-bp"
    if (out / "done").exists():
        return out
    t = time.perf_counter()
    perm = np.load(folder / "index" / BLOCK_DIR / "perm.npy")
    line_of = {}
    for path in collection_files(folder / "collection"):
        with open(path, encoding="utf-8") as fh:
            for line in fh:
                if line.strip():
                    line_of[json.loads(line)["id"]] = line
    with Searcher(folder / "index", pretokenized=True, engine="lucene") as searcher:
        docids = searcher.docids  # Lucene's docid order, which the permutation refers to
    if len(line_of) != len(docids):
        raise SystemExit(f"{folder}: the collection has {len(line_of)} documents, the index {len(docids)}")
    out.mkdir(exist_ok=True)
    with open(out / "part-00000.jsonl", "w", encoding="utf-8") as fh:
        fh.writelines(line_of[docids[row]] for row in perm.tolist())
    (out / "done").write_text("")
    print(f"{folder.name}: collection written in BP order in {time.perf_counter() - t:.0f} s", file=sys.stderr,
          flush=True)
    return out


def peer_index(peer: str, folder: Path) -> Path:
    """The peer's index of a benchmark collection, built beside it on first use from the collection in
    our BP order (:func:`ordered_collection`)."""
    import peers

    t = time.perf_counter()
    source = ordered_collection(folder)
    if peer == "pisa":
        out = folder / "pisa-bp"
        if not (out / "pt_meta.json").exists():
            peers.pisa_index(source, out)
            print(f"{folder.name}: PISA index built in {time.perf_counter() - t:.0f} s", file=sys.stderr, flush=True)
        return out
    out = folder / "bmp-bp" / "index.bmp"
    if not out.exists():
        stats = peers.bmp_index(source, out)
        print(f"{folder.name}: BMP index built in {time.perf_counter() - t:.0f} s ({stats['clipped_postings']} "
              "impacts above 255 clipped)", file=sys.stderr, flush=True)
    return out


def peer_runs(peer: str, index: Path, queries: list[dict[str, int]], k: int, threads: int, batch: int) -> dict:
    """The peer's rows for one k: PISA MaxScore and block-max WAND (one query at a time, and MaxScore
    in batches on --threads threads); BMP exact (alpha 1) and approximate (alpha 0.8)."""
    import peers

    runs = {}
    if peer == "pisa":
        for algorithm, label in (("maxscore", "pisa-maxscore"), ("block_max_wand", "pisa-bmw")):
            search = peers.pisa_searcher(index, k, algorithm)
            runs[label] = timed_each(search, queries)
        engine = peers._PisaEngine(index)
        runs["pisa-maxscore-batch"] = timed_batches(lambda qs: engine.run(qs, k, "maxscore", threads), queries, batch)
    else:
        for alpha, label in ((1.0, "bmp"), (BMP_APPROX_ALPHA, f"bmp-alpha{BMP_APPROX_ALPHA}")):
            runs[label] = timed_each(peers.bmp_searcher(index, k, alpha=alpha), queries)
    return runs


def seismic_index(folder: Path, docs, docids: list[str], threads: int):
    """The Seismic index of a benchmark collection, built on first use and saved beside it, or None
    where pyseismic-lsr is not installed. Default build settings, except at 1M documents (below)."""
    os.environ.setdefault("RAYON_NUM_THREADS", str(threads))  # read when seismic is first imported
    try:
        from seismic import SeismicDataset, SeismicIndex
    except ImportError:
        print("seismic: pyseismic-lsr is not installed (pip install pyseismic-lsr); skipped", file=sys.stderr)
        return None
    saved = folder / "seismic.index.seismic"
    if saved.is_file():
        return SeismicIndex.load(str(saved))
    t = time.perf_counter()
    docs = docs.copy()
    docs.sort_indices()  # term ids strictly increasing within each document
    dataset = SeismicDataset(dim=docs.shape[1])
    dataset.add_documents_by_id(list(docids), docs.indices.astype(np.int64), docs.data.astype(np.float32),
                                docs.indptr.astype(np.int64))
    # Seismic keeps n_postings x vocabulary postings in all (3,500 by default: no pruning up to about
    # 100k documents here); at 1M documents 1,500 keeps about 13% of them (Seismic's guidelines: 10-30%)
    settings = {"n_postings": 1500} if docs.shape[0] > 500_000 else {}
    index = SeismicIndex.build_from_dataset(dataset, **settings)
    del dataset, docs
    index.save(str(folder / "seismic"))
    print(f"seismic: built in {time.perf_counter() - t:.0f} s ({settings or 'default settings'})", file=sys.stderr,
          flush=True)
    return index


def seismic_searcher(index, vocab: list[str], query_cut: int = 20, heap_factor: float = 0.8):
    """Search one {term: weight} query for its top k: its ``query_cut`` heaviest terms' lists are
    scanned, blocks below ``heap_factor`` of the current k-th score skipped (defaults: 20 and 0.8)."""
    from seismic import get_seismic_string

    text = get_seismic_string()
    term_id = {t: str(i) for i, t in enumerate(vocab)}

    def search(terms: dict[str, int], k: int) -> list[tuple[str, float]]:
        known = [(term_id[t], w) for t, w in terms.items() if t in term_id]
        components = np.array([c for c, _ in known], dtype=text)
        values = np.array([w for _, w in known], dtype=np.float32)
        return [(doc, score) for _, score, doc in index.search("q", components, values, k=k, query_cut=query_cut,
                                                               heap_factor=heap_factor)]
    return search


def end_to_end(folder: Path, queries: list[tuple[str, str]]) -> list[dict]:
    """Text query to hits through Searcher.search (encoding included), one query at a time, k=10."""
    with Searcher(folder / "index") as searcher:
        latencies, _ = timed_each(lambda text: searcher.search(text, k=10), [t for _, t in queries])
        encode_only, _ = timed_each(lambda text: searcher.query_encoder.encode(text), [t for _, t in queries])
    common = {"index": "scifact", "query_set": "scifact", "k": 10, "same_results": None, "recall_at_10": None,
              "queries": len(queries)}
    return [{**common, "searcher": "ours-text", **summary(latencies)},
            {**common, "searcher": "query-encoding", **summary(encode_only)}]


def print_table(rows: list[dict]) -> None:
    by = {(r["index"], r.get("query_set"), r["k"], r["searcher"]): r for r in rows}
    for (index, query_set, k) in dict.fromkeys((r["index"], r.get("query_set"), r["k"]) for r in rows):
        group = [r for r in rows if r["index"] == index and r.get("query_set") == query_set and r["k"] == k]
        docs = group[0].get("documents")
        print(f"\n{index}{f' ({docs:,} documents)' if docs else ''}, {query_set} queries, k={k}: "
              f"{max(r['queries'] for r in group)} queries (brute force timed on {min(r['queries'] for r in group)})")
        print("| searcher | qps | p50 ms | p99 ms | ours / it (qps) | same results | recall@10 |")
        print("|---|---|---|---|---|---|---|")
        for r in group:
            peer = "ours-batch" if r["searcher"].endswith("batch") else "ours"
            ref = by.get((index, query_set, k, peer))
            timed = ref and r["searcher"] not in ("ours-text", "query-encoding")
            ratio = f"{ref['qps'] / r['qps']:.2f}x" if timed else "-"
            same = {True: "yes", False: "NO", None: "-"}[r["same_results"]]
            recall = f"{r['recall_at_10']:.3f}" if r["recall_at_10"] is not None else "-"
            print(f"| {r['searcher']} | {r['qps']:.1f} | {r['p50_ms']:.2f} | {r['p99_ms']:.2f} | {ratio} | {same} | "
                  f"{recall} |", flush=True)
    growth = [(r, by.get(("synthetic-1m", r.get("query_set"), r["k"], r["searcher"]))) for r in rows
              if r["index"] == "synthetic-100k"]
    growth = [(a, b) for a, b in growth if b is not None]
    if growth:
        print("\ngrowth from 100k to 1M documents (p50 latency)")
        print("| searcher | k | p50 ms at 100k | p50 ms at 1M | growth |")
        print("|---|---|---|---|---|")
        for a, b in growth:
            print(f"| {a['searcher']} | {a['k']} | {a['p50_ms']:.2f} | {b['p50_ms']:.2f} | "
                  f"{b['p50_ms'] / a['p50_ms']:.1f}x |")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--indexes", default="scifact,synthetic-100k,synthetic-1m")
    ap.add_argument("--query-sets", default="scifact,arguana",
                    help="test queries of these datasets (judged in qrels/test.tsv), encoded with the default model")
    ap.add_argument("--queries", type=int, default=300, help="at most N queries of each set")
    ap.add_argument("--peers", default="pisa,bmp", help="peer engines (bench extra): pisa, bmp, or none")
    ap.add_argument("--ks", default="10,1000")
    ap.add_argument("--threads", type=int, default=os.cpu_count() or 1, help="batch searchers' threads")
    ap.add_argument("--batch", type=int, default=100, help="queries per batch call")
    ap.add_argument("--root", default="indexes/bench", help="where benchmark indexes are built and kept")
    ap.add_argument("--seed", type=int, default=13, help="synthetic collections' seed")
    ap.add_argument("--no-seismic", action="store_true")
    ap.add_argument("--approx-alpha", type=float, default=0.95, help="ours-blockmax-approx: alpha (default 0.95)")
    ap.add_argument("--seismic-settings", default="",
                    help="more Seismic query settings, CUT:FACTOR,... (query_cut, heap_factor), each a row with its "
                         "recall@10 (e.g. 10:0.7,5:0.6)")
    ap.add_argument("--approx-query-terms", type=int, default=None,
                    help="ours-blockmax-approx: each query's N strongest terms (default: all)")
    ap.add_argument("--brute-queries", type=int, default=50,
                    help="queries timed one by one for the brute-force row (all are checked)")
    ap.add_argument("--prepare-only", action="store_true",
                    help="only build what is missing (indexes, Seismic indexes), time nothing")
    ap.add_argument("--json", default=None)
    args = ap.parse_args()

    root = Path(args.root)
    names = args.indexes.split(",")
    ks = [int(k) for k in args.ks.split(",")]
    folders = {name: ensure_index(name, root, args.seed, args.threads) for name in names}
    if args.prepare_only:
        for name, folder in folders.items():
            if not args.no_seismic:
                _, docids, docs = read_collection(folder)
                seismic_index(folder, docs, docids, args.threads)
        return 0
    scifact = ensure_index("scifact", root, args.seed, args.threads)
    qenc = QueryEncoder.from_index(scifact / "index")
    query_sets, encoded, texts = {}, {}, {}
    for set_name in args.query_sets.split(","):
        queries = test_queries(set_name)[:args.queries]
        for (qid, text), terms in zip(queries, qenc.encode_batch([t for _, t in queries])):
            encoded[f"{set_name}:{qid}"] = terms
        query_sets[set_name] = [f"{set_name}:{q}" for q, _ in queries if encoded[f"{set_name}:{q}"]]
        texts[set_name] = queries
        print(f"{set_name}: {len(query_sets[set_name])} test queries, "
              f"{statistics.mean(len(encoded[q]) for q in query_sets[set_name]):.1f} terms each on average",
              file=sys.stderr, flush=True)
    print(f"{args.threads} threads for batches of {args.batch}", file=sys.stderr, flush=True)
    peers = [] if args.peers == "none" else args.peers.split(",")
    unknown = set(peers) - set(PEERS)
    if unknown:
        raise SystemExit(f"unknown peers {sorted(unknown)}: {', '.join(PEERS)} or none")
    missing = [p for p in peers if importlib.util.find_spec(PEER_MODULES[p]) is None]
    for peer in missing:  # ours and Pyserini still run: the peers are the bench extra's
        print(f"{peer}: skipped, {PEER_MODULES[peer]} is not installed (pip install 'splade-lucene[bench]')",
              file=sys.stderr, flush=True)
    peers = [p for p in peers if p not in missing]

    rows = []
    for name in names:
        rows.extend(bench_index(name, folders[name], query_sets, encoded, ks, args.threads, args.batch,
                                not args.no_seismic, args.brute_queries, peers,
                                {"alpha": args.approx_alpha, "query_terms": args.approx_query_terms},
                                [(int(c), float(f)) for c, f in (x.split(":") for x in args.seismic_settings.split(",")
                                                                 if x)]))
    if "scifact" in names and "scifact" in texts:
        rows.extend(end_to_end(scifact, texts["scifact"]))
    print_table(rows)
    if args.json:
        path = Path(args.json)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps([r for r in rows if r["searcher"] in CONTRACT], indent=2) + "\n")
        extra = path.with_name(path.name.removesuffix(".json") + ".extra.json")
        extra.write_text(json.dumps([r for r in rows if r["searcher"] not in CONTRACT], indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
