"""One experiment on a BEIR-layout dataset folder: encode, index, search, evaluate.

A dataset folder holds ``corpus.jsonl`` (or ``.jsonl.gz``), ``queries.jsonl`` and
``qrels/<split>.tsv``. The output folder gets ``collection/``, ``index/``, ``run.trec`` and
``metrics.json``. Only the queries judged in the split's qrels are searched; hits whose doc id
equals the query id are dropped (the BEIR convention, Pyserini's ``--remove-query``) unless
``remove_query=False``.
"""

from __future__ import annotations

import dataclasses
import json
import os
from dataclasses import dataclass, field
from pathlib import Path

from ..core.atomic import output_lock, write_text
from ..core.errors import NotFoundError, OutputExistsError, SettingError
from ..encoding.model import EncoderSettings
from ..evaluation.pipeline import PipelineResult, judged, run_pipeline
from ..formats.collection import corpus_file, read_corpus, read_queries
from ..formats.metadata import CollectionOptions
from ..formats.trec import DEFAULT_K, read_qrels
from ..search.engines import SearchSettings

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
    corpus = corpus_file(folder)
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
    return list(read_corpus(corpus)), judged(read_queries(queries_file), qrels), qrels


def plain_text(text: str) -> str:
    """Text as classic test collections and many preprocessed corpora hold it: lowercased, every
    character that is not a letter, digit or space replaced by a space, spaces collapsed."""
    import re

    return " ".join(re.sub(r"[^\w\s]|_", " ", text.lower()).split())


def plain_dataset(dataset: str | Path, output: str | Path) -> Path:
    """A copy of a BEIR dataset folder whose documents have no title and :func:`plain_text` for text
    (title and text joined first, so no word is lost); queries and qrels copied as they are. The
    copy is written beside and moved into place; an existing ``output`` is refused."""
    import shutil

    source, output = Path(dataset), Path(output)
    corpus = corpus_file(source)
    if corpus is None:
        raise NotFoundError(f"{source} is not a BEIR dataset folder: missing corpus.jsonl")
    if output.exists():
        raise OutputExistsError(f"{output} exists")
    tmp = output.parent / f".{output.name}.writing"
    shutil.rmtree(tmp, ignore_errors=True)
    shutil.copytree(source, tmp, ignore=shutil.ignore_patterns("corpus.jsonl*"))
    with open(tmp / "corpus.jsonl", "w", encoding="utf-8") as fh:
        for doc in read_corpus(corpus):
            fh.write(json.dumps({"_id": doc.id, "title": "", "text": plain_text(doc.text)}, ensure_ascii=False) + "\n")
    tmp.rename(output)
    return output


@dataclass
class ExperimentResult:
    dataset: Path
    split: str
    output: Path
    metrics: dict[str, float]
    run_file: Path
    index_dir: Path
    seconds: dict[str, float] = field(default_factory=dict)
    pipeline: PipelineResult | None = None


def run_experiment(dataset: str | Path | None = None, output: str | Path = "runs/scifact", *,
                   model: str | Path | None = None, encoder: EncoderSettings | None = None,
                   collection: CollectionOptions | None = None, search: SearchSettings | None = None,
                   k: int = DEFAULT_K, threads: int = 1, split: str = "test", query_mode: str | None = None,
                   remove_query: bool = True, overwrite: bool = False, reuse: bool = False,
                   progress: bool = True) -> ExperimentResult:
    """Encode, index, search and evaluate a BEIR folder's ``split`` (:func:`run_pipeline`).

    What it is made with comes as records: ``encoder`` (:class:`EncoderSettings`; ``model`` is a
    shortcut for its model), ``collection`` (:class:`CollectionOptions`: scales, format, static
    pruning, query model and length), ``search`` (:class:`SearchSettings`). ``query_mode``: the
    index's (``full``, ``idf``, ``learned``; default: what the model was trained for); an index for
    inference-free queries is searched with the table stored in it. An existing output is refused
    unless ``overwrite`` (do it all again) or ``reuse`` (keep the collection and index where they
    were built with the same inputs)."""
    encoder = encoder or EncoderSettings()
    if model is not None:
        if encoder.model is not None and str(model) != encoder.model:
            raise SettingError(f"model={model} and encoder.model={encoder.model} name two models: pass one")
        encoder = dataclasses.replace(encoder, model=str(model))
    folder = find_dataset(dataset)
    corpus, queries_file, qrels_file = dataset_files(folder, split)
    output = Path(output)
    with output_lock(output):
        index_dir = output / "index"
        if index_dir.exists() and not (overwrite or reuse):
            raise OutputExistsError(f"{index_dir} already exists; pass --overwrite to redo the experiment "
                                    "(or --reuse to keep what was built with the same inputs)")
        qrels = read_qrels(qrels_file)
        result = run_pipeline(corpus, read_queries(queries_file), qrels, output, encoder=encoder.open(),
                              options=collection, search=search, k=k, threads=threads, query_mode=query_mode,
                              remove_query=remove_query, reuse=reuse, progress=progress)
        write_text(output / "timings.json", json.dumps(result.seconds, indent=2) + "\n")
        return ExperimentResult(folder, split, output, result.metrics, result.run_file, result.index_dir,
                                result.seconds, result)
