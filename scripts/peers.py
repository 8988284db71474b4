"""Thin, exact-as-possible wrappers around two peer learned-sparse engines.

* PISA via ``pyterrier-pisa`` (0.4.9): index built with the official
  ``PisaIndex(path, stemmer='none', stops='none').toks_indexer(scale=1.0)``
  (pure Python + the compiled ``_pisathon`` extension; Java is never started),
  search through ``_pisathon.retrieve`` directly (one query at a time or a
  batch), bypassing the pandas/DataFrame layer of ``PisaRetrieve``.
* BMP via ``bmp`` (0.2.8, Rust/pyo3): ``bmp.Indexer`` / ``bmp.Searcher``.

Scoring is the integer dot product  sum_t q_t * d_t  with the quantized
weights exactly as stored in an Anserini JsonVectorCollection.  Caveats that
cannot be avoided from Python are documented on the functions (and in the
report): PISA lower-cases query terms; BMP clips doc impacts to 8 bit,
re-quantizes query weights so that max(q) == 32 and accumulates in uint16.
"""
from __future__ import annotations

import glob
import gzip
import io
import json
import os
import warnings
from pathlib import Path
from typing import Callable, Dict, Iterator, List, Sequence, Tuple

import numpy as np

Query = Dict[str, int]
Hits = List[Tuple[str, float]]

PISA_ALGORITHMS = {
    # friendly aliases -> names accepted by _pisathon.retrieve
    "maxscore": "maxscore",
    "block_max_maxscore": "block_max_maxscore",
    "bmm": "block_max_maxscore",
    "wand": "wand",
    "block_max_wand": "block_max_wand",
    "bmw": "block_max_wand",
    "ranked_or": "ranked_or",            # exhaustive DAAT
    "ranked_or_taat": "ranked_or_taat",  # exhaustive TAAT (not in the Python enum, but in C++)
    "ranked_and": "ranked_and",
    "block_max_ranked_and": "block_max_ranked_and",
}

BMP_MAX_IMPACT = 255          # BMP stores doc impacts as u8 (values are *truncated*, `as u8`)
BMP_QUERY_MAX_WEIGHT = 32     # bmp::query::MAX_TERM_WEIGHT (query weights rescaled to max 32)


# --------------------------------------------------------------------------------------------
# collection reading
# --------------------------------------------------------------------------------------------

def collection_files(collection_dir) -> List[str]:
    d = str(collection_dir)
    files = sorted(glob.glob(os.path.join(d, "*.jsonl")) + glob.glob(os.path.join(d, "*.jsonl.gz")))
    if not files:
        raise FileNotFoundError(f"no *.jsonl / *.jsonl.gz files in {d}")
    return files


def iter_collection(collection_dir) -> Iterator[Tuple[str, Dict[str, int]]]:
    """Yield (docno, {term: int_weight}) from an Anserini JsonVectorCollection, in file order."""
    for f in collection_files(collection_dir):
        opener = gzip.open if f.endswith(".gz") else open
        with opener(f, "rt", encoding="utf-8") as fin:
            for line in fin:
                if not line.strip():
                    continue
                doc = json.loads(line)
                yield str(doc["id"]), doc["vector"]


# --------------------------------------------------------------------------------------------
# PISA (pyterrier-pisa)
# --------------------------------------------------------------------------------------------

def _pisa_modules():
    # Importing pyterrier_pisa imports pyterrier (~1.5 s) but does NOT start a JVM
    # (pyterrier>=0.11 initialises Java lazily, only for Terrier classes) and downloads nothing.
    import pyterrier_pisa
    from pyterrier_pisa import _pisathon
    return pyterrier_pisa, _pisathon


