"""Pre-encoded topics for plain Anserini: queries encoded with an index's encoder and written as TSV
topics, and Anserini's own ``SearchCollection`` command that runs them."""

from __future__ import annotations

from pathlib import Path

from ..core import java
from ..core.atomic import atomic_file, output_lock
from ..core.errors import OutputExistsError
from ..formats.collection import read_queries, topic_line
from .encoders import QueryEncoder


def encode_queries(index_dir: str | Path, queries: str | Path, output: str | Path, *,
                   model: str | Path | None = None, overwrite: bool = False) -> dict[str, dict[str, int]]:
    """Encode a queries file with the index's query encoder (:meth:`QueryEncoder.from_index`: the
    model, or the table of a doc-only index) and write the quantized queries as TSV topics for plain
    Anserini (:func:`~splade_lucene.formats.collection.topic_line`; :func:`anserini_search_command` runs
    them). A query with no term is written with no term (Anserini then finds nothing for it, as we
    do). Returns {qid: terms}."""
    output = Path(output)
    with output_lock(output, "file"):
        if output.exists() and not overwrite:
            raise OutputExistsError(f"{output} already exists; pass --overwrite (overwrite=True) to replace it")
        items = read_queries(queries)
        encoder = QueryEncoder.from_index(index_dir, model=model)
        encoded = dict(zip([q for q, _ in items], encoder.encode_batch([t for _, t in items])))
        with atomic_file(output) as fh:
            for qid, terms in encoded.items():
                fh.write(topic_line(qid, terms))
    return encoded



def anserini_search_command(index_dir: str | Path, topics: str | Path, output: str | Path, *, hits: int = 1000,
                            threads: int = 1) -> list[str]:
    """Anserini's own ``SearchCollection`` on pre-encoded TSV topics, with the Java and the Anserini
    fatjar that ship with the installed packages: the same documents, ranks and scores as
    :class:`Searcher` (no project code runs)."""
    return [java.java_executable(), "-cp", str(java.anserini_jar()), "io.anserini.search.SearchCollection",
            "-index", str(index_dir), "-topics", str(topics), "-topicReader", "TsvString", "-output", str(output),
            "-impact", "-pretokenized", "-hits", str(hits), "-threads", str(threads)]
