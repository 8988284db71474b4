"""Why a document matched a query: each shared term's query weight x document weight, summing to the
score exactly, with the terms the model added (expansions) marked.

The document's weights are read from the Lucene index itself (the term frequency of each query term
in that document, which is the document's integer weight), and the score is Lucene's own
``IndexSearcher.explain`` value for Anserini's query, so an explanation is checked against the index
rather than recomputed from the same numbers. The document's full vector comes from the index's
impact table (or, without one, the collection the index was built from); its text, to tell
expansions from terms of the text, from the corpus recorded in the collection's metadata.
"""

from __future__ import annotations

import functools
import json
from dataclasses import asdict, dataclass, field
from pathlib import Path

from ..formats.collection import EMPTY_DOCUMENT_TERM, collection_files, read_corpus
from ..formats.documents import DocumentStore
from ..formats.metadata import read_collection_metadata
from .encoders import check_query


@dataclass(frozen=True)
class TermContribution:
    term: str
    query_weight: int
    doc_weight: int
    contribution: int
    expansion: bool | None  # True: absent from the document's text (None: the text is not available)


@dataclass
class Explanation:
    query: dict[str, int]
    docid: str
    score: float  # Lucene's score of the document for the query (before Anserini's tie nudges)
    terms: list[TermContribution]  # the shared terms, largest contribution first
    doc_terms: dict[str, int] | None = None  # the document's whole vector, where available
    doc_text_available: bool = False
    notes: list[str] = field(default_factory=list)

    @property
    def total(self) -> int:
        return sum(t.contribution for t in self.terms)

    def to_json(self) -> dict:
        return {"docid": self.docid, "score": self.score, "sum_of_contributions": self.total,
                "terms": [asdict(t) for t in self.terms], "query_terms": self.query,
                "doc_terms": self.doc_terms, "notes": self.notes}


def wordpieces(tokenizer, text: str) -> set[str]:
    """The WordPiece terms of a whole text, as the encoder's tokenizer splits it (through a copy of a
    fast tokenizer's own tokenizer, never truncating: the same pieces, without the warning about texts
    longer than the model takes, and without touching the state the encoder's calls set)."""
    splitter = _splitter(tokenizer)
    if splitter is not None:
        return set(splitter.encode(text, add_special_tokens=False).tokens)
    return set(tokenizer.tokenize(text))


@functools.lru_cache(maxsize=8)
def _splitter(tokenizer):
    backend = getattr(tokenizer, "backend_tokenizer", None)
    if backend is None:
        return None
    splitter = type(backend).from_str(backend.to_str())
    splitter.no_truncation()
    splitter.no_padding()
    return splitter


def document_vector(searcher, docid: str) -> dict[str, int] | None:
    """A document's {term: weight}, heaviest first, from the index's impact table, else from the
    collection the index was built from; None where neither is at hand."""
    table = searcher.table
    if table is not None:
        vector = table.document(searcher.docid_row(docid))
    else:
        vector = None
        collection = searcher.metadata.get("collection")
        if collection and Path(collection).is_dir():
            for path in collection_files(collection):
                with open(path, encoding="utf-8") as fh:
                    for line in fh:
                        if json.dumps(docid) in line:
                            rec = json.loads(line)
                            if rec.get("id") == docid and "vector" in rec:
                                vector = rec["vector"]
                                break
                if vector is not None:
                    break
    if vector is None:
        return None
    return dict(sorted(vector.items(), key=lambda kv: (-kv[1], kv[0])))


def corpus_path(searcher) -> Path | None:
    """The corpus file recorded with the index's collection, where it still exists."""
    collection = searcher.metadata.get("collection")
    corpus = read_collection_metadata(collection).get("corpus") if collection else None
    return Path(corpus) if corpus and Path(corpus).is_file() else None


def document_text(searcher, docid: str, documents: DocumentStore | None = None) -> str | None:
    """The document's text, from ``documents`` where given, else from the corpus recorded with the
    index's collection (read through once); None where neither has it."""
    if documents is None:
        corpus = corpus_path(searcher)
        if corpus is None:
            return None
        doc = next((d for d in read_corpus(corpus, on_duplicate="keep-first") if d.id == docid), None)
    else:
        doc = documents.get(docid)
    return None if doc is None else doc.text


def explain(searcher, query: str | dict[str, int], docid: str, *,
            documents: DocumentStore | None = None) -> Explanation:
    """Explain ``docid``'s score for ``query`` (text, encoded with the index's query encoder, or
    already quantized ``{term: int}``) on a :class:`~splade_lucene.search.searcher.Searcher`'s index;
    the document's text (for its expansions) from ``documents`` where given."""
    terms = searcher.query_encoder.encode(query) if isinstance(query, str) else dict(query)
    check_query(terms)
    row = searcher.docid_row(docid)
    weights = searcher.lucene_doc_weights(terms, row)
    score = searcher.lucene_score(terms, row) if terms else 0.0
    text = document_text(searcher, docid, documents)
    pieces = wordpieces(searcher.query_encoder.tokenizer, text) if text is not None else None
    shared = [TermContribution(t, w, weights[t], w * weights[t], None if pieces is None else t not in pieces)
              for t, w in terms.items() if weights.get(t)]
    shared.sort(key=lambda c: (-c.contribution, c.term))
    notes = []
    if pieces is None:
        notes.append("the document's text was not found (no corpus recorded, or moved): expansions unknown")
    vector = document_vector(searcher, docid)
    if vector == {EMPTY_DOCUMENT_TERM: 1}:
        notes.append("the document's text gave an empty vector: it matches no query")
    return Explanation(terms, docid, score, shared, vector, pieces is not None, notes)


def format_explanation(ex: Explanation, top: int = 10) -> str:
    """A readable terminal table."""
    lines = [f"document {ex.docid}: Lucene score {ex.score:g} = sum of {len(ex.terms)} shared terms' "
             f"query weight x document weight = {ex.total}"
             + ("" if ex.total == round(ex.score) else "  (MISMATCH)")]
    lines.append(f"{'term':<20} {'query':>7} {'doc':>7} {'contrib':>9}  expansion")
    for t in ex.terms:
        flag = {True: "yes", False: "", None: "?"}[t.expansion]
        lines.append(f"{t.term:<20} {t.query_weight:>7} {t.doc_weight:>7} {t.contribution:>9}  {flag}")
    lines.append("query's top terms: " + ", ".join(f"{t} {w}" for t, w in
                                                    sorted(ex.query.items(), key=lambda kv: (-kv[1], kv[0]))[:top]))
    if ex.doc_terms is not None:
        lines.append("document's top terms: " + ", ".join(f"{t} {w}" for t, w in list(ex.doc_terms.items())[:top]))
    lines.extend(f"note: {n}" for n in ex.notes)
    return "\n".join(lines)


def format_vector(terms: dict[str, float | int], text: str, tokenizer, top: int | None = None) -> str:
    """A text's vector as a table, heaviest first, with expansions (terms absent from the text) marked."""
    pieces = wordpieces(tokenizer, text)
    ranked = sorted(terms.items(), key=lambda kv: (-kv[1], kv[0]))[:top]
    lines = [f"{len(terms)} terms ({sum(1 for t in terms if t not in pieces)} expansions)",
             f"{'term':<20} {'weight':>8}  expansion"]
    lines.extend(f"{t:<20} {w:>8}  {'yes' if t not in pieces else ''}" for t, w in ranked)
    return "\n".join(lines)