def pisa_index(collection_dir, out_dir, threads: int = 1, index_encoding: str = "block_simdbp",
               block_size: int = 64, batch_size: int = 100_000, quiet: bool = True) -> dict:
    """Build a PISA index (quantized scorer, weights verbatim) from a JsonVectorCollection.

    Uses ``PisaIndex(out_dir, stemmer='none', stops='none', threads=threads).toks_indexer(scale=1.0)``;
    ``scale`` must be 1.0 (default 100 multiplies every integer weight by 100).  Then prepares the
    block-max metadata + compressed index once (``quantized.q0.bmw.<block_size>[.<encoding>]``)
    so that the first search does not pay for it.  Returns a small stats dict.
    """
    pyterrier_pisa, _pisathon = _pisa_modules()
    if quiet and hasattr(_pisathon, "log_level"):  # not in every release
        _pisathon.log_level(0)   # silences spdlog info lines (PISA's progress bars still print)
    out_dir = Path(out_dir)
    if (out_dir / "pt_meta.json").exists():
        raise FileExistsError(f"PISA index already exists at {out_dir}")
    stats = {"docs": 0, "postings": 0, "skipped_nonpositive": 0, "uppercase_terms": set()}

    def docs():
        for docno, vec in iter_collection(collection_dir):
            stats["docs"] += 1
            toks = {}
            for t, w in vec.items():
                w = int(w)
                if w <= 0:
                    stats["skipped_nonpositive"] += 1
                    continue
                if t != t.lower():
                    # PISA lower-cases (ASCII) *query* terms even with stemmer='none', but the
                    # toks indexer stores terms verbatim -> such terms could never be matched.
                    stats["uppercase_terms"].add(t)
                toks[t] = float(w)
            stats["postings"] += len(toks)
            yield {"docno": docno, "toks": toks}

    index = pyterrier_pisa.PisaIndex(str(out_dir), stemmer="none", stops="none", threads=threads,
                                     index_encoding=index_encoding, batch_size=batch_size)
    index.toks_indexer(scale=1.0, threads=threads).index(docs())
    # build wand data (block-max) + compressed index now
    ctxt = _pisathon.RetrievalContext()
    _pisathon.prepare_index(ctxt, str(out_dir), index_encoding, "quantized", "",
                            block_size=block_size, quantize=0, stop_fname="")
    del ctxt
    if stats["uppercase_terms"]:
        warnings.warn(f"{len(stats['uppercase_terms'])} terms contain upper-case letters; PISA lower-cases "
                      "query terms, so they will not match unless queries are lower-cased consistently")
    stats["uppercase_terms"] = sorted(stats["uppercase_terms"])
    stats.update(index_encoding=index_encoding, block_size=block_size)
    with open(out_dir / "peers_stats.json", "wt") as f:
        json.dump(stats, f)
    return stats


class _PisaEngine:
    """Holds one _pisathon.RetrievalContext (mmapped index + wand data)."""

    def __init__(self, index_dir, index_encoding: str = "block_simdbp", block_size: int = 64):
        _, self._pisathon = _pisa_modules()
        self.index_dir = str(index_dir)
        self.ctxt = self._pisathon.RetrievalContext()
        # scorer 'quantized' -> score = sum_t q_t * impact; stemmer '' (none); no stop-word file.
        self._pisathon.prepare_index(self.ctxt, self.index_dir, index_encoding, "quantized", "",
                                     block_size=block_size, quantize=0, stop_fname="")

    @staticmethod
    def _prep(query: Query) -> dict:
        # _pisathon reads weights with PyFloat_AS_DOUBLE (no type check!): values MUST be Python
        # floats, an int gives garbage.  Each term is then repeated int(weight) times, i.e. the
        # weight is truncated to an integer and used as the query term frequency.
        return {str(t): float(w) for t, w in query.items() if w >= 1}

    def run(self, queries: Sequence[Query], k: int, algorithm: str, threads: int = 1) -> List[Hits]:
        algo = PISA_ALGORITHMS[algorithm]
        n = len(queries)
        inp = [(i, self._prep(q)) for i, q in enumerate(queries)]
        qidx = np.empty(n * k, dtype=np.int32)
        docnos = np.empty(n * k, dtype=object)
        ranks = np.empty(n * k, dtype=np.int32)
        scores = np.empty(n * k, dtype=np.float32)
        size = self._pisathon.retrieve(self.ctxt, algo, inp, k=k, threads=threads, pretokenised=1,
                                       query_weighted=1, result_qidxs=qidx, result_docnos=docnos,
                                       result_ranks=ranks, result_scores=scores)
        out: List[Hits] = [[] for _ in range(n)]
        d = docnos[:size].tolist()
        s = scores[:size].tolist()
        for i, q in enumerate(qidx[:size].tolist()):
            out[q].append((d[i], s[i]))
        return out


