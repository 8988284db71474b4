"""What a collection and an index are made with: the options a collection is written with
(:class:`CollectionOptions`, recorded in ``collection.meta``), the index metadata
(``splade_lucene.json``) that carries them on, and the checks that an index, a query encoder or
another index agree with them."""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass
from pathlib import Path

from ..core.errors import SettingError, SettingTypeError, SpladeLuceneError
from ..core.quantize import DEFAULT_SCALE, check_pruning, check_scale
from ..core.settings import setting
from .collection import COLLECTION_METADATA_FILE, FORMATS, PART_SIZE


class IndexBuildError(SpladeLuceneError, RuntimeError):
    """An index that cannot be built or opened as asked."""


METADATA_FILE = "splade_lucene.json"



class IncompatibleIndexError(IndexBuildError):
    """The index was built with another model or scale than the one asked for."""



def read_json_object(path: Path, what: str) -> dict:
    try:
        data = json.loads(path.read_bytes().decode("utf-8"))
    except (UnicodeDecodeError, ValueError) as exc:
        raise IndexBuildError(f"{path}: the {what} is not valid JSON ({exc}); the folder was not written by "
                              "this version, or the file was damaged: rebuild it") from None
    if not isinstance(data, dict):
        raise IndexBuildError(f"{path}: the {what} must be a JSON object, not {type(data).__name__}")
    return data



def read_collection_metadata(collection: str | Path) -> dict:
    path = Path(collection) / COLLECTION_METADATA_FILE
    if not path.is_file():
        return {}
    return read_json_object(path, "collection's metadata")



def read_metadata(index_dir: str | Path) -> dict:
    path = Path(index_dir) / METADATA_FILE
    if not path.is_file():
        raise IndexBuildError(f"{index_dir} has no {METADATA_FILE}: it was not built by splade-lucene "
                              "(use Pyserini's LuceneImpactSearcher for foreign indexes)")
    return read_json_object(path, "index's metadata")



def check_compatible(metadata: dict, *, model_sha256: str | None, model: str, scale: float) -> None:
    """Refuse a query encoder whose model or scale differs from the one the index was built for."""
    index_model = metadata.get("query_model", metadata.get("model"))
    index_sha = metadata.get("query_model_sha256", metadata.get("model_sha256"))
    if index_sha is None or model_sha256 is None:
        same = index_model == model
    else:
        same = index_sha == model_sha256
    if not same:
        def short(h):
            return f" (sha256 {h[:12]})" if h else ""
        raise IncompatibleIndexError(
            f"the index was built for query model {index_model}{short(index_sha)} but the query encoder uses "
            f"{model}{short(model_sha256)}")
    index_scale = metadata.get("query_scale", metadata.get("scale"))
    if index_scale is not None and float(index_scale) != float(scale):
        raise IncompatibleIndexError(
            f"the index expects query scale {index_scale} but the query encoder uses scale {scale}")



def table_sources(metadata: dict) -> list[str]:
    """The collection folders or part files an index's documents were written from."""
    if "parts" in metadata:
        return [s for part in metadata["parts"] for s in part["sources"]]
    return list(metadata.get("collection_files") or [metadata["collection"]])


@dataclass(frozen=True)
class CollectionOptions:
    """What a collection is made with besides the model: validated once, here; written to
    ``collection.meta`` (and from there to the index metadata) by :func:`collection_metadata`, recorded
    for resuming by :func:`run_settings` and compared when indexes are merged (:data:`MATCHING_KEYS`).
    A new option is a field here, its flag in the CLI, and the code that uses it."""

    scale: float = setting(DEFAULT_SCALE, "quantization: int weight = round(w * scale)")
    query_scale: float | None = setting(None, "query scale", default_help="--scale")
    fmt: str = setting("vector", "vector: JsonVectorCollection {term: int}; pseudo: contents repeating each term by "
                       "its weight", flag="--format", choices=FORMATS)
    query_max_length: int | None = setting(None, "query max length in tokens", default_help="--max-length")
    query_model: str | None = setting(None, "separate query model", default_help="--model")
    doc_top_k: int | None = setting(None, "static pruning: keep each document's N heaviest terms",
                                    default_help="all")
    doc_min_weight: float | None = setting(None, "static pruning: drop document terms whose float weight is below "
                                           "this", default_help="none dropped")
    query_top_k: int | None = setting(None, "keep each query's N heaviest terms (recorded; applied by searches "
                                      "of the index)", default_help="all")
    query_min_weight: float | None = setting(None, "drop query terms whose float weight is below this (recorded "
                                             "likewise)", default_help="none dropped")
    part_size: int = setting(PART_SIZE, "documents per collection file, the unit a killed run resumes from")

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

    @classmethod
    def defaults(cls) -> dict:
        """Every option's default as :meth:`record` names it (None: the document's value)."""
        out = {f.name: f.default for f in dataclasses.fields(cls)}
        out["format"] = out.pop("fmt")
        return out

    @classmethod
    def from_record(cls, record: dict) -> CollectionOptions:
        """The options a dict names as :meth:`record` does (other keys ignored)."""
        names = cls.defaults()
        return cls(**{("fmt" if k == "format" else k): record[k] for k in names if k in record})

    def record(self) -> dict:
        """The options as ``collection.meta`` and the index metadata name them."""
        out = dataclasses.asdict(self)
        out["format"] = out.pop("fmt")
        return out


# what must agree between indexes merged into one: the model and every option but the file layout
MATCHING_KEYS = ("model_sha256", "query_model_sha256", "model", "query_model", "max_length", "stride", "pooling",
                 "dtype", *(k for k in CollectionOptions().record() if k not in ("part_size", "query_model")))
