"""Inference-free (doc-only) queries: a query's weights from a per-token table, with no transformer.

A query is tokenized with the model's WordPiece tokenizer (no special tokens, [UNK] dropped), and
each distinct token gets its weight from a table of one float per vocabulary entry, quantized with
the index's query scale. Two tables (``QUERY_MODES``):

- ``idf``: inverse document frequency from the index's own postings, Lucene's BM25 form
  ``log(1 + (N - df + 0.5) / (df + 0.5))`` (0 for a term no document has);
- ``learned``: the table trained with the document encoder (``train --query-mode learned``), one
  scalar per vocabulary entry, shipped in the model folder as :data:`MODEL_TABLE_FILE`; or the
  ``SparseStaticEmbedding`` query route of a sentence-transformers inference-free ``Router`` folder
  (its ``model.safetensors`` or ``idf.json``).

``full`` is the usual mode: queries run through the transformer (:class:`~splade_lucene.search.searcher.QueryEncoder`).
An index built for a table mode carries everything its queries need in :data:`FOLDER` (the tokenizer
files and the table), and records the mode and the table's sha256 in its metadata, so
:class:`TableQueryEncoder` opens it with no model at all.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Sequence

import numpy as np

from ..core.atomic import atomic_file
from ..core.errors import NotFoundError, SettingError, SpladeLuceneError
from ..core.quantize import DEFAULT_SCALE, check_scale, quantize
from ..encoding.loading import ModelError, read_sparse_head
from ..encoding.model import DEFAULT_MAX_LENGTH, has_words
from ..encoding.pooling import SparseVector

QUERY_MODES = ("full", "idf", "learned")
TABLE_MODES = ("idf", "learned")
FOLDER = "query-encoder"  # inside an index: tokenizer files, the table, table.json
TABLE_FILE = "weights.npy"
MODEL_TABLE_FILE = "query_weights.npy"  # inside a model folder trained with --query-mode learned
_META = "table.json"


class QueryTableError(SpladeLuceneError, ValueError):
    """A query table or mode that does not fit the index or model it is used with."""


def check_mode(mode: str) -> str:
    if mode not in QUERY_MODES:
        raise SettingError(f"query mode must be one of {', '.join(QUERY_MODES)}, not {mode!r}")
    return mode


def idf_weights(df: np.ndarray, n_docs: int) -> np.ndarray:
    """Lucene's BM25 idf for each document frequency, float32; 0 where df is 0."""
    df = np.asarray(df, dtype=np.float64)
    idf = np.log1p((n_docs - df + 0.5) / (df + 0.5))
    return np.where(df > 0, idf, 0.0).astype(np.float32)


def corpus_idf(tokenizer, texts: Sequence[str], vocab_size: int, max_length: int = DEFAULT_MAX_LENGTH,
               batch: int = 1024) -> np.ndarray:
    """:func:`idf_weights` of the WordPiece tokens of raw texts (each text counted once a token)."""
    df = np.zeros(vocab_size, dtype=np.int64)
    texts = list(texts)
    for start in range(0, len(texts), batch):
        ids = tokenizer(texts[start:start + batch], add_special_tokens=False, truncation=True,
                        max_length=max_length)["input_ids"]
        for row in ids:
            df[np.unique(np.asarray(row, dtype=np.int64))] += 1
    weights = idf_weights(df, len(texts))
    weights[sorted(set(tokenizer.all_special_ids))] = 0
    return weights


def sha256_table(weights: np.ndarray) -> str:
    """The table's identity: the sha256 of its float32 little-endian bytes."""
    return hashlib.sha256(np.ascontiguousarray(weights, dtype="<f4").tobytes()).hexdigest()


def check_table(weights, vocab_size: int | None, where: str) -> np.ndarray:
    """A float32 vector of finite, non-negative weights, one per vocabulary entry."""
    weights = np.asarray(weights)
    if weights.ndim != 1 or weights.dtype.kind != "f":
        raise QueryTableError(f"{where}: a query table is a 1-D float array, not {weights.dtype} of shape "
                              f"{weights.shape}")
    if vocab_size is not None and len(weights) != vocab_size:
        raise QueryTableError(f"{where}: the query table has {len(weights)} entries but the vocabulary "
                              f"{vocab_size}: it belongs to another model")
    if not np.all(np.isfinite(weights)) or np.any(weights < 0):
        raise QueryTableError(f"{where}: query weights must be finite and >= 0")
    return weights.astype(np.float32, copy=False)


def load_table(path: str | Path, vocab_size: int | None = None) -> np.ndarray:
    """A table saved with :func:`save_table` (``.npy``, read without pickle)."""
    path = Path(path)
    if not path.is_file():
        raise NotFoundError(f"query table {path} does not exist")
    try:
        weights = np.load(path, allow_pickle=False)
    except (OSError, ValueError) as exc:
        raise QueryTableError(f"{path}: not a query table ({exc})") from None
    return check_table(weights, vocab_size, str(path))


