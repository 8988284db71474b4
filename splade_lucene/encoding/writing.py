"""Resume state and publishing of a collection, shared by the local and the Ray engines: the
settings a run records (``progress.json``), the parts an interrupted run finished, the collection's
metadata, and the move of a finished writing folder into place."""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass
from pathlib import Path

from ..core.atomic import move_into_place, write_text
from ..core.errors import OutputExistsError, SettingError, SettingTypeError
from ..core.faults import fault_point
from ..core.quantize import DEFAULT_SCALE, check_pruning, check_scale
from ..formats.collection import COLLECTION_METADATA_FILE, FORMATS, PART_SIZE, part_name, part_number
from .model import SpladeEncoder, model_weights_sha256, resolve_model


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


@dataclass(frozen=True)
class CollectionOptions:
    """What a collection is made with besides the model: validated once, here; written to
    ``collection.meta`` (and from there to the index metadata) by :func:`collection_metadata`, recorded
    for resuming by :func:`run_settings` and compared when indexes are merged (:data:`MATCHING_KEYS`).
    A new option is a field here, its flag in the CLI, and the code that uses it."""

    scale: float = DEFAULT_SCALE
    query_scale: float | None = None  # None: the document scale
    fmt: str = "vector"  # "vector" (JsonVectorCollection) or "pseudo" (terms repeated)
    query_max_length: int | None = None  # None: the encoder's max length
    query_model: str | None = None  # None: the document model
    doc_top_k: int | None = None  # static pruning of documents (before quantization)
    doc_min_weight: float | None = None
    query_top_k: int | None = None  # recorded for the queries; searches of the index apply them
    query_min_weight: float | None = None
    part_size: int = PART_SIZE  # documents per collection file, the unit a killed run resumes from

    def __post_init__(self):
        if self.fmt not in FORMATS:
            raise SettingError(f"format must be one of {FORMATS}, not {self.fmt!r}")
        scale = check_scale(DEFAULT_SCALE if self.scale is None else self.scale)
        query_scale = check_scale(scale if self.query_scale is None else self.query_scale)
        doc_top_k, doc_min_weight = check_pruning(self.doc_top_k, self.doc_min_weight)
        query_top_k, query_min_weight = check_pruning(self.query_top_k, self.query_min_weight)
        part_size = PART_SIZE if self.part_size is None else self.part_size
        if int(part_size) != part_size or part_size < 1:
            raise SettingError(f"part_size must be a positive integer, not {part_size!r}")
        if self.query_max_length is not None and self.query_max_length < 1:
            raise SettingError(f"query_max_length must be at least 1, not {self.query_max_length}")
        for name, value in (("scale", scale), ("query_scale", query_scale), ("doc_top_k", doc_top_k),
                            ("doc_min_weight", doc_min_weight), ("query_top_k", query_top_k),
                            ("query_min_weight", query_min_weight), ("part_size", int(part_size)),
                            ("query_model", str(self.query_model) if self.query_model else None)):
            object.__setattr__(self, name, value)

    @classmethod
    def of(cls, options: CollectionOptions | None = None, **settings) -> CollectionOptions:
        """``options`` (default: the defaults) with the named ``settings`` replaced; a name that is
        no option is refused. ``None`` for a setting means its default."""
        unknown = set(settings) - {f.name for f in dataclasses.fields(cls)}
        if unknown:
            raise SettingTypeError(f"unknown collection options {sorted(unknown)}")
        given = {k: v for k, v in settings.items() if v is not None}
        return dataclasses.replace(options or cls(), **given)

    def record(self) -> dict:
        """The options as ``collection.meta`` and the index metadata name them."""
        out = dataclasses.asdict(self)
        out["format"] = out.pop("fmt")
        return out


# what must agree between indexes merged into one: the model and every option but the file layout
MATCHING_KEYS = ("model_sha256", "query_model_sha256", "model", "query_model", "max_length", "stride", "pooling",
                 "dtype", *(k for k in CollectionOptions().record() if k not in ("part_size", "query_model")))


def run_settings(corpus: Path, encoder: SpladeEncoder, options: CollectionOptions | None = None,
                 **settings) -> dict:
    """What an encoding run records in ``progress.json``: a later run resumes its parts only where all
    of it is the same (the corpus by path, size and modification time, the model, the options)."""
    options = CollectionOptions.of(options, **settings)
    stat = corpus.stat()
    return {"corpus": str(corpus.resolve()), "corpus_size": stat.st_size, "corpus_mtime_ns": stat.st_mtime_ns,
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
    }


def publish_collection(tmp: Path, output: Path, metadata: dict) -> None:
    """Write ``collection.meta`` into the finished writing folder ``tmp`` and move it to ``output``."""
    (tmp / PROGRESS_FILE).unlink(missing_ok=True)
    (tmp / COLLECTION_METADATA_FILE).write_text(json.dumps(metadata, indent=2, sort_keys=True) + "\n")
    move_into_place(tmp, output)
