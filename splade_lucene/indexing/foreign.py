"""Collections encoded elsewhere: a folder of Anserini ``JsonVectorCollection`` files (``{"id", "vector":
{term: integer weight}}``, as Anserini distributes pre-encoded corpora) with none of this package's
metadata. The user states the model and scale the vectors were made with; every record is checked
(an id, integer weights of at least 0, every term in the model's vocabulary) and the metadata an index
needs to encode its queries is recorded from what was stated. Documents whose vector is empty (or all
zeros) are left out by Anserini's indexer; they are counted and named in a warning."""

from __future__ import annotations

import math
import warnings
from pathlib import Path

from ..core.errors import NotFoundError, SettingError
from ..core.quantize import check_scale
from ..encoding.loading import model_weights_sha256, resolve_model
from ..encoding.model import DEFAULT_MAX_LENGTH
from ..formats.collection import (
    COLLECTION_METADATA_FILE,
    EMPTY_DOCUMENT_TERM,
    InputError,
    collection_files,
    open_bytes,
    parse_line,
    raw_lines,
    record_id,
)

UNKNOWN_SHOWN = 5  # unknown terms named in the error


def stated_metadata(collection: str | Path, model: str | Path | None, scale: float, *,
                    max_length: int = DEFAULT_MAX_LENGTH) -> dict:
    """The collection metadata of a foreign ``collection`` made with ``model`` at ``scale`` (what an
    index records to encode its queries), after checking every record; :class:`InputError` naming the
    file and line of the first bad one."""
    from transformers import AutoTokenizer

    collection = Path(collection)
    if not collection.is_dir():
        raise NotFoundError(f"collection folder {collection} does not exist")
    if (collection / COLLECTION_METADATA_FILE).is_file():
        raise SettingError(f"{collection} holds {COLLECTION_METADATA_FILE}: it was encoded by splade-lucene, which "
                           "recorded its model and scale; index it without --foreign")
    files = collection_files(collection)
    if not files:
        raise InputError(f"{collection} holds no .jsonl collection files")
    scale = check_scale(scale)
    name, path = resolve_model(model)
    vocabulary = set(AutoTokenizer.from_pretrained(path).get_vocab()) | {EMPTY_DOCUMENT_TERM}
    documents = empty = 0
    for file in files:
        with open_bytes(file) as fh:
            for lineno, raw in raw_lines(fh):
                record = parse_line(raw, file, lineno)
                if record is None:
                    continue
                record_id(record, file, lineno)
                vector = record.get("vector")
                if not isinstance(vector, dict):
                    raise InputError(f"{file}:{lineno}: a JsonVectorCollection record needs \"vector\": {{term: "
                                     "integer weight}} (pseudo-documents with \"contents\" are not taken here)")
                for term, weight in vector.items():
                    if isinstance(weight, bool) or not isinstance(weight, (int, float)) or not math.isfinite(weight) \
                            or weight != int(weight) or weight < 0:
                        raise InputError(f"{file}:{lineno}: the weight of {term!r} is {weight!r}, not an integer of at "
                                         "least 0 (quantize the vectors first: Lucene's impacts are integers)")
                unknown = [t for t in vector if t not in vocabulary]
                if unknown:
                    raise InputError(f"{file}:{lineno}: {len(unknown)} terms are not in the vocabulary of {name} "
                                     f"({', '.join(map(repr, unknown[:UNKNOWN_SHOWN]))}): the vectors were made "
                                     "with another model, or --model is not the one they were made with")
                if any(vector.values()):
                    documents += 1
                else:
                    empty += 1
    if documents == 0:
        raise InputError(f"{collection} holds no documents with a non-empty vector")
    if empty:
        warnings.warn(f"{collection}: {empty} documents have an empty vector; Anserini leaves them out of the index "
                      "(no query could match them)", stacklevel=2)
    sha = model_weights_sha256(path)
    return {"model": name, "model_path": path, "model_sha256": sha, "query_model": name, "query_model_sha256": sha,
            "scale": scale, "query_scale": scale, "format": "vector", "max_length": max_length,
            "query_max_length": max_length, "pooling": "all", "dtype": "fp32", "documents": documents,
            "empty_documents_left_out": empty, "truncated_documents": None, "corpus": None,
            "foreign": True}