def save_table(weights: np.ndarray, path: str | Path) -> str:
    """Write a table (float32 ``.npy``) atomically; returns its sha256."""
    weights = check_table(weights, None, str(path))
    with atomic_file(Path(path), "wb") as fh:
        np.save(fh, weights.astype("<f4"), allow_pickle=False)
    return sha256_table(weights)


def table_vector(ids: Sequence[int], weights: np.ndarray, drop_ids: np.ndarray) -> SparseVector:
    """A query's vector from its token ids: each distinct id once, with its table weight (ids in
    ``drop_ids`` and weights of 0 left out)."""
    uniq = np.unique(np.asarray(ids, dtype=np.int64))
    uniq = uniq[~np.isin(uniq, drop_ids)]
    w = weights[uniq]
    keep = w > 0
    return SparseVector(uniq[keep], w[keep].astype(np.float32))


def model_query_table(model_path: str | Path) -> tuple[np.ndarray, str, str]:
    """(weights, source, tokenizer folder) of the query table a model folder ships: the
    :data:`MODEL_TABLE_FILE` that ``train --query-mode learned`` writes, or the query route of a
    sentence-transformers inference-free ``Router`` (weights in ``model.safetensors``, or an
    ``idf.json`` of {token: weight} its ``config.json`` names, tokens outside the vocabulary refused)."""
    head = read_sparse_head(model_path)
    table_file = Path(model_path) / MODEL_TABLE_FILE  # trained here (its Router form holds the same weights)
    if head.query_table is None or table_file.is_file():
        if not table_file.is_file():
            raise QueryTableError(f"query mode 'learned' needs the query table {table_file}, which a model "
                                  "trained with `train --query-mode learned` carries; this model has none "
                                  "(use --query-mode idf or full)")
        return load_table(table_file), str(table_file), head.masked_lm
    folder = Path(head.query_table)
    config = json.loads((folder / "config.json").read_text()) if (folder / "config.json").is_file() else {}
    if str(config.get("path", "")).endswith(".json"):
        from transformers import AutoTokenizer

        named = Path(config["path"])
        file = next((f for f in (named, folder / named, folder.parent / named, folder / named.name) if f.is_file()),
                    None)
        if file is None:
            raise NotFoundError(f"{folder}: its SparseStaticEmbedding reads {config['path']}, which is not there")
        vocab = AutoTokenizer.from_pretrained(str(folder)).get_vocab()
        idf = json.loads(file.read_text(encoding="utf-8"))
        unknown = [t for t in idf if t not in vocab]
        if unknown:
            raise QueryTableError(f"{file}: {len(unknown)} tokens are not in the vocabulary, e.g. {unknown[:3]}")
        weights = np.zeros(len(vocab), dtype=np.float32)
        for token, w in idf.items():
            weights[vocab[token]] = w
        return check_table(weights, None, str(file)), str(file), str(folder)
    from safetensors import SafetensorError
    from safetensors.numpy import load_file

    file = folder / "model.safetensors"
    try:
        weights = load_file(str(file))["weight"]
    except (OSError, KeyError, SafetensorError) as exc:
        raise ModelError(f"{file}: not a SparseStaticEmbedding's weights ({type(exc).__name__}: {exc})") from None
    return check_table(weights, None, str(file)), str(file), str(folder)


def model_query_mode(model_path: str | Path) -> str:
    """The query mode a model was trained for (its ``training.json``; ``learned`` for an inference-free
    sentence-transformers ``Router``), ``full`` where it records none."""
    if read_sparse_head(model_path).query_table is not None:
        return "learned"
    manifest = Path(model_path) / "training.json"
    if not manifest.is_file():
        return "full"
    try:
        settings = json.loads(manifest.read_text()).get("settings", {})
    except ValueError:
        return "full"
    return check_mode(settings.get("query_mode", "full"))


