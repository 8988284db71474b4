"""splade-lucene: SPLADE learned sparse retrieval on Lucene impact indexes (Anserini, Pyserini).

Importing this package sets up Java 21 for Pyserini (see :mod:`splade_lucene._java`); import it
before ``pyserini``. Heavy modules (torch, the JVM) load only when first used.
"""

from __future__ import annotations

from importlib import import_module

from . import _java

_java.prepare()

__version__ = "0.1.0"

_EXPORTS = {
    "SpladeEncoder": "model",
    "SparseVector": "model",
    "default_model_path": "model",
    "encode_corpus": "encode",
    "quantize": "quantize",
    "quantize_terms": "quantize",
    "DEFAULT_SCALE": "quantize",
    "read_corpus": "collection",
    "read_queries": "collection",
    "read_encoded_queries": "collection",
    "TableQueryEncoder": "query_table",
    "export_onnx": "onnx_export",
    "encode_queries": "search",
    "build_index": "index",
    "read_metadata": "index",
    "write_blockmax": "blockmax",
    "BlockMaxIndex": "blockmax",
    "QueryEncoder": "search",
    "Searcher": "search",
    "Hit": "search",
    "write_run": "search",
    "evaluate": "evaluate",
    "evaluate_files": "evaluate",
    "read_qrels": "evaluate",
    "read_run": "evaluate",
    "run_experiment": "experiment",
    "find_dataset": "experiment",
    "start_ray": "distributed",
    "stop_ray": "distributed",
    "keep_signal_handlers": "_java",
    "train": "training",
    "TrainSettings": "training",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str):
    if name in _EXPORTS:
        return getattr(import_module(f".{_EXPORTS[name]}", __name__), name)
    raise AttributeError(f"module 'splade_lucene' has no attribute {name!r}")
