"""splade-lucene: SPLADE learned sparse retrieval on Lucene impact indexes (Anserini, Pyserini).

Importing this package sets up Java 21 for Pyserini (see :mod:`splade_lucene.core.java`); import it
before ``pyserini``. Heavy modules (torch, the JVM) load only when first used.
"""

from __future__ import annotations

from importlib import import_module

from .core import java

java.prepare()

__version__ = "0.1.0"

_EXPORTS = {
    "SpladeEncoder": "encoding.model",
    "SparseVector": "encoding.pooling",
    "default_model_path": "encoding.loading",
    "encode_corpus": "encoding.local",
    "quantize": "core.quantize",
    "quantize_terms": "core.quantize",
    "DEFAULT_SCALE": "core.quantize",
    "read_corpus": "formats.collection",
    "read_queries": "formats.collection",
    "read_encoded_queries": "formats.collection",
    "TableQueryEncoder": "indexing.query_table",
    "export_onnx": "encoding.onnx",
    "encode_queries": "search.topics",
    "build_index": "indexing.build",
    "read_metadata": "formats.metadata",
    "write_blockmax": "indexing.blockmax",
    "BlockMaxIndex": "indexing.blockmax",
    "QueryEncoder": "search.encoders",
    "Searcher": "search.searcher",
    "ShardedSearcher": "search.shards",
    "open_searcher": "search.shards",
    "SearchSettings": "search.engines",
    "CollectionOptions": "formats.metadata",
    "EncoderSettings": "encoding.model",
    "run_pipeline": "evaluation.pipeline",
    "Hit": "formats.trec",
    "write_run": "formats.trec",
    "evaluate": "evaluation.metrics",
    "evaluate_files": "evaluation.metrics",
    "read_qrels": "formats.trec",
    "read_run": "formats.trec",
    "run_experiment": "experiments.experiment",
    "find_dataset": "experiments.experiment",
    "start_ray": "encoding.distributed",
    "stop_ray": "encoding.distributed",
    "keep_signal_handlers": "core.java",
    "train": "training.trainer",
    "TrainSettings": "training.settings",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str):
    if name in _EXPORTS:
        return getattr(import_module(f".{_EXPORTS[name]}", __name__), name)
    raise AttributeError(f"module 'splade_lucene' has no attribute {name!r}")