class TableQueryEncoder:
    """Model-free query encoder for a doc-only index; plugs into Pyserini like the full one:

    ``LuceneImpactSearcher(index_dir, TableQueryEncoder.from_index(index_dir), min_idf=-1)``.
    """

    def __init__(self, tokenizer, weights: np.ndarray, *, mode: str, scale: float = DEFAULT_SCALE,
                 max_length: int = DEFAULT_MAX_LENGTH):
        if mode not in TABLE_MODES:
            raise SettingError(f"a table query encoder's mode is one of {TABLE_MODES}, not {mode!r}")
        self.mode = mode
        self.tokenizer = tokenizer
        self.weights = check_table(weights, None, "query table")
        if len(tokenizer) > len(self.weights):
            raise QueryTableError(f"the tokenizer has {len(tokenizer)} entries but the query table "
                                  f"{len(self.weights)}: they do not belong together")
        self.scale = check_scale(scale)
        self.max_length = int(max_length)
        self.table_sha256 = sha256_table(self.weights)
        self._drop = np.array(sorted(set(tokenizer.all_special_ids)), dtype=np.int64)
        vocab = tokenizer.get_vocab()
        self.id_to_term = [""] * len(self.weights)
        for term, i in vocab.items():
            if i < len(self.id_to_term):
                self.id_to_term[i] = term

    @classmethod
    def from_index(cls, index_dir: str | Path, metadata: dict | None = None) -> "TableQueryEncoder":
        """The encoder stored in a doc-only index's :data:`FOLDER`, checked against its metadata."""
        from transformers import AutoTokenizer

        folder = Path(index_dir) / FOLDER
        if metadata is None:
            metadata = json.loads((Path(index_dir) / "splade_lucene.json").read_text())
        mode = metadata.get("query_mode", "full")
        if mode not in TABLE_MODES:
            raise QueryTableError(f"{index_dir} is an index for query mode {mode!r}: its queries need the "
                                  "model (QueryEncoder.from_index), not a table")
        if not (folder / TABLE_FILE).is_file():
            raise QueryTableError(f"{folder} is missing ({TABLE_FILE}): the index records query mode "
                                  f"{mode!r} but holds no table; rebuild it with --query-mode {mode}")
        weights = load_table(folder / TABLE_FILE)
        tokenizer = AutoTokenizer.from_pretrained(str(folder))
        encoder = cls(tokenizer, weights, mode=mode, scale=metadata.get("query_scale", metadata.get("scale")),
                      max_length=metadata.get("query_max_length", DEFAULT_MAX_LENGTH))
        encoder.check(metadata)
        return encoder

    def check(self, metadata: dict) -> None:
        mode = metadata.get("query_mode", "full")
        if mode != self.mode:
            raise QueryTableError(f"the index is for query mode {mode!r} but the query encoder is {self.mode!r}"
                                  + (": open it with QueryEncoder.from_index" if mode == "full" else ""))
        if metadata.get("query_table_sha256") != self.table_sha256:
            raise QueryTableError(f"the index's query table has sha256 {str(metadata.get('query_table_sha256'))[:12]} "
                                  f"but this encoder's {self.table_sha256[:12]}")
        scale = metadata.get("query_scale", metadata.get("scale"))
        if scale is not None and float(scale) != self.scale:
            raise QueryTableError(f"the index expects query scale {scale} but the query encoder uses {self.scale}")

    def vectors(self, texts: Sequence[str]) -> list[SparseVector]:
        empty = SparseVector(np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.float32))
        texts = list(texts)
        live = [i for i, t in enumerate(texts) if has_words(t)]
        out = [empty] * len(texts)
        if live:
            ids = self.tokenizer([texts[i] for i in live], add_special_tokens=False, truncation=True,
                                 max_length=self.max_length)["input_ids"]
            for i, row in zip(live, ids):
                out[i] = table_vector(row, self.weights, self._drop)
        return out

    def encode(self, text: str) -> dict[str, int]:
        """One query's integer weights (Pyserini's ``QueryEncoder.encode`` contract)."""
        return self.encode_batch([text])[0]

    def encode_batch(self, texts: Sequence[str]) -> list[dict[str, int]]:
        out = []
        for v in self.vectors(texts):
            ids, q = quantize(v.ids, v.weights, self.scale)
            out.append({self.id_to_term[i]: int(w) for i, w in zip(ids.tolist(), q.tolist())})
        return out


def write_query_folder(folder: Path, tokenizer, weights: np.ndarray, mode: str, source: str) -> dict:
    """Write a doc-only index's :data:`FOLDER` (tokenizer files, table); returns the metadata entries
    the index records."""
    if mode not in TABLE_MODES:
        raise SettingError(f"query mode {mode!r} has no table")
    weights = check_table(weights, len(weights), str(folder))
    if len(tokenizer) > len(weights):
        raise QueryTableError(f"{source}: the query table has {len(weights)} entries, the tokenizer {len(tokenizer)}")
    folder.mkdir(parents=True, exist_ok=True)
    tokenizer.save_pretrained(str(folder))
    sha = save_table(weights, folder / TABLE_FILE)
    with atomic_file(folder / _META, "w") as fh:
        json.dump({"mode": mode, "source": source, "sha256": sha, "entries": len(weights)}, fh, indent=1)
    return {"query_mode": mode, "query_table_sha256": sha, "query_table_source": source}
