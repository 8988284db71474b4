"""The BM25 baseline with Pyserini's BEIR "flat" settings.

Index: Anserini's ``BeirFlatCollection`` (title and text in one ``contents`` field), default English
analyzer (Porter stemming, Lucene's English stopwords), positions, doc vectors and raw text stored,
as Pyserini's prebuilt ``beir-v1.0.0-*.flat`` indexes are built. Search: Pyserini's
``LuceneSearcher`` with ``set_bm25(k1=0.9, b=0.4)``.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path
from typing import Sequence

from ..core import java
from ..core.atomic import move_into_place, output_lock
from ..core.errors import OutputExistsError
from ..formats.collection import count_lines
from ..formats.trec import Hit
from ..indexing.lucene import lucene_stats, run_indexer

BM25_K1 = 0.9
BM25_B = 0.4


def analyze(texts: Sequence[str]) -> list[list[str]]:
    """Each text's terms as the BM25 index and its searcher see them (Lucene's default English
    analyzer: lowercased, stopwords out, Porter-stemmed), in order, repeats kept."""
    java.ensure_jvm()
    from pyserini.analysis import Analyzer, get_lucene_analyzer

    analyzer = Analyzer(get_lucene_analyzer())
    return [analyzer.analyze(text) for text in texts]


def bm25_index_command(input_dir: Path, index_dir: Path, threads: int) -> list[str]:
    return [
        "io.anserini.index.IndexCollection",
        "-collection", "BeirFlatCollection",
        "-input", str(input_dir),
        "-index", str(index_dir),
        "-generator", "DefaultLuceneDocumentGenerator",
        "-threads", str(threads),
        "-storePositions", "-storeDocvectors", "-storeRaw",
    ]


def build_bm25_index(corpus: str | Path, index_dir: str | Path, *, threads: int = 1,
                     overwrite: bool = False) -> dict:
    """Index a BEIR ``corpus.jsonl`` for BM25; returns the index statistics and the Anserini command."""
    corpus, index_dir = Path(corpus), Path(index_dir)
    with output_lock(index_dir):
        if index_dir.exists() and not overwrite:
            raise OutputExistsError(f"index {index_dir} already exists; pass overwrite=True to replace it")
        index_dir.parent.mkdir(parents=True, exist_ok=True)
        staging = index_dir.parent / f".{index_dir.name}.input-{os.getpid()}"
        tmp = index_dir.parent / f".{index_dir.name}.building-{os.getpid()}"
        for path in (staging, tmp):
            shutil.rmtree(path, ignore_errors=True)
        staging.mkdir()
        # BeirFlatCollection reads every .jsonl of its folder: give it the corpus alone.
        (staging / corpus.name).symlink_to(corpus.resolve())
        args = bm25_index_command(staging.resolve(), tmp.resolve(), threads)
        try:
            # the same child JVM handling as the impact index build: dies with this process, fails loudly
            java.configure_environment()
            run_indexer([java.java_executable(), "-cp", str(java.anserini_jar()), *args], count_lines(corpus),
                        quiet=True, where=index_dir)
            stats = lucene_stats(tmp)
            move_into_place(tmp, index_dir)
        finally:
            shutil.rmtree(staging, ignore_errors=True)
            shutil.rmtree(tmp, ignore_errors=True)
        return {"index_stats": stats, "anserini_command": ["java", "-cp", java.anserini_jar().name,
                                                          *bm25_index_command(Path(corpus.name), index_dir, threads)]}


class BM25Searcher:
    """Pyserini's ``LuceneSearcher`` with BM25 (k1, b)."""

    def __init__(self, index_dir: str | Path, *, k1: float = BM25_K1, b: float = BM25_B):
        java.ensure_jvm()
        from pyserini.search.lucene import LuceneSearcher

        self.index_dir = Path(index_dir)
        self._searcher = LuceneSearcher(str(self.index_dir))
        self._searcher.set_bm25(float(k1), float(b))

    def batch_search(self, queries: Sequence[tuple[str, str]], k: int = 1000, threads: int = 1) -> dict[str, list[Hit]]:
        qids = [q for q, _ in queries]
        out = self._searcher.batch_search([t for _, t in queries], qids, k=k, threads=threads)
        return {qid: [Hit(h.docid, float(h.score)) for h in out.get(qid, [])] for qid in qids}

    def search(self, text: str, k: int = 10) -> list[Hit]:
        return [Hit(h.docid, float(h.score)) for h in self._searcher.search(text, k=k)]

    def query_terms(self, text: str) -> list[str]:
        """The analyzed query terms (English analyzer)."""
        return analyze([text])[0]

    def close(self) -> None:
        self._searcher.close()