def pisa_searcher(index_dir, k: int, algorithm: str = "block_max_wand",
                  index_encoding: str = "block_simdbp", block_size: int = 64) -> Callable[[Query], Hits]:
    """Return ``search(query) -> [(docno, score)]`` (one query per call, single thread).

    algorithm: 'maxscore', 'block_max_wand' (alias 'bmw'), 'block_max_maxscore', 'wand',
    'ranked_or', ... .  Scores are float32 values of the exact integer dot product.
    Results are sorted by score desc, then internal docid asc.
    """
    eng = _PisaEngine(index_dir, index_encoding, block_size)
    algo = PISA_ALGORITHMS[algorithm]
    retrieve = eng._pisathon.retrieve
    ctxt = eng.ctxt
    qidx = np.empty(k, dtype=np.int32)
    ranks = np.empty(k, dtype=np.int32)
    scores = np.empty(k, dtype=np.float32)

    def search(query: Query) -> Hits:
        # a fresh object array per call: _pisathon stores new str refs into it without
        # releasing what was there, so reusing one would leak the previous docnos.
        docnos = np.empty(k, dtype=object)
        size = retrieve(ctxt, algo, ((0, {t: float(w) for t, w in query.items()}),), k=k, threads=1,
                        pretokenised=1, query_weighted=1, result_qidxs=qidx, result_docnos=docnos,
                        result_ranks=ranks, result_scores=scores)
        return list(zip(docnos[:size].tolist(), scores[:size].tolist()))

    search.engine = eng  # keep the context alive / expose it
    return search


def pisa_batch_search(index_dir, queries: Sequence[Query], k: int, algorithm: str = "block_max_wand",
                      threads: int = 1, **kw) -> List[Hits]:
    """Search many queries in one _pisathon.retrieve call (``threads`` > 1 uses a TBB pool)."""
    return _PisaEngine(index_dir, **kw).run(queries, k, algorithm, threads)


def pisa_pyterrier_retriever(index_dir, k: int, algorithm: str = "block_max_wand", threads: int = 1):
    """The documented pyterrier route (DataFrame in/out), for reference/overhead comparison.
    Input DataFrame columns: qid, query_toks ({term: weight}); output adds docno, score, rank."""
    pyterrier_pisa, _ = _pisa_modules()
    idx = pyterrier_pisa.PisaIndex(str(index_dir), stemmer="none", stops="none", threads=threads)
    # toks_scale=1.0 is essential (default 100 multiplies query weights by 100)
    return idx.quantized(num_results=k, query_algorithm=algorithm, threads=threads, toks_scale=1.0,
                         query_weighted=True)


# --------------------------------------------------------------------------------------------
# BMP
# --------------------------------------------------------------------------------------------

def bmp_index(collection_dir, out_path, bsize: int = 32, compress_range: bool = False,
              threads: int = 1, impact_scale: float = 1.0) -> dict:
    """Build a BMP index file from a JsonVectorCollection with ``bmp.Indexer``.

    Impacts > 255 are clipped to 255 (BMP would otherwise silently truncate with ``as u8``,
    e.g. 270 -> 14).  bsize: docs per block, <= 256 (BMP stores in-block doc offsets as u8);
    the Python package defaults to 32 (README / pyterrier ``BmpIndex.indexer``); the Rust README
    example uses ``-b 8 --compress-range`` for MS MARCO.  ``impact_scale`` < 1 (weights become
    max(1, round(w * impact_scale)) before clipping) trades precision for head-room against BMP's
    uint16 score accumulator, which wraps silently above 65535.  Writes ``<out_path>.meta.json`` with
    the vocabulary (used to drop unknown query terms, which would make BMP panic) and stats.
    """
    if not 1 <= bsize <= 256:
        raise ValueError("bsize must be in [1, 256]")
    # rayon (used by Indexer.finish) reads this when its global pool is first created
    os.environ.setdefault("RAYON_NUM_THREADS", str(threads))
    import bmp
    out_path = str(out_path)
    Path(out_path).parent.mkdir(parents=True, exist_ok=True)
    ix = bmp.Indexer(out_path, bsize, compress_range)
    vocab = set()
    stats = {"docs": 0, "postings": 0, "clipped_postings": 0, "max_weight_seen": 0, "skipped_nonpositive": 0}
    for docno, vec in iter_collection(collection_dir):
        v = {}
        for t, w in vec.items():
            w = int(w)
            if w <= 0:
                stats["skipped_nonpositive"] += 1
                continue
            if impact_scale != 1.0:
                w = max(1, int(round(w * impact_scale)))
            if w > stats["max_weight_seen"]:
                stats["max_weight_seen"] = w
            if w > BMP_MAX_IMPACT:
                stats["clipped_postings"] += 1
                w = BMP_MAX_IMPACT
            v[t] = w
        vocab.update(v)
        ix.add_document(docno, v)
        stats["docs"] += 1
        stats["postings"] += len(v)
    if len(vocab) > 65536:
        raise ValueError("BMP stores term ids in the block forward index as u16 (<= 65536 terms)")
    ix.finish()
    stats.update(bsize=bsize, compress_range=compress_range, terms=len(vocab), impact_scale=impact_scale)
    with open(out_path + ".meta.json", "wt") as f:
        json.dump({**stats, "vocab": sorted(vocab)}, f)
    return stats


