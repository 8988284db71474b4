"""ONNX export of a SPLADE model, with the SPLADE head inside the graph.

The graph takes ``input_ids``, ``token_type_ids`` and ``attention_mask`` (int64, batch x length) and
returns the non-zero entries of the batch's SPLADE vectors: ``output_idx`` (int64) and
``output_weights`` (float32), one entry per (text, term). Inside the graph: the masked-LM logits,
padding positions masked out (and special-token positions too for pooling ``no-special``), the max
over positions, ``log(1 + relu(.))``, special tokens removed from the vocabulary. An entry's index is
``row * vocab_size + term id``, so for one text (Anserini's query encoders run batch 1) it is the
term id itself: the names and shapes are those of Anserini's ONNX SPLADE query encoders.

Beside the graph the folder holds the tokenizer files and ``splade_onnx.json`` (the source model and
its weights' sha256, vocabulary size, pooling, opset), so that ``--model DIR`` (backend ``onnx``, or
``auto``) encodes with onnxruntime alone, and an index built with the torch model accepts its queries.
"""

from __future__ import annotations

import json
import logging
import shutil
import warnings
from contextlib import contextmanager
from pathlib import Path

import numpy as np

from ..core.atomic import move_into_place, output_lock
from ..core.errors import OutputExistsError, SettingError
from ..core.quantize import quantize
from .loading import (
    ONNX_FILE,
    ONNX_INPUTS,
    ONNX_META,
    ONNX_OUTPUTS,
    ModelError,
    load_masked_lm,
    model_weights_sha256,
    resolve_model,
)
from .model import SpladeEncoder

OPSET = 18
# texts the export is checked on: the graph's quantized vectors must equal torch's
_CHECK_TEXTS = ("kitten", "What is the role of the p53 protein in cancer?",
                "Lucene impact indexes store integer term weights, which a learned sparse model provides.")


@contextmanager
def _quiet_exporter():
    """torch's exporter logs a line per optional operator set it cannot find (torchvision's): noise."""
    loggers = [logging.getLogger(n) for n in ("torch.onnx", "torch.onnx._internal.exporter._registration",
                                                   "onnxscript")]
    levels = [lg.level for lg in loggers]
    for lg in loggers:
        lg.setLevel(logging.ERROR)
    try:
        yield
    finally:
        for lg, level in zip(loggers, levels):
            lg.setLevel(level)


def _graph_module(model, special_ids: list[int], pooling: str):
    import torch

    vocab = int(model.get_output_embeddings().weight.shape[0])

    class SpladeGraph(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.mlm = model
            keep = torch.ones(vocab, dtype=torch.float32)
            keep[special_ids] = 0
            self.register_buffer("keep", keep)
            self.register_buffer("special", torch.tensor(special_ids, dtype=torch.long))

        def forward(self, input_ids, token_type_ids, attention_mask):
            logits = self.mlm(input_ids=input_ids, token_type_ids=token_type_ids,
                              attention_mask=attention_mask).logits
            mask = attention_mask > 0
            if pooling == "no-special":
                mask = mask & ~(input_ids.unsqueeze(-1) == self.special).any(dim=-1)
            pooled = logits.masked_fill(~mask.unsqueeze(-1), float("-inf")).amax(dim=1)
            weights = torch.log1p(torch.relu(pooled)) * self.keep
            flat = weights.reshape(-1)
            idx = torch.nonzero(flat > 0).reshape(-1)
            return idx, flat[idx]

    return SpladeGraph().eval()


def export_onnx(model: str | Path | None, output: str | Path, *, pooling: str = "all", opset: int = OPSET,
                overwrite: bool = False, check: bool = True) -> Path:
    """Export ``model`` (a masked-LM folder; default SPLADE-tiny) to an ONNX folder at ``output``,
    atomically. ``check``: compare the graph's quantized vectors (scale 100) with torch's on a few
    texts before the folder is published."""
    import torch

    if pooling not in ("all", "no-special"):
        raise SettingError(f"pooling must be 'all' or 'no-special', not {pooling!r}")
    name, path = resolve_model(model)
    if (Path(path) / ONNX_META).is_file():
        raise ModelError(f"{path} is an ONNX export already; export from the model it came from")
    output = Path(output)
    with output_lock(output):
        if output.exists() and not overwrite:
            raise OutputExistsError(f"{output} already exists; pass --overwrite to replace it")
        mlm, tokenizer = load_masked_lm(path)
        mlm.eval()
        vocab = int(mlm.get_output_embeddings().weight.shape[0])
        special = sorted(set(tokenizer.all_special_ids))
        graph = _graph_module(mlm, special, pooling)
        tmp = output.parent / f".{output.name}.writing"
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir(parents=True)
        try:
            sample = tokenizer(["a first text", "and a second, longer one"], padding=True, return_tensors="pt")
            args = tuple(sample[k] if k in sample else torch.zeros_like(sample["input_ids"]) for k in ONNX_INPUTS)
            batch, length = torch.export.Dim("batch"), torch.export.Dim("length", max=4096)
            with warnings.catch_warnings(), _quiet_exporter():
                warnings.simplefilter("ignore")
                torch.onnx.export(graph, args, str(tmp / ONNX_FILE), input_names=list(ONNX_INPUTS),
                                  output_names=list(ONNX_OUTPUTS), opset_version=opset, dynamo=True,
                                  dynamic_shapes={k: {0: batch, 1: length} for k in ONNX_INPUTS},
                                  external_data=False, verbose=False)
            tokenizer.save_pretrained(str(tmp))
            meta = {"source_model": name, "source_path": str(path), "model_sha256": model_weights_sha256(path),
                    "vocab_size": vocab, "pooling": pooling, "opset": opset, "inputs": list(ONNX_INPUTS),
                    "outputs": list(ONNX_OUTPUTS), "output_idx": "row * vocab_size + term id",
                    "special_ids": special, "torch": torch.__version__}
            (tmp / ONNX_META).write_text(json.dumps(meta, indent=1) + "\n")
            if check:
                _check_export(tmp, path, pooling)
            move_into_place(tmp, output)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
    return output


def _check_export(folder: Path, source: str, pooling: str) -> None:

    torch_enc = SpladeEncoder(source, pooling=pooling, backend="torch")
    onnx_enc = SpladeEncoder(str(folder), pooling=pooling, backend="onnx")  # opens and checks the graph
    for text, a, b in zip(_CHECK_TEXTS, torch_enc.encode(_CHECK_TEXTS), onnx_enc.encode(_CHECK_TEXTS)):
        qa = dict(zip(*[x.tolist() for x in quantize(a.ids, a.weights, 100)]))
        qb = dict(zip(*[x.tolist() for x in quantize(b.ids, b.weights, 100)]))
        worst = max((abs(qa.get(t, 0) - qb.get(t, 0)) for t in set(qa) | set(qb)), default=0)
        if worst > 1 or np.mean([qa.get(t) == qb.get(t) for t in set(qa) | set(qb)]) < 0.99:
            raise ModelError(f"the exported graph's vector for {text!r} differs from torch's (largest quantized "
                             f"difference {worst}); the export was not kept")
