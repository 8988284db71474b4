"""An impact index's postings, compressed and memory-mapped, for exact search faster than Lucene's.

A Lucene impact index stores, for each term, the documents it occurs in and an integer impact (the
term frequency of the pseudo-document, that is the quantized weight). A query's score for a document
is the sum of ``query weight * impact`` over the terms they share. :class:`ImpactTable` keeps those
postings in the layout of :mod:`splade_lucene.indexing.compressed` (each term cut into impact tiers, document
numbers gap-coded in blocks, impacts one byte above their tier's base: about 2.5 bytes a posting)
and scores a query term-at-a-time into one integer accumulator, exhaustively or pruned (stopping once
the postings left cannot change the top k). Either way the result is exact: the same documents, the
same integer scores and the same order as Lucene's search (ties broken by doc id as Anserini does).

The table lives in the index folder (:data:`TABLE_DIR`), written by :func:`write_impact_table` from
the collection the index was built from (``build_index`` does it) and then checked against the
Lucene index itself: the same documents, the same set of terms, and for every term the same
document frequency and total impact. It records the Lucene commit it describes; a table that no
longer fits its index is not used. Its arrays are ``.npy`` files opened as read-only memory maps:
opening is instant whatever the size, and every process on a machine shares one copy in the page
cache.
"""

from __future__ import annotations

import json
import threading
from pathlib import Path
from typing import Iterator, Sequence

import numpy as np

from ..core.atomic import folder_in_place, naming_a_full_disk, output_lock, save_array
from ..core.errors import SpladeLuceneError
from ..formats.collection import collection_files, open_text
from . import compressed
from .lucene import docid_table, field_terms, lucene_reader

TABLE_DIR = "impacts"
TABLE_VERSION = 2
# ImpactTable.top prunes when not told only up to this k and on tables of at most this many documents:
# pruning wins at k=10 on SciFact's 5,183 documents (SciFact and ArguAna queries: 1.3x and 1.5x) and
# loses on every 100k and 1M index measured: real text (wiki-passages-100k: 1.2x and 1.5x slower) and
# synthetic documents (1.2-1.4x); at k=1000 it loses everywhere (docs/performance.md). The document
# bound lies between the sizes measured, not at a measured crossing.
PRUNE_MAX_K = 100
PRUNE_MAX_DOCS = 20_000
_META = "table.json"
# Integer scores stay exact in Lucene's float32 below this; a query that could reach it goes to Lucene.
EXACT_LIMIT = 2 ** 24


class ImpactTableError(SpladeLuceneError, RuntimeError):
    """An impact table that cannot be written or does not fit its index."""


def collection_records(collections: list[Path]) -> Iterator[tuple[str, dict[str, int]]]:
    """(doc id, {term: impact}) of each record of JsonVectorCollection or pseudo-document folders (or
    single part files)."""
    files = []
    for collection in collections:
        found = [collection] if collection.is_file() else collection_files(collection)
        if not found:
            raise ImpactTableError(f"{collection} holds no .jsonl collection files")
        files.extend(found)
    for path in files:
        with open_text(path) as fh:
            for line in fh:
                if not line.strip():
                    continue
                rec = json.loads(line)
                if "vector" in rec:
                    yield rec["id"], rec["vector"]
                else:
                    counts: dict[str, int] = {}
                    for term in rec["contents"].split():
                        counts[term] = counts.get(term, 0) + 1
                    yield rec["id"], counts


def _term_totals(values: np.ndarray, offsets: np.ndarray) -> np.ndarray:
    """Each term's total impact (int64), summed a slice of about 2^24 postings at a time (a whole
    int64 copy of the impacts would double the table's memory)."""
    terms = len(offsets) - 1
    total = np.zeros(terms, dtype=np.int64)
    start = 0
    while start < terms:
        end = int(np.searchsorted(offsets, offsets[start] + (1 << 24), side="right")) - 1
        end = min(max(end, start + 1), terms)  # every term has a posting: the slices are not empty
        lo, hi = int(offsets[start]), int(offsets[end])
        total[start:end] = np.add.reduceat(values[lo:hi].astype(np.int64), offsets[start:end] - lo)
        start = end
    return total


