"""Query encoders: the SPLADE query encoder that plugs into Pyserini (:class:`QueryEncoder`), the
choice of an index's own encoder (its model, or the table of an index for inference-free queries),
and the check of a quantized query."""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

from ..core.errors import SettingError, SettingTypeError
from ..core.faults import fault_point
from ..core.quantize import DEFAULT_SCALE, check_pruning, check_scale, prune, quantize_terms
from ..encoding.model import DEFAULT_MAX_LENGTH, SpladeEncoder
from ..encoding.pooling import SparseVector
from ..formats.metadata import check_compatible, read_metadata
from ..indexing.export import token_ids
from ..indexing.query_table import QUERY_MODES, TABLE_MODES, QueryTableError, TableQueryEncoder


class QueryEncoder:
    """SPLADE query encoder giving ``{term: int}``; plugs into Pyserini:

    ``LuceneImpactSearcher(index_dir, QueryEncoder.from_index(index_dir), min_idf=-1)``.
    """

    def __init__(self, model: str | Path | None = None, *, scale: float = DEFAULT_SCALE,
                 max_length: int = DEFAULT_MAX_LENGTH, pooling: str = "all", dtype: str = "fp32",
                 encoder: SpladeEncoder | None = None, top_k: int | None = None, min_weight: float | None = None,
                 backend: str = "auto", threads: int | None = None):
        self.scale = check_scale(scale)
        self.top_k, self.min_weight = check_pruning(top_k, min_weight)
        self.max_length = int(max_length)
        self.encoder = encoder or SpladeEncoder(model, max_length=max_length, pooling=pooling, dtype=dtype,
                                                backend=backend, threads=threads)
        self._vocabulary: dict[str, int] | None = None

    @classmethod
    def from_index(cls, index_dir: str | Path, model: str | Path | None = None, *,
                   backend: str = "auto", encoder: SpladeEncoder | None = None) -> "QueryEncoder | TableQueryEncoder":
        """The query encoder an index was built for (its recorded query model, scale, max length,
        query pruning); for an index built for inference-free queries (``query_mode`` idf or learned),
        the model-free :class:`~splade_lucene.indexing.query_table.TableQueryEncoder` stored in it.
        ``encoder``: an already loaded encoder of the index's query model, used instead of loading
        it again (its weights must be the ones the index records)."""
        meta = read_metadata(index_dir)
        if meta.get("query_mode", "full") not in QUERY_MODES:
            raise QueryTableError(f"{index_dir}: the index records query mode {meta['query_mode']!r}, which this "
                                  f"version does not know (expected one of {', '.join(QUERY_MODES)})")
        if meta.get("query_mode", "full") in TABLE_MODES:
            if model is not None:
                raise QueryTableError(f"{index_dir} is built for inference-free queries (query mode "
                                      f"{meta['query_mode']!r}): its queries take no model, and --model {model} "
                                      "would not be used")
            return TableQueryEncoder.from_index(index_dir, meta)
        if encoder is not None and model is None and encoder.weights_sha256 == meta.get(
                "query_model_sha256", meta.get("model_sha256")):
            model = encoder.model_path
        else:
            encoder = None
        query_encoder = cls(model if model is not None else meta.get("query_model", meta.get("model")),
                            encoder=encoder, scale=meta.get("query_scale", meta["scale"]),
                            max_length=meta.get("query_max_length", DEFAULT_MAX_LENGTH),
                            pooling=meta.get("pooling", "all"), dtype=meta.get("dtype", "fp32"),
                            top_k=meta.get("query_top_k"), min_weight=meta.get("query_min_weight"), backend=backend)
        query_encoder.check(meta)
        return query_encoder

    def check(self, metadata: dict) -> None:
        mode = metadata.get("query_mode", "full")
        if mode != "full":
            raise QueryTableError(f"the index is built for inference-free queries (query mode {mode!r}), not "
                                  "for the model's: open it with QueryEncoder.from_index (or no query encoder)")
        check_compatible(metadata, model_sha256=self.encoder.weights_sha256, model=self.encoder.model_name,
                         scale=self.scale)

    @property
    def tokenizer(self):
        return self.encoder.tokenizer

    def encode(self, text: str) -> dict[str, int]:
        """One query's integer weights (Pyserini's ``QueryEncoder.encode`` contract)."""
        return self.encode_batch([text])[0]

    def encode_ids(self, text: str) -> dict[int, float]:
        """One query's weights keyed by token id, as vector databases take sparse vectors (Milvus:
        `splade-lucene export --to milvus`)."""
        if self._vocabulary is None:
            self._vocabulary = self.tokenizer.get_vocab()
        return token_ids(self.encode(text), self._vocabulary)

    def encode_batch(self, texts: Sequence[str]) -> list[dict[str, int]]:
        """Integer weights per text; a text with no letter or digit (empty, blank, only punctuation)
        gets no terms (see :class:`~splade_lucene.encoding.model.SpladeEncoder`), so it matches nothing."""
        vectors = self.encoder.encode(texts, max_length=self.max_length)
        if self.top_k is not None or self.min_weight is not None:
            vectors = [SparseVector(*prune(v.ids, v.weights, top_k=self.top_k, min_weight=self.min_weight))
                       for v in vectors]
        return [quantize_terms(self.encoder.to_terms(v), self.scale) for v in vectors]



def check_query(terms: dict[str, int]) -> None:
    for term, weight in terms.items():
        if not isinstance(weight, int) or isinstance(weight, bool):
            raise SettingTypeError(f"query weight for {term!r} must be an int, got {weight!r} "
                            "(quantize with splade_lucene.core.quantize.quantize_terms)")



def encode_all(encoder, queries: Sequence[tuple[str, str]], progress: bool) -> dict[str, dict[str, int]]:
    from tqdm import tqdm

    encoded = {}
    for start in tqdm(range(0, len(queries), 256), desc="encode queries", disable=not progress, unit="batch"):
        chunk = queries[start:start + 256]
        for (qid, _), terms in zip(chunk, encoder.encode_batch([t for _, t in chunk])):
            encoded[qid] = terms
        fault_point("search.chunk")
    return encoded


def open_query_encoder(index_dir: Path, metadatas: Sequence[dict], query_encoder=None, *,
                       model: str | Path | None = None, pretokenized: bool = False):
    """The query encoder a searcher of ``index_dir`` (and of the indexes with ``metadatas``) uses:
    ``None`` for pre-encoded queries (``pretokenized``); ``query_encoder`` where given, else the
    index's own (:meth:`QueryEncoder.from_index`); checked against every index's metadata."""
    if pretokenized:
        if query_encoder is not None or model is not None:
            raise SettingError("pretokenized=True searches encoded queries: pass no query encoder or model")
        return None
    if query_encoder is None:
        query_encoder = QueryEncoder.from_index(index_dir, model=model)
    for meta in metadatas:
        query_encoder.check(meta)
    return query_encoder
