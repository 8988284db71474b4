"""One experiment on a BEIR-layout dataset folder: encode, index, search, evaluate.

A dataset folder holds ``corpus.jsonl`` (or ``.jsonl.gz``), ``queries.jsonl`` and
``qrels/<split>.tsv``. The output folder gets ``collection/``, ``index/``, ``run.trec`` and
``metrics.json``. Only the queries judged in the split's qrels are searched; hits whose doc id
equals the query id are dropped (the BEIR convention, Pyserini's ``--remove-query``) unless
``remove_query=False``.
"""

from __future__ import annotations

import json
import os
import time
from dataclasses import dataclass, field
from pathlib import Path

from ..core.atomic import output_lock, write_text
from ..core.errors import NotFoundError, OutputExistsError
from ..core.quantize import DEFAULT_SCALE
from ..encoding.local import encode_corpus
from ..encoding.model import DEFAULT_BATCH_SIZE, DEFAULT_MAX_LENGTH, SpladeEncoder
from ..evaluation.metrics import evaluate, read_qrels, read_run, write_metrics
from ..formats.collection import read_corpus, read_queries
from ..indexing.build import build_index
from ..search.searcher import DEFAULT_K, QueryEncoder, Searcher, write_run

DATA_ENV = "SPLADE_LUCENE_DATA"
DEFAULT_DATASET = "scifact"


def data_root() -> Path | None:
    """``$SPLADE_LUCENE_DATA``, else ``../shared/datasets`` beside the working directory or the checkout."""
    if os.environ.get(DATA_ENV):
        return Path(os.environ[DATA_ENV])
    here = Path(__file__).resolve().parent.parent
    for base in (Path.cwd(), here):
        candidate = base.parent / "shared" / "datasets"
        if candidate.is_dir():
            return candidate
    return None


def find_dataset(dataset: str | Path | None = None, name: str = DEFAULT_DATASET) -> Path:
    """The dataset folder: ``dataset`` if given, else ``$SPLADE_LUCENE_DATA/NAME``, else
    ``../shared/datasets/NAME``; a clear error says how to provide one."""
    if dataset is not None:
        path = Path(dataset)
        if not path.is_dir():
            raise NotFoundError(f"dataset folder {path} does not exist")
        return path
    root = data_root()
    if root is not None and (root / name).is_dir():
        return root / name
    raise NotFoundError(
        f"no {name} dataset found: pass --dataset DIR (a BEIR folder with corpus.jsonl, queries.jsonl and "
        f"qrels/test.tsv), or set {DATA_ENV} to a folder holding {name}/, or place it at "
        f"../shared/datasets/{name}")


def dataset_files(folder: Path, split: str = "test") -> tuple[Path, Path, Path]:
    corpus = next((folder / n for n in ("corpus.jsonl", "corpus.jsonl.gz") if (folder / n).is_file()), None)
    queries = next((folder / n for n in ("queries.jsonl", "queries.jsonl.gz", "queries.tsv")
                    if (folder / n).is_file()), None)
    qrels = folder / "qrels" / f"{split}.tsv"
    missing = [name for name, path in (("corpus.jsonl", corpus), ("queries.jsonl", queries),
                                       (f"qrels/{split}.tsv", qrels)) if path is None or not path.is_file()]
    if missing:
        raise NotFoundError(f"{folder} is not a BEIR dataset folder: missing {', '.join(missing)}")
    return corpus, queries, qrels


def judged_dataset(dataset: str | Path | None = None, split: str = "test"):
    """(documents, judged queries as (qid, text), qrels) of a BEIR folder (default: SciFact from the
    data root): what the measurement scripts encode once and reuse."""

    corpus, queries_file, qrels_file = dataset_files(find_dataset(dataset), split)
    qrels = read_qrels(qrels_file)
    return list(read_corpus(corpus)), [(q, t) for q, t in read_queries(queries_file) if q in qrels], qrels


@dataclass
class ExperimentResult:
    dataset: Path
    split: str
    output: Path
    metrics: dict[str, float]
    run_file: Path
    index_dir: Path
    seconds: dict[str, float] = field(default_factory=dict)


def run_experiment(dataset: str | Path | None = None, output: str | Path = "runs/scifact", *,
                   model: str | Path | None = None, scale: float = DEFAULT_SCALE,
                   query_scale: float | None = None, query_model: str | Path | None = None,
                   max_length: int = DEFAULT_MAX_LENGTH,
                   query_max_length: int | None = None, batch_size: int = DEFAULT_BATCH_SIZE, dtype: str = "fp32",
                   device: str = "cpu", fmt: str = "vector", k: int = DEFAULT_K, threads: int = 1, split: str = "test",
                   remove_query: bool = True, overwrite: bool = False, progress: bool = True,
                   stride: int | None = None, query_mode: str | None = None,
                   backend: str = "auto") -> ExperimentResult:
    """Encode, index, search and evaluate a BEIR folder's ``split``. ``query_mode``: the index's
    (``full``, ``idf``, ``learned``; default: what the model was trained for); an index for
    inference-free queries is searched with the table stored in it."""
    folder = find_dataset(dataset)
    corpus, queries_file, qrels_file = dataset_files(folder, split)
    output = Path(output)
    with output_lock(output):
        index_dir = output / "index"
        if index_dir.exists() and not overwrite:
            raise OutputExistsError(f"{index_dir} already exists; pass --overwrite to redo the experiment")
        qrels = read_qrels(qrels_file)
        queries = [(qid, text) for qid, text in read_queries(queries_file) if qid in qrels]
        seconds: dict[str, float] = {}

        encoder = SpladeEncoder(model, max_length=max_length, batch_size=batch_size, dtype=dtype, device=device,
                                stride=stride, backend=backend)
        t = time.perf_counter()
        encode_corpus(corpus, output / "collection", encoder=encoder, scale=scale, query_scale=query_scale,
                      fmt=fmt, query_max_length=query_max_length, query_model=query_model, overwrite=True,
                      progress=progress)
        seconds["encode"] = time.perf_counter() - t

        t = time.perf_counter()
        build = build_index(output / "collection", index_dir, threads=threads, overwrite=overwrite,
                            quiet=not progress, query_mode=query_mode)
        seconds["index"] = time.perf_counter() - t

        t = time.perf_counter()
        if build.metadata.get("query_mode", "full") != "full":
            query_encoder = QueryEncoder.from_index(index_dir)
        else:
            query_encoder = QueryEncoder(query_model, encoder=encoder if query_model is None else None,
                                         scale=query_scale or scale, max_length=query_max_length or max_length)
        with Searcher(index_dir, query_encoder) as searcher:
            results = searcher.batch_search(queries, k=k, threads=threads, progress=progress)
            corpus_ids = set(searcher.docids)
        run_file = output / "run.trec"
        write_run(results, run_file, remove_query=remove_query)
        seconds["search"] = time.perf_counter() - t


        metrics = evaluate(qrels, read_run(run_file), remove_query=remove_query, corpus_ids=corpus_ids).metrics
        write_metrics(metrics, output / "metrics.json")
        write_text(output / "timings.json", json.dumps(seconds, indent=2) + "\n")
        return ExperimentResult(folder, split, output, metrics, run_file, index_dir, seconds)
