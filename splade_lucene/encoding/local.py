"""Encoding a corpus into a collection folder: in this process (executor "local") and the door to
the Ray executor (:mod:`splade_lucene.encoding.distributed`); both write the same files through
:mod:`splade_lucene.encoding.writing`. The model itself is :mod:`splade_lucene.encoding.model`."""

from __future__ import annotations

import shutil
import time
from pathlib import Path
from typing import Iterable

from tqdm import tqdm

from ..core.atomic import naming_a_full_disk, output_lock
from ..core.errors import NotFoundError, SettingError
from ..formats.collection import CollectionWriter, InputError, count_lines, read_corpus
from ..formats.metadata import CollectionOptions
from .distributed import encode_corpus_ray
from .model import SpladeEncoder, encode_by_part, quantized_records
from .pooling import SparseVector
from .writing import (
    EncodeSummary,
    check_output,
    collection_metadata,
    finished_parts,
    publish_collection,
    record_progress,
    run_settings,
    writing_folder,
)


def encode_corpus(corpus: str | Path, output: str | Path, *, encoder: SpladeEncoder | None = None,
                  options: CollectionOptions | None = None, overwrite: bool = False, progress: bool = True,
                  resume: bool = True, executor: str = "local", address: str | None = None,
                  workers: int | None = None, gpus_per_worker: float | None = None) -> EncodeSummary:
    """Encode a corpus file into an integer-weighted Anserini collection folder.

    ``options`` (a :class:`~splade_lucene.formats.metadata.CollectionOptions`: scales, format, static
    pruning, part size ...; default: the defaults) say how the collection is made.

    The folder gets ``part-NNNNN.jsonl`` files of ``part_size`` documents and ``collection.meta``
    (JSON: model, sha256 of its weights, scales, max lengths, pooling, format, counts), which the
    index build carries over. The corpus is streamed (memory does not grow with it) and checked as it
    is read; output goes to a temporary folder beside ``output`` (``.NAME.writing``) that replaces
    ``output`` only when complete, so bad input leaves nothing there.

    Each finished part is recorded in that folder's ``progress.json``. A run that was killed is
    resumed by running it again with the same corpus (same size and modification time) and settings
    (``resume=True``): the parts already finished are kept, the corpus is read again from the start
    (every line is still checked) and only the documents after them are encoded. The result is
    byte-identical to an uninterrupted run. With other settings the old parts are discarded.

    Static pruning (:func:`splade_lucene.core.quantize.prune`, before quantization): ``doc_top_k`` keeps
    each document's heaviest terms, ``doc_min_weight`` drops lighter ones; ``query_top_k`` and
    ``query_min_weight`` are recorded for the queries (``QueryEncoder.from_index`` applies them).

    ``executor="ray"`` encodes the parts on a Ray cluster (:mod:`splade_lucene.encoding.distributed`; ``address``
    names a running cluster, else a local one is started with ``workers`` workers) and writes the same
    files. Parts are the unit of work either way: each part's documents are encoded on their own, so
    the output does not depend on the executor, the number of workers or where a run resumed.
    """
    options = options or CollectionOptions()
    with output_lock(output):
        corpus, output = Path(corpus), Path(output)
        check_output(output, overwrite)
        if not corpus.is_file():
            raise NotFoundError(f"no such corpus file: {corpus}")
        # the Ray executor reads the corpus as byte ranges (corpus_parts): no counting pass of its own here
        total = count_lines(corpus) if executor == "local" else None
        if total == 0:
            raise InputError(f"{corpus} holds no documents (it is empty or blank): an index of nothing is no index")
        encoder = encoder or SpladeEncoder()
        state = run_settings(corpus, encoder, options)
        if executor == "ray":
            return encode_corpus_ray(corpus, output, encoder=encoder, options=options, settings=state, address=address,
                                     workers=workers, gpus_per_worker=gpus_per_worker, resume=resume,
                                     progress=progress)
        if executor != "local":
            raise SettingError(f"executor must be 'local' or 'ray', not {executor!r}")
        tmp = writing_folder(output)
        parts = finished_parts(tmp, state) if resume else []  # none: _write starts the folder afresh
        skip = sum(p["documents"] for p in parts)
        docs = (d for i, d in enumerate(read_corpus(corpus)) if i >= skip)
        items = encode_by_part(encoder, ((d.id, d.text) for d in docs), options.part_size)
        return _write(items, output, encoder, options, corpus=corpus, progress=progress, total=total,
                      state=state, parts=parts)


def write_vectors(items: Iterable[tuple[str, SparseVector]], output: str | Path, *, encoder: SpladeEncoder,
                  options: CollectionOptions | None = None, corpus: str | Path | None = None,
                  overwrite: bool = False, progress: bool = True, total: int | None = None) -> EncodeSummary:
    """Quantize (doc id, float vector) pairs and write them, with ``collection.meta``, as a collection
    folder; ``options`` as for :func:`encode_corpus`; ``total`` (the expected count) only sizes the
    progress bar."""
    options = options or CollectionOptions()
    output = Path(output)
    with output_lock(output):
        check_output(output, overwrite)
        return _write(items, output, encoder, options, corpus=corpus, progress=progress, total=total)


def _write(items, output: Path, encoder: SpladeEncoder, options: CollectionOptions, *, corpus, progress: bool,
           total: int | None, state: dict | None = None, parts: list[dict] | None = None) -> EncodeSummary:
    """Both doors' writer. ``state``: the run's settings, recorded for resuming (None: not resumable);
    ``parts``: the parts an interrupted run finished, kept."""
    parts = parts if parts is not None else []
    start = time.perf_counter()
    tmp = writing_folder(output)
    if not parts and tmp.exists():
        shutil.rmtree(tmp)
    done = sum(p["documents"] for p in parts)
    records = quantized_records(items, encoder.id_to_term, options.scale, doc_top_k=options.doc_top_k,
                                doc_min_weight=options.doc_min_weight)
    with naming_a_full_disk(output):
        try:
            with CollectionWriter(tmp, options.fmt, options.part_size, start=done,
                                  on_part=lambda part: record_progress(tmp, state, parts, part)) as writer, \
                    tqdm(total=total, initial=done, desc="encode", unit="doc", disable=not progress) as bar:
                for docid, terms, truncated in records:
                    writer.write(docid, terms, truncated=truncated)
                    bar.update(1)
        except BaseException:
            # nothing reaches `output`; a resumable run keeps its finished parts for the next run
            if state is None or not parts:
                shutil.rmtree(tmp, ignore_errors=True)
            raise
        metadata = collection_metadata(encoder, parts, options, corpus=corpus)
        publish_collection(tmp, output, metadata)
    return EncodeSummary(metadata["documents"], metadata["empty_documents"], output, time.perf_counter() - start,
                         metadata, metadata["truncated_documents"], done)