def bmp_effective_query(query: Query) -> Dict[str, int]:
    """The integer query weights BMP's Searcher really uses: ceil(q * (32 / max q)) in float32."""
    q = {t: np.float32(w) for t, w in query.items()}
    if not q:
        return {}
    scale = np.float32(BMP_QUERY_MAX_WEIGHT) / max(q.values())
    return {t: int(np.ceil(np.float32(w * scale))) for t, w in q.items()}


def _bmp_vocab(index_path):
    meta = str(index_path) + ".meta.json"
    if os.path.exists(meta):
        with open(meta) as f:
            return frozenset(json.load(f)["vocab"])
    return None


def bmp_searcher(index_path, k: int, alpha: float = 1.0, beta: float = 1.0) -> Callable[[Query], Hits]:
    """Return ``search(query) -> [(docno, score)]`` using ``bmp.Searcher(path).search``.

    NB: Searcher.search rescales the query so that its largest weight becomes 32
    (``ceil(w * 32/max_w)``), so scores are  sum_t q'_t * min(d_t,255)  (returned as float of a
    u16), not the original dot product; alpha=1, beta=1 is exact w.r.t. those weights except for
    BMP's own edge cases (see report).  Unknown terms are removed (BMP panics if a query has no
    known term); a remaining Rust panic is turned into an empty result.
    """
    import bmp
    s = bmp.Searcher(str(index_path))
    vocab = _bmp_vocab(index_path)
    ssearch = s.search

    def search(query: Query) -> Hits:
        if vocab is not None:
            q = {t: float(w) for t, w in query.items() if w > 0 and t in vocab}
        else:
            q = {t: float(w) for t, w in query.items() if w > 0}
        if not q:
            return []
        try:
            docnos, scores = ssearch(q, k, alpha, beta)
        except BaseException as e:  # pyo3_runtime.PanicException derives from BaseException
            if type(e).__name__ != "PanicException":
                raise
            return []
        return list(zip(docnos, scores))

    search.searcher = s
    return search


def bmp_batch_search(index_path, queries: Sequence[Query], k: int, alpha: float = 1.0, beta: float = 1.0,
                     tmp_dir: str = None) -> List[Hits]:
    """Batch search with ``bmp.search(index, queries_file, k, alpha, beta) -> TREC run str``.

    It reloads the index on every call and prints progress to stderr.  The query file is
    ``qid: tok tok tok`` with each token repeated by its (integer) weight; the Rust side rescales
    only queries whose max weight exceeds 32 (same ceil formula as Searcher), so queries with
    max weight <= 32 keep their weights here but are *up*-scaled by Searcher.
    """
    import tempfile

    import bmp
    vocab = _bmp_vocab(index_path)
    empty = [i for i, q in enumerate(queries)
             if not any(w >= 1 and (vocab is None or t in vocab) for t, w in q.items())]
    if empty:
        raise ValueError(f"queries {empty[:5]} have no indexed term; bmp.search would panic")
    with tempfile.TemporaryDirectory(dir=tmp_dir) as d:
        qf = os.path.join(d, "queries.txt")
        with open(qf, "wt") as f:
            for i, q in enumerate(queries):
                toks = []
                for t, w in q.items():
                    if w >= 1 and (vocab is None or t in vocab):
                        toks.extend([t] * int(w))
                f.write(f"{i}: {' '.join(toks)}\n")
        run = bmp.search(str(index_path), qf, k, alpha, beta)
    out: List[Hits] = [[] for _ in queries]
    for line in io.StringIO(run):
        qid, _, docno, _rank, score, _tag = line.split()
        out[int(qid)].append((docno, float(score)))
    return out
