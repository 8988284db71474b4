"""Feed files for search engines that store learned sparse vectors: an index's document vectors with
the mapping or schema that takes them, in each engine's documented format, and each engine's query
for a quantized query. No such server runs here: the files are checked against the documented
formats only (docs/interop.md names the pages).

- ``opensearch``: a ``rank_features`` field (``mapping.json``), ``_bulk`` bodies (``bulk-NNNNN.ndjson``:
  an ``index`` action line, then the source line), queried with ``neural_sparse`` and raw
  ``query_tokens``;
- ``elasticsearch``: a ``sparse_vector`` field with token pruning off (``mapping.json``), ``_bulk``
  bodies, queried with the ``sparse_vector`` query and a ``query_vector``;
- ``vespa``: a schema (``NAME.sd``) with a ``tensor<float>(t{})`` attribute and a rank profile taking
  ``sum(query(q) * attribute(vector))``, and a JSONL feed (``feed.jsonl``: one ``put`` a line) for
  ``vespa feed``.

Documents carry the index's integer weights. OpenSearch's and Elasticsearch's fields keep 9
significant bits of a value (Lucene's ``FeatureField``): every integer below 512 is exact, larger ones
may be truncated; ``feed.json`` counts the weights that are not exact. A document whose vector is empty
is left out (no query reaches it). Keys are the WordPiece terms (``keys="tokens"``) or their token ids
as strings (``keys="ids"``: Elasticsearch before 8.16 refuses dots in feature names).
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Iterator

from ..core.atomic import atomic_file
from ..core.errors import OutputExistsError, SettingError
from ..formats.metadata import read_metadata
from .export import document_vectors, vocabulary_of

FEEDS = ("opensearch", "elasticsearch", "vespa")
KEYS = ("tokens", "ids")
MAX_BULK_ID_BYTES = 512  # OpenSearch's and Elasticsearch's _id
FEATURE_BITS = 9  # significant bits a rank_features / sparse_vector value keeps
OPENSEARCH_MAX_QUERY_WEIGHT = 64.0  # Lucene FeatureField's linear query weight is in (0, 64]
FEED_RECORD = "feed.json"


def exact_in_feature_field(weight: int) -> bool:
    """Whether a positive integer survives Lucene's ``FeatureField`` (the float's top 9 significant
    bits kept) unchanged."""
    return weight > 0 and (weight >> max(0, weight.bit_length() - FEATURE_BITS)) << max(
        0, weight.bit_length() - FEATURE_BITS) == weight


def _check_name(name: str, engine: str) -> str:
    if engine == "vespa":
        ok = name[:1].isalpha() and name.replace("_", "").isalnum() and name.isascii()
        rule = "letters, digits and '_', starting with a letter"
    else:
        ok = bool(name) and name == name.lower() and name.isascii() and not name.startswith(("-", "_", "+")) \
            and not any(c in name for c in ' "*\\<|,>/?#:') and name not in (".", "..")
        rule = "lowercase, without spaces or any of \" * \\ < | , > / ? # :, not starting with - _ +"
    if not ok:
        raise SettingError(f"{engine} index/document type names are {rule}; not {name!r}")
    return name


def _keyed(terms: dict[str, int], keys: str, vocabulary: dict[str, int]) -> dict[str, int]:
    if keys == "tokens":
        return {t: int(w) for t, w in terms.items() if w > 0 and t in vocabulary}
    return {str(vocabulary[t]): int(w) for t, w in terms.items() if w > 0 and t in vocabulary}


def vespa_schema(name: str, field: str) -> str:
    """A Vespa schema for the feed: the document id as a string field, the vector as a mapped float
    tensor attribute, and rank profile ``splade``: the dot product with the query tensor ``q``."""
    return f"""schema {name} {{
    document {name} {{
        field id type string {{
            indexing: summary | attribute
        }}
        field {field} type tensor<float>(t{{}}) {{
            indexing: attribute | summary
        }}
    }}
    rank-profile splade {{
        inputs {{
            query(q) tensor<float>(t{{}})
        }}
        first-phase {{
            expression: sum(query(q) * attribute({field}))
        }}
    }}
}}
"""


def _mapping(engine: str, field: str) -> dict:
    if engine == "opensearch":
        return {"mappings": {"properties": {"id": {"type": "keyword"}, field: {"type": "rank_features"}}}}
    return {"mappings": {"properties": {"id": {"type": "keyword"},
                                        field: {"type": "sparse_vector", "index_options": {"prune": False}}}}}


def _documents(index_dir: Path, keys: str, counts: dict) -> Iterator[tuple[str, dict[str, int]]]:
    vocabulary = vocabulary_of(index_dir)
    for docid, terms in document_vectors(index_dir):
        vector = _keyed(terms, keys, vocabulary)
        if not vector:
            counts["empty_left_out"] += 1
            continue
        counts["documents"] += 1
        counts["weights"] += len(vector)
        counts["max_weight"] = max(counts["max_weight"], max(vector.values()))
        counts["weights_not_exact_in_9_bits"] += sum(not exact_in_feature_field(w) for w in vector.values())
        yield docid, vector


def write_feed(index_dir: str | Path, output: str | Path, *, engine: str, name: str, field: str = "vector",
               keys: str = "tokens", bulk_docs: int = 5000, overwrite: bool = False) -> dict:
    """Write ``engine``'s feed of the index's documents into the folder ``output`` (written under a
    temporary name and moved into place when complete; an existing folder is replaced only with
    ``overwrite``). ``name``: the index (OpenSearch, Elasticsearch) or document type (Vespa);
    ``field``: the vector's field; ``bulk_docs``: documents per ``_bulk`` file. Returns the record
    also written as ``feed.json``."""
    if engine not in FEEDS:
        raise SettingError(f"the feed is one of {', '.join(FEEDS)}, not {engine!r}")
    if keys not in KEYS:
        raise SettingError(f"keys are one of {', '.join(KEYS)}, not {keys!r}")
    if bulk_docs < 1:
        raise SettingError(f"bulk_docs must be at least 1, not {bulk_docs}")
    _check_name(name, engine)
    if not field.replace("_", "").isalnum() or not field[:1].isalpha():
        raise SettingError(f"the field name is letters, digits and '_', starting with a letter; not {field!r}")
    index_dir, output = Path(index_dir), Path(output)
    meta = read_metadata(index_dir)
    if output.exists() and not overwrite:
        raise OutputExistsError(f"{output} exists; pass --overwrite to replace it")
    tmp = output.parent / f".{output.name}.writing"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    counts = {"documents": 0, "empty_left_out": 0, "weights": 0, "max_weight": 0, "weights_not_exact_in_9_bits": 0}
    files: list[str] = []
    try:
        docs = _documents(index_dir, keys, counts)
        if engine == "vespa":
            (tmp / f"{name}.sd").write_text(vespa_schema(name, field), encoding="utf-8")
            files.append(f"{name}.sd")
            with open(tmp / "feed.jsonl", "w", encoding="utf-8") as fh:
                for docid, vector in docs:
                    fh.write(json.dumps({"put": f"id:{name}:{name}::{docid}",
                                         "fields": {"id": docid, field: vector}}, ensure_ascii=False) + "\n")
            files.append("feed.jsonl")
        else:
            (tmp / "mapping.json").write_text(json.dumps(_mapping(engine, field), indent=2) + "\n", encoding="utf-8")
            files.append("mapping.json")
            fh = None
            try:
                for i, (docid, vector) in enumerate(docs):
                    if len(docid.encode()) > MAX_BULK_ID_BYTES:
                        raise SettingError(f"document id {docid[:40]!r}... is longer than {engine}'s "
                                           f"{MAX_BULK_ID_BYTES} bytes for an _id")
                    if i % bulk_docs == 0:
                        if fh is not None:
                            fh.close()
                        files.append(f"bulk-{i // bulk_docs:05d}.ndjson")
                        fh = open(tmp / files[-1], "w", encoding="utf-8")
                    fh.write(json.dumps({"index": {"_index": name, "_id": docid}}, ensure_ascii=False) + "\n")
                    fh.write(json.dumps({"id": docid, field: vector}, ensure_ascii=False) + "\n")
            finally:
                if fh is not None:
                    fh.close()
        record = {"engine": engine, "name": name, "field": field, "keys": keys, "files": files,
                  "index": str(index_dir), "model": meta.get("model"), "scale": meta.get("scale"),
                  "query_scale": meta.get("query_scale", meta.get("scale")), **counts}
        with atomic_file(tmp / FEED_RECORD, "w") as out:
            out.write(json.dumps(record, indent=2) + "\n")
        if output.exists():
            shutil.rmtree(output)
        tmp.rename(output)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return record


def opensearch_query(terms: dict[str, int], field: str = "vector", *, scale: float) -> dict:
    """OpenSearch's ``neural_sparse`` query with raw ``query_tokens`` for a quantized query. Lucene
    takes a query weight in (0, 64], so the weights are divided by the query ``scale`` (the index's
    float weights): the ranking is the integer dot product's, each score divided by ``scale``."""
    tokens = {t: w / scale for t, w in terms.items() if w > 0}
    if any(w > OPENSEARCH_MAX_QUERY_WEIGHT for w in tokens.values()):
        raise SettingError(f"a query weight over {OPENSEARCH_MAX_QUERY_WEIGHT} after dividing by {scale}: "
                           "OpenSearch refuses it")
    return {"query": {"neural_sparse": {field: {"query_tokens": tokens}}}}


def elasticsearch_query(terms: dict[str, int], field: str = "vector") -> dict:
    """Elasticsearch's ``sparse_vector`` query for a quantized query, token pruning off: its score is
    the dot product with the documents' weights."""
    return {"query": {"sparse_vector": {"field": field, "query_vector": {t: w for t, w in terms.items() if w > 0},
                                        "prune": False}}}


def vespa_query_tensor(terms: dict[str, int]) -> str:
    """A quantized query as Vespa's tensor literal for ``input.query(q)``: every label quoted
    (wordpieces such as ``##s`` or ``.`` are not identifiers), in single quotes, or double quotes
    for a label holding a single quote."""
    def label(t: str) -> str:
        if "'" not in t:
            return f"'{t}'"
        if '"' not in t:
            return f'"{t}"'
        raise SettingError(f"term {t!r} holds both quotes: Vespa's tensor literal cannot quote it")
    return "{" + ",".join(f"{label(t)}:{w}" for t, w in terms.items() if w > 0) + "}"
