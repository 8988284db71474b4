"""Resume state and publishing of a collection, shared by the local and the Ray executors: the
settings a run records (``progress.json``), the parts an interrupted run finished, the collection's
metadata, and the move of a finished writing folder into place."""

from __future__ import annotations

import functools
import json
from dataclasses import dataclass
from pathlib import Path

from ..core.atomic import move_into_place, write_text
from ..core.errors import OutputExistsError
from ..core.faults import fault_point
from ..formats.collection import COLLECTION_METADATA_FILE, part_name, part_number, sha256_file
from ..formats.metadata import CollectionOptions
from .loading import model_weights_sha256, resolve_model
from .model import SpladeEncoder


@dataclass
class EncodeSummary:
    documents: int
    empty_documents: int
    output: Path
    seconds: float
    metadata: dict
    truncated_documents: int = 0  # texts cut at the max length
    resumed_documents: int = 0  # documents found already encoded by an interrupted run, not encoded again


PROGRESS_FILE = "progress.json"


@functools.lru_cache(maxsize=16)
def _file_sha256(path: str, size: int, mtime_ns: int) -> str:
    return sha256_file(path)


def corpus_sha256(corpus: str | Path) -> str:
    """sha256 of a corpus file's bytes: what identifies a corpus to a resumed encoding and to a cached
    collection (a copy laid anew, with a new modification time, or moved, is the same corpus). Read
    once per process for a file whose size and modification time have not changed."""
    return _corpus_identity(corpus)[0]


def _corpus_identity(corpus: str | Path) -> tuple[str, int]:
    """The corpus's sha256 and size, from one ``stat`` (the two cannot describe different files)."""
    corpus = Path(corpus).resolve()
    stat = corpus.stat()
    return _file_sha256(str(corpus), stat.st_size, stat.st_mtime_ns), stat.st_size


def run_settings(corpus: Path, encoder: SpladeEncoder, options: CollectionOptions | None = None) -> dict:
    """What an encoding run records in ``progress.json``: a later run resumes its parts only where all
    of it is the same (the corpus by its bytes, wherever it lies and whenever it was copied; the model;
    the options)."""
    options = options or CollectionOptions()
    sha, size = _corpus_identity(corpus)
    return {"corpus_sha256": sha, "corpus_size": size,
            "model_sha256": encoder.weights_sha256, "model": encoder.model_name, "max_length": encoder.max_length,
            "stride": encoder.stride, "pooling": encoder.pooling, "dtype": encoder.dtype,
            "device": str(encoder.device), **options.record()}


def writing_folder(output: Path) -> Path:
    """The folder an encoding of ``output`` writes into (``.NAME.writing`` beside it)."""
    return output.parent / f".{output.name}.writing"


def finished_parts(tmp: Path, settings: dict, *, contiguous: bool = True) -> list[dict]:
    """The parts an interrupted run with the same settings finished in ``tmp`` (others removed), or [].
    ``contiguous``: only the unbroken run of parts from the first (a distributed run finishes parts
    out of order; a local run resumes after the last part of that run)."""
    try:
        state = json.loads((tmp / PROGRESS_FILE).read_text())
    except (OSError, ValueError):
        return []
    if state.get("settings") != settings:
        return []
    parts = sorted(state.get("parts", []), key=lambda p: part_number(p["file"]))
    if contiguous:
        prefix = []
        for number, part in enumerate(parts):
            if part["file"] != part_name(number):
                break
            prefix.append(part)
        parts = prefix
    listed = {p["file"] for p in parts}
    if not all((tmp / name).is_file() for name in listed):
        return []
    for path in tmp.iterdir():
        if path.name not in listed and path.name != PROGRESS_FILE:
            path.unlink()  # the part being written when the run stopped
    return parts


def check_output(output: Path, overwrite: bool) -> None:
    """Refuse an output folder that holds files, unless ``overwrite``."""
    if output.exists() and not overwrite and any(output.iterdir()):
        raise OutputExistsError(f"{output} already exists and is not empty; pass --overwrite to replace it")


def record_progress(tmp: Path, settings: dict | None, parts: list[dict], part: dict) -> None:
    """Add a finished part to ``parts`` and, for a resumable run (``settings``), to ``progress.json``."""
    parts.append(part)
    if settings is not None:  # what a resumed run may keep
        write_text(tmp / PROGRESS_FILE, json.dumps({"settings": settings, "parts": parts}, indent=1))
        fault_point("encode.progress")


def collection_metadata(encoder: SpladeEncoder, parts: list[dict], options: CollectionOptions, *,
                        corpus: str | Path | None = None) -> dict:
    """``collection.meta`` of a collection made of ``parts`` by ``encoder`` with ``options``."""
    if options.query_model is None:
        query_name, query_sha = encoder.model_name, encoder.weights_sha256
    else:
        query_name, query_path = resolve_model(options.query_model)
        query_sha = model_weights_sha256(query_path)
    record = options.record()
    del record["part_size"]
    return {
        **record,
        "model": encoder.model_name,
        "model_path": encoder.model_path,
        "model_sha256": encoder.weights_sha256,
        "query_model": query_name,
        "query_model_sha256": query_sha,
        "max_length": encoder.max_length,
        "stride": encoder.stride,
        "query_max_length": options.query_max_length or encoder.max_length,
        "pooling": encoder.pooling,
        "dtype": encoder.dtype,
        "documents": sum(p["documents"] for p in parts),
        "empty_documents": sum(p["empty"] for p in parts),
        "truncated_documents": sum(p["truncated"] for p in parts),
        "corpus": str(corpus) if corpus is not None else None,
        "corpus_sha256": corpus_sha256(corpus) if corpus is not None and Path(corpus).is_file() else None,
    }


def publish_collection(tmp: Path, output: Path, metadata: dict) -> None:
    """Write ``collection.meta`` into the finished writing folder ``tmp`` and move it to ``output``."""
    (tmp / PROGRESS_FILE).unlink(missing_ok=True)
    (tmp / COLLECTION_METADATA_FILE).write_text(json.dumps(metadata, indent=2, sort_keys=True) + "\n")
    move_into_place(tmp, output)
