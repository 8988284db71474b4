"""An index's document vectors into a vector database: Milvus (Milvus Lite, the embedded Milvus, or a
server), as sparse float vectors keyed by WordPiece token id, searched by inner product.

The weights are the index's integers (as floats: exact, since Milvus's float32 sums of products stay
far below 2^24 here), so Milvus's inner product of a query's quantized weights and a document's vector
is the index's score. The collection is written under a temporary name and renamed once complete:
an export that fails leaves any earlier collection of that name as it was.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Iterator

from ..core.errors import NotFoundError, OutputExistsError, SettingError
from ..encoding.loading import resolve_model
from ..formats.metadata import read_metadata, table_sources
from .impacts import ImpactTable, collection_records
from .lucene import docid_table

ID_FIELD, VECTOR_FIELD = "id", "vector"
MAX_ID_LENGTH = 512


def token_ids(terms: dict[str, int], vocabulary: dict[str, int]) -> dict[int, float]:
    """``{term: weight}`` as Milvus's sparse vector ``{token id: weight}``; zero weights and terms outside
    the vocabulary (the empty-document placeholder) dropped."""
    return {vocabulary[t]: float(w) for t, w in terms.items() if w > 0 and t in vocabulary}


def vocabulary_of(index_dir: str | Path) -> dict[str, int]:
    """The token ids of the model an index was built with."""
    from transformers import AutoTokenizer

    meta = read_metadata(index_dir)
    return AutoTokenizer.from_pretrained(resolve_model(meta.get("model_path") or meta.get("model"))[1]).get_vocab()


def document_vectors(index_dir: str | Path) -> Iterator[tuple[str, dict[str, int]]]:
    """(doc id, {term: weight}) of every document of an index: from the collection it was built from
    where that is still there, else from its impact table."""
    index_dir = Path(index_dir)
    sources = [Path(s) for s in table_sources(read_metadata(index_dir))]
    if all(s.exists() for s in sources):
        yield from collection_records(sources)
        return
    table = ImpactTable.load(index_dir)
    if table is None:
        raise NotFoundError(f"{index_dir}: neither the collection it was built from ({', '.join(map(str, sources))}) "
                            "nor an impact table is there to read its documents from")
    for row, docid in enumerate(docid_table(index_dir)):
        yield docid, table.document(row)


def export_milvus(index_dir: str | Path, uri: str, collection: str, *, overwrite: bool = False,
                  batch: int = 2000) -> dict:
    """Write the index's documents into the Milvus collection ``collection`` at ``uri`` (a file path:
    Milvus Lite; ``http://...``: a server). Returns the counts and the seconds taken. (Milvus's client
    starts gRPC threads in this process; a process that forks after it, to run Anserini's indexer for
    instance, may abort in the child: export from its own process, as the command does.)"""
    if not collection.replace("_", "").isalnum() or not collection[0].isalpha():
        raise SettingError(f"Milvus collection names are letters, digits and '_', starting with a letter, "
                           f"not {collection!r}")
    vocabulary = vocabulary_of(index_dir)  # the index checked before Milvus's client is loaded
    from pymilvus import DataType, MilvusClient

    started = time.perf_counter()
    client = MilvusClient(uri)
    try:
        if client.has_collection(collection) and not overwrite:
            raise OutputExistsError(f"{uri} already holds a collection {collection!r}; pass --overwrite to replace it")
        building = f"{collection}_building"
        if client.has_collection(building):
            client.drop_collection(building)
        schema = client.create_schema(auto_id=False, description="SPLADE document vectors from splade-lucene")
        schema.add_field(ID_FIELD, DataType.VARCHAR, is_primary=True, max_length=MAX_ID_LENGTH)
        schema.add_field(VECTOR_FIELD, DataType.SPARSE_FLOAT_VECTOR)
        index = client.prepare_index_params()
        index.add_index(field_name=VECTOR_FIELD, index_type="SPARSE_INVERTED_INDEX", metric_type="IP")
        client.create_collection(building, schema=schema, index_params=index)
        rows, written, left_out = [], 0, 0
        for docid, terms in document_vectors(index_dir):
            if len(docid.encode()) > MAX_ID_LENGTH:
                raise SettingError(f"document id {docid[:40]!r}... is longer than Milvus's {MAX_ID_LENGTH} bytes")
            vector = token_ids(terms, vocabulary)
            if not vector:
                left_out += 1  # an empty vector: no query can reach it, and Milvus takes none
                continue
            rows.append({ID_FIELD: docid, VECTOR_FIELD: vector})
            if len(rows) == batch:
                client.insert(building, rows)
                written, rows = written + len(rows), []
        if rows:
            client.insert(building, rows)
            written += len(rows)
        client.flush(building)
        if client.has_collection(collection):
            client.drop_collection(collection)
        client.rename_collection(building, collection)
        client.load_collection(collection)
    finally:
        client.close()
    return {"documents": written, "empty_left_out": left_out, "seconds": time.perf_counter() - started}