def _sort_postings(docs: np.ndarray, values: np.ndarray, offsets: np.ndarray) -> None:
    """Order each term's postings by Lucene docid, in place (they arrive in collection order, which is
    docid order only for a one-thread build). Equal docids cannot occur: a document is read once."""
    chunk, last = 1 << 24, len(docs) - 1
    unsorted = []
    for lo in range(0, max(0, last), chunk):
        hi = min(lo + chunk, last)
        falling = np.nonzero(docs[lo + 1:hi + 1] < docs[lo:hi])[0] + (lo + 1)  # posting i below i - 1 ...
        term_of = np.searchsorted(offsets, falling, side="right") - 1
        unsorted.append(np.unique(term_of[falling != offsets[term_of]]))  # ... within one term
    unsorted = np.unique(np.concatenate(unsorted)) if unsorted else np.zeros(0, np.int64)
    for term in unsorted.tolist():
        lo, hi = int(offsets[term]), int(offsets[term + 1])
        order = np.argsort(docs[lo:hi], kind="stable")
        docs[lo:hi] = docs[lo:hi][order]
        values[lo:hi] = values[lo:hi][order]


def _commit(reader) -> dict:
    return {"max_doc": int(reader.maxDoc()), "num_docs": int(reader.numDocs()), "version": int(reader.getVersion())}


def write_impact_table(index_dir: str | Path, collection: str | Path | Sequence[str | Path], *,
                       field: str = "contents") -> Path:
    """Write ``index_dir/impacts`` from the collection ``index_dir`` was built from (or the
    collections of a merged index's parts), and check it against the index: every document, every
    term, each term's document frequency and total impact. Raises :class:`ImpactTableError` (writing
    nothing) where they differ."""
    index_dir = Path(index_dir)
    collections = [Path(collection)] if isinstance(collection, (str, Path)) else [Path(c) for c in collection]
    collection = collections[0] if len(collections) == 1 else ", ".join(map(str, collections))
    with output_lock(index_dir / TABLE_DIR), naming_a_full_disk(index_dir / TABLE_DIR):
        with lucene_reader(index_dir) as reader:
            commit = _commit(reader)
            if commit["num_docs"] != commit["max_doc"]:
                raise ImpactTableError(f"{index_dir} has deleted documents; "
                                       "an impact table describes whole indexes only")
            lucene_terms = field_terms(reader, field)
            docids = docid_table(index_dir, reader)
        row_of = {d: i for i, d in enumerate(docids)}
        if len(row_of) != len(docids):
            raise ImpactTableError(f"{index_dir}: duplicate doc ids in the index")

        # Each term's slot in the table is known from Lucene's document frequencies: the postings are
        # placed as the collection streams by (in chunks, vectorized), so memory is the table itself
        # (8 bytes a posting) and one chunk, whatever the collection's size.
        terms = list(lucene_terms)
        term_index = {t: i for i, t in enumerate(terms)}
        df = np.fromiter((lucene_terms[t][0] for t in terms), dtype=np.int64, count=len(terms))
        offsets = np.zeros(len(terms) + 1, dtype=np.int64)
        np.cumsum(df, out=offsets[1:])
        docs = np.empty(int(offsets[-1]), dtype=np.int32)
        values = np.empty(int(offsets[-1]), dtype=np.int32)
        cursor = offsets[:-1].copy()
        seen_rows = np.zeros(len(docids), dtype=bool)

        def mismatch(detail: str) -> ImpactTableError:
            return ImpactTableError(f"{collection} does not describe {index_dir}: {detail}")

        def place(t_buf: list[int], r_buf: list[int], w_buf: list[int]) -> None:
            t = np.asarray(t_buf, dtype=np.int32)
            w = np.asarray(w_buf, dtype=np.int64)
            if len(w) and int(w.max()) >= 2 ** 31:
                raise ImpactTableError(f"{collection}: an impact does not fit in 32 bits")
            order = np.argsort(t, kind="stable")
            ts = t[order]
            counts = np.bincount(ts, minlength=len(terms))
            first = np.zeros(len(terms), dtype=np.int64)
            np.cumsum(counts[:-1], out=first[1:])
            pos = cursor[ts] + (np.arange(len(ts), dtype=np.int64) - first[ts])
            cursor[:] += counts
            over = np.nonzero(cursor > offsets[1:])[0]
            if len(over):
                raise mismatch(f"terms in more documents than the index has them in {[terms[i] for i in over[:5]]}")
            docs[pos] = np.asarray(r_buf, dtype=np.int32)[order]
            values[pos] = w[order]

        t_buf: list[int] = []
        r_buf: list[int] = []
        w_buf: list[int] = []
        records = 0
        for docid, vector in collection_records(collections):
            row = row_of.get(docid)
            if row is None:
                if not any(w > 0 for w in vector.values()):
                    continue  # nothing to index: Anserini leaves the document out (foreign collections)
                raise ImpactTableError(f"document {docid!r} of {collection} is not in {index_dir}")
            if seen_rows[row]:
                raise ImpactTableError(f"{collection} has document {docid!r} twice")
            seen_rows[row] = True
            records += 1
            kept = {t: w for t, w in vector.items() if w > 0}  # Anserini indexes no zero weights
            try:
                t_buf.extend(term_index[t] for t in kept)
            except KeyError as exc:
                raise mismatch(f"term {exc.args[0]!r} of document {docid!r} is not in the index") from None
            r_buf.extend([row] * len(kept))
            w_buf.extend(kept.values())
            if len(t_buf) >= 2_000_000:
                place(t_buf, r_buf, w_buf)
                t_buf, r_buf, w_buf = [], [], []
        place(t_buf, r_buf, w_buf)
        del t_buf, r_buf, w_buf
        if records != len(docids):
            raise ImpactTableError(f"{collection} has {records} records for the {len(docids)} documents of {index_dir}")
        short = np.nonzero(cursor != offsets[1:])[0]
        if len(short):
            raise mismatch(f"terms in fewer documents than the index has them in {[terms[i] for i in short[:5]]}")
        total = _term_totals(values, offsets)
        ttf = np.fromiter((lucene_terms[t][1] for t in terms), dtype=np.int64, count=len(terms))
        differ = np.nonzero(total != ttf)[0]
        if len(differ):
            raise mismatch(f"terms with other total impacts {[terms[i] for i in differ[:5]]}")
        _sort_postings(docs, values, offsets)
        max_impact = int(values.max()) if len(values) else 0
        arrays = compressed.encode(offsets, docs, values)
        # each document's rank among the doc ids, for ordering ties by id without comparing strings
        id_rank = np.empty(len(docids), dtype=np.int32)
        id_rank[np.argsort(np.asarray(docids, dtype=object), kind="stable")] = np.arange(len(docids), dtype=np.int32)

        target = index_dir / TABLE_DIR
        with folder_in_place(target, "impacts.write") as tmp:
            for name, array in arrays.items():
                save_array(tmp / f"{name}.npy", array)
            save_array(tmp / "id_rank.npy", id_rank)
            (tmp / "terms.json").write_text(json.dumps(terms, ensure_ascii=False), encoding="utf-8")
            (tmp / _META).write_text(json.dumps({
                "version": TABLE_VERSION, "field": field, "commit": commit, "terms": len(terms),
                "postings": int(offsets[-1]), "max_impact": max_impact, "block": compressed.BLOCK,
                "bytes": int(sum(a.nbytes for a in arrays.values()))}, indent=2) + "\n")
        return target


