"""An impact index's postings held in memory, for exact search several times faster than Lucene's.

A Lucene impact index stores, for each term, the documents it occurs in and an integer impact (the
term frequency of the pseudo-document, that is the quantized weight). A query's score for a document
is the sum of ``query weight * impact`` over the terms they share. :class:`ImpactTable` keeps those
postings as three flat arrays (term-major: per-term offsets, Lucene docids, impacts) and scores a
query term-at-a-time into one integer accumulator, all documents at once, then selects the top k.
No document is skipped, so the result is exact: the same documents, the same integer scores and
the same order as Lucene's search (ties broken by doc id as Anserini does).

The table lives in the index folder (:data:`TABLE_DIR`), written by :func:`write_impact_table` from
the collection the index was built from (``build_index`` does it) and then checked against the
Lucene index itself: the same documents, the same set of terms, and for every term the same
document frequency and total impact. It records the Lucene commit it describes; a table that no
longer fits its index is not used.

Memory: 8 bytes a posting in memory (docid and impact as int32), fewer on disk.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path
from typing import Iterator, Sequence

import numpy as np

from .atomic import move_into_place, naming_a_full_disk, output_lock, save_array
from .collection import collection_files, open_text
from .errors import SpladeLuceneError
from .lucene import docid_table, field_terms, lucene_reader

TABLE_DIR = "impacts"
TABLE_VERSION = 1
_META = "table.json"
# Integer scores stay exact in Lucene's float32 below this; a query that could reach it goes to Lucene.
EXACT_LIMIT = 2 ** 24


class ImpactTableError(SpladeLuceneError, RuntimeError):
    """An impact table that cannot be written or does not fit its index."""


def _scatter_add():
    """``add(scores, docs, impacts, weight)``: ``scores[docs] += weight * impacts`` in place. scipy's
    compiled sparse matrix-vector kernel does it in one pass without temporaries; ``np.add.at`` is the
    fallback where that kernel is not importable."""
    try:
        from scipy.sparse import _sparsetools

        def add(scores, docs, impacts, weight):
            _sparsetools.csc_matvec(len(scores), 1, np.array([0, len(docs)], dtype=docs.dtype), docs, impacts,
                                    np.array([weight], dtype=scores.dtype), scores)

        probe = np.zeros(4, dtype=np.int32)
        add(probe, np.array([1, 3], dtype=np.int32), np.array([2, 5], dtype=np.int32), 3)
        if probe.tolist() == [0, 6, 0, 15]:
            return add
    except (ImportError, AttributeError, TypeError, ValueError):  # pragma: no cover - depends on scipy
        pass
    return _add_at


def _add_at(scores, docs, impacts, weight):
    np.add.at(scores, docs, impacts * np.int32(weight))


_ADD = _scatter_add()


def _records(collections: list[Path]) -> Iterator[tuple[str, dict[str, int]]]:
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
        for docid, vector in _records(collections):
            row = row_of.get(docid)
            if row is None:
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
        small = np.uint8 if max_impact < 2 ** 8 else np.uint16 if max_impact < 2 ** 16 else np.int32
        # each document's rank among the doc ids, for ordering ties by id without comparing strings
        id_rank = np.empty(len(docids), dtype=np.int32)
        id_rank[np.argsort(np.asarray(docids, dtype=object), kind="stable")] = np.arange(len(docids), dtype=np.int32)

        target = index_dir / TABLE_DIR
        tmp = index_dir / f"{TABLE_DIR}.writing-{os.getpid()}"
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir()
        try:
            save_array(tmp / "offsets.npy", offsets)
            save_array(tmp / "docs.npy", docs)
            save_array(tmp / "impacts.npy", values.astype(small))
            save_array(tmp / "id_rank.npy", id_rank)
            (tmp / "terms.json").write_text(json.dumps(terms, ensure_ascii=False), encoding="utf-8")
            (tmp / _META).write_text(json.dumps({
                "version": TABLE_VERSION, "field": field, "commit": commit, "terms": len(terms),
                "postings": int(len(docs)), "max_impact": max_impact}, indent=2) + "\n")
            move_into_place(tmp, target)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
        return target


class ImpactTable:
    """The postings of an impact index in memory, with exact term-at-a-time top-k search.

    Open it with :meth:`load`; :meth:`top` gives the (Lucene docid, score) pairs Lucene would return for
    a query, or ``None`` where the query is one this table does not answer exactly (a weight below 1,
    or scores that could pass float32's exact integers), to be left to Lucene.
    """

    def __init__(self, terms: list[str], offsets: np.ndarray, docs: np.ndarray, impacts: np.ndarray,
                 id_rank: np.ndarray, max_impact: int):
        self.terms = terms
        self.term_ids = {t: i for i, t in enumerate(terms)}
        self.offsets = offsets
        self.docs = docs
        self.impacts = impacts
        self.id_rank = id_rank
        self.max_impact = max_impact
        self.num_docs = len(id_rank)

    @classmethod
    def load(cls, index_dir: str | Path, reader=None) -> "ImpactTable | None":
        """The index's table, or ``None`` where it has none. A table written for another commit of the
        index raises :class:`ImpactTableError`. ``reader``: an open Lucene reader on the index, to
        compare commits with (else one is opened)."""
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
            impacts = np.load(folder / "impacts.npy").astype(np.int32, copy=False)
            table = cls(terms, np.load(folder / "offsets.npy"), np.load(folder / "docs.npy"), impacts,
                        np.load(folder / "id_rank.npy"), int(meta["max_impact"]))
        except (OSError, ValueError, KeyError) as err:
            raise ImpactTableError(f"{folder} is damaged ({err}); rewrite it (splade-lucene impacts)") from err
        if (len(table.offsets) != len(terms) + 1 or not len(table.docs) == len(impacts) == meta["postings"]
                or len(table.id_rank) != commit["max_doc"]):
            raise ImpactTableError(f"{folder} is damaged: array lengths disagree; rewrite it (splade-lucene impacts)")
        return table

    def document(self, row: int) -> dict[str, int]:
        """One document's {term: impact} (``row``: its Lucene docid): a binary search in each term's
        postings, so for inspecting a document, not for bulk use."""
        out = {}
        for i, term in enumerate(self.terms):
            start, end = self.offsets[i], self.offsets[i + 1]
            j = start + int(np.searchsorted(self.docs[start:end], row))
            if j < end and self.docs[j] == row:
                out[term] = int(self.impacts[j])
        return out

    @property
    def postings(self) -> int:
        return len(self.docs)

    def scores(self, terms: dict[str, int]) -> np.ndarray | None:
        """Every document's integer score for a query, or ``None`` (see the class)."""
        found = [(self.term_ids[t], w) for t, w in terms.items() if t in self.term_ids]
        if any(w < 1 for _, w in terms.items()) or sum(w for _, w in found) * self.max_impact >= EXACT_LIMIT:
            return None
        scores = np.zeros(self.num_docs, dtype=np.int32)
        offsets, docs, impacts = self.offsets, self.docs, self.impacts
        for term, weight in found:
            start, end = offsets[term], offsets[term + 1]
            _ADD(scores, docs[start:end], impacts[start:end], weight)
        return scores

    def top(self, terms: dict[str, int], k: int) -> list[tuple[int, float]] | None:
        """The top ``k`` (Lucene docid, score) by score, then doc id: Lucene's hits for the query."""
        scores = self.scores(terms)
        if scores is None:
            return None
        return self.order(scores, self.candidates(scores, k), k)

    def candidates(self, scores: np.ndarray, k: int) -> np.ndarray:
        """The documents whose score reaches the k-th best (every one tied with it included), matched
        ones only (a matched document scores at least 1).

        The k-th best score is at least the smallest of the maxima of k disjoint blocks of documents
        (k documents reach it), so only documents reaching that bound are looked at, and the exact
        k-th score is found among them: two passes over the scores, no sort of all documents."""
        n = len(scores)
        if k >= n:
            return np.flatnonzero(scores > 0)
        size = n // k
        bound = int(scores[:k * size].reshape(k, size).max(axis=1).min())
        found = np.flatnonzero(scores >= max(bound, 1))
        if len(found) > k:
            values = scores[found]
            kth = np.partition(values, len(values) - k)[len(values) - k]
            found = found[values >= max(kth, 1)]
        return found

    def order(self, scores: np.ndarray, candidates: np.ndarray, k: int) -> list[tuple[int, float]]:
        """The first ``k`` candidates by score descending, then doc id ascending."""
        found = scores[candidates]
        first = np.lexsort((self.id_rank[candidates], -found))[:k]
        return list(zip(candidates[first].tolist(), found[first].astype(np.float64).tolist()))