class ImpactTable:
    """The postings of an impact index, memory-mapped, with exact top-k search.

    Open it with :meth:`load` (or build one in memory with :meth:`from_postings`); :meth:`top` gives
    the (Lucene docid, score) pairs Lucene would return for a query, or ``None`` where the query is
    one this table does not answer exactly (a weight below 1, or scores that could pass float32's
    exact integers), to be left to Lucene. Any number of threads may search one table at once.
    """

    def __init__(self, terms: list[str], arrays: dict[str, np.ndarray], id_rank: np.ndarray, max_impact: int):
        self.terms = terms
        self.term_ids = {t: i for i, t in enumerate(terms)}
        self.arrays = arrays
        self.id_rank = id_rank
        self.max_impact = max_impact
        self.num_docs = len(id_rank)
        posts = arrays["block_post"][arrays["run_block"][arrays["term_runs"]]]
        self._df = np.diff(posts)
        self._scratch = threading.local()

    @classmethod
    def from_postings(cls, terms: list[str], offsets: np.ndarray, docs: np.ndarray, impacts: np.ndarray,
                      id_rank: np.ndarray) -> "ImpactTable":
        """A table in memory from term-major postings: ``offsets`` (one per term, and the end) into
        ``docs`` (each term's Lucene docids ascending) and ``impacts`` (at least 1); ``id_rank``: each
        document's rank in doc id order (ties by id)."""
        arrays = compressed.encode(offsets, docs, impacts)
        return cls(list(terms), arrays, np.asarray(id_rank, dtype=np.int32), int(np.max(impacts, initial=0)))

    @classmethod
    def load(cls, index_dir: str | Path, reader=None) -> "ImpactTable | None":
        """The index's table, memory-mapped (processes on one machine share one copy in the page
        cache), or ``None`` where the index has none. A table written for another commit of the index
        raises :class:`ImpactTableError`. ``reader``: an open Lucene reader on the index, to compare
        commits with (else one is opened)."""
        folder = Path(index_dir) / TABLE_DIR
        if not (folder / _META).is_file():
            return None
        meta = json.loads((folder / _META).read_text())
        if meta.get("version") != TABLE_VERSION:
            raise ImpactTableError(f"{folder} is a version {meta.get('version')} table; rewrite it "
                                   "(splade-lucene impacts)")
        if reader is None:
            with lucene_reader(index_dir) as r:
                commit = _commit(r)
        else:
            commit = _commit(reader)
        if commit != meta["commit"]:
            raise ImpactTableError(f"{folder} was written for another state of the index ({meta['commit']}, "
                                   f"the index is now {commit}); rewrite it (splade-lucene impacts) or delete it")
        try:
            terms = json.loads((folder / "terms.json").read_text(encoding="utf-8"))
            arrays = {name: _mapped(folder / f"{name}.npy") for name in compressed.ARRAYS}
            table = cls(terms, arrays, _mapped(folder / "id_rank.npy"), int(meta["max_impact"]))
        except (OSError, ValueError, KeyError, IndexError) as err:
            raise ImpactTableError(f"{folder} is damaged ({err}); rewrite it (splade-lucene impacts)") from err
        if (len(arrays["term_runs"]) != len(terms) + 1 or table.postings != meta["postings"]
                or len(arrays["values"]) != meta["postings"] or table.num_docs != commit["max_doc"]):
            raise ImpactTableError(f"{folder} is damaged: array lengths disagree; rewrite it (splade-lucene impacts)")
        return table

    @property
    def postings(self) -> int:
        return int(self.arrays["block_post"][-1])

    @property
    def nbytes(self) -> int:
        """Bytes of the postings (the arrays :meth:`top` reads, the doc id ranks aside)."""
        return int(sum(a.nbytes for a in self.arrays.values()))

    def df(self, term: str) -> int:
        """The number of documents holding ``term`` (0 for a term not in the index)."""
        i = self.term_ids.get(term)
        return 0 if i is None else int(self._df[i])

    def postings_of(self, term: str) -> tuple[np.ndarray, np.ndarray]:
        """A term's (Lucene docids ascending, impacts); empty arrays for a term not in the index."""
        i = self.term_ids.get(term)
        if i is None:
            return np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.int64)
        return compressed.term_postings(self.arrays, i)

    def document(self, row: int) -> dict[str, int]:
        """One document's {term: impact} (``row``: its Lucene docid), found block by block in every
        term's runs: for inspecting a document, not for bulk use."""
        if not 0 <= row < self.num_docs:
            raise IndexError(f"no document {row} in a table of {self.num_docs}")
        term_numbers, impacts = compressed.document(self.arrays, int(row))
        return {self.terms[t]: int(v) for t, v in zip(term_numbers.tolist(), impacts.tolist())}

    def query_arrays(self, terms: dict[str, int]) -> tuple[np.ndarray, np.ndarray] | None:
        """A query's (term numbers, integer weights) over the table's terms (terms not in the index
        dropped), or ``None`` where the table does not answer it exactly (a weight below 1, or scores
        that could pass float32's exact integers)."""
        found = [(self.term_ids[t], w) for t, w in terms.items() if t in self.term_ids]
        if any(w < 1 for _, w in terms.items()) or sum(w for _, w in found) * self.max_impact >= EXACT_LIMIT:
            return None
        return (np.array([t for t, _ in found], dtype=np.int64), np.array([w for _, w in found], dtype=np.int64))

    def top(self, terms: dict[str, int], k: int, prune: bool | None = None) -> list[tuple[int, float]] | None:
        """The top ``k`` (Lucene docid, score) by score, then doc id: Lucene's hits for the query.
        ``prune``: stop reading postings once the rest cannot change the top k (exact either way);
        ``None``: pruned up to k = :data:`PRUNE_MAX_K` on tables of at most :data:`PRUNE_MAX_DOCS`
        documents, exhaustive otherwise."""
        query = self.query_arrays(terms)
        if query is None:
            return None
        scratch = self._scratch
        if getattr(scratch, "acc", None) is None:
            scratch.acc = np.zeros(self.num_docs, dtype=np.int32)
            scratch.work = np.zeros(self.num_docs, dtype=np.int32)
        if prune is None:
            prune = k <= PRUNE_MAX_K and self.num_docs <= PRUNE_MAX_DOCS
        rows, scores = compressed.search(self.arrays, self.id_rank, query[0], query[1], int(k), bool(prune),
                                         scratch.acc, scratch.work)
        return list(zip(rows.tolist(), scores.astype(np.float64).tolist()))


def _mapped(path: Path) -> np.ndarray:
    """A read-only memory map of a ``.npy`` file, as a plain array (numba reads it without a copy)."""
    return np.load(path, mmap_mode="r", allow_pickle=False).view(np.ndarray)
