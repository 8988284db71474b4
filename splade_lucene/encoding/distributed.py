"""Encoding a corpus on a Ray cluster (Ray Data), into the same collection a local run writes.

The corpus is cut into the collection's parts (``part_size`` documents each) by byte ranges of the
file; a Ray Data pipeline hands the parts to a pool of actors, each holding one
:class:`~splade_lucene.encoding.model.SpladeEncoder` (on one GPU where ``gpus_per_worker`` asks for it). An
actor reads its part's lines from the corpus (checked as :func:`~splade_lucene.formats.collection.read_corpus`
checks them), encodes them exactly as a local run encodes a part
(:func:`~splade_lucene.encoding.model.encode_by_part`), quantizes them and sends the part's records back. The
driver alone writes the collection: each part file as it arrives (``.partial``, fsynced, renamed), its
progress in ``.NAME.writing/progress.json``, and ``collection.meta`` at the end, so the output is the
same files, byte for byte, as ``executor="local"`` writes.

Faults: an actor that dies is restarted by Ray and its part encoded again (a part is written only
whole, so nothing is lost or written twice); a driver that dies leaves its finished parts, which the
same command resumes (in any order; a local run resumes from the unbroken run of first parts). On a
cluster the corpus must be readable at the same path on every node (a shared file system); the
collection is written where the driver runs.
"""

from __future__ import annotations

import json
import os
import shutil
import time
from pathlib import Path

from ..core.errors import NotFoundError, SettingError, require
from ..core.java import keep_signal_handlers
from ..formats.collection import (
    UTF8_BOM,
    InputError,
    document_text,
    parse_line,
    part_name,
    part_number,
    record_id,
    record_line,
    write_part,
)
from ..formats.metadata import CollectionOptions
from .model import SpladeEncoder, encode_by_part, quantized_records
from .writing import (
    EncodeSummary,
    collection_metadata,
    finished_parts,
    publish_collection,
    record_progress,
    writing_folder,
)


def corpus_parts(corpus: str | Path, part_size: int) -> list[dict]:
    """The byte ranges of ``corpus`` that hold each part's ``part_size`` documents (non-blank lines):
    ``{"number", "start", "stop", "first_line", "documents"}``. Reads bytes only, parses nothing."""
    parts: list[dict] = []
    number, start, first, count, pos = 0, 0, 1, 0, 0
    with open(corpus, "rb") as fh:
        for lineno, raw in enumerate(fh, 1):
            if raw.strip():
                if count == 0:
                    start, first = pos, lineno
                count += 1
            pos += len(raw)
            if count == part_size:
                parts.append({"number": number, "start": start, "stop": pos, "first_line": first, "documents": count})
                number, count = number + 1, 0
    if count:
        parts.append({"number": number, "start": start, "stop": pos, "first_line": first, "documents": count})
    return parts


def read_part(corpus: str | Path, part: dict) -> list[tuple[str, str, int]]:
    """A part's documents as (id, text, line), each line checked as ``read_corpus`` checks it."""
    path = Path(corpus)
    docs = []
    with open(path, "rb") as fh:
        fh.seek(part["start"])
        data = fh.read(part["stop"] - part["start"])
    if part["start"] == 0 and data.startswith(UTF8_BOM):
        data = data[len(UTF8_BOM):]  # a byte-order mark opens the file, as the local reader drops it
    lines = data.split(b"\n")
    if lines and not lines[-1]:
        lines.pop()  # the part's last newline
    for lineno, raw in enumerate(lines, part["first_line"]):
        obj = parse_line(raw, path, lineno)
        if obj is None:
            continue
        docs.append((record_id(obj, path, lineno), document_text(obj, path, lineno), lineno))
    if len(docs) != part["documents"]:
        raise InputError(f"{path} changed while it was being encoded (part {part['number']} has "
                         f"{len(docs)} documents, not {part['documents']})")
    return docs


class PartEncoder:
    """A Ray Data actor: one encoder, called with a batch of part descriptions, returning each part's
    records (one string) with its counts and document ids."""

    def __init__(self, corpus: str, encoder_options: dict, device: str, threads: int | None, options: dict):
        if threads:
            import torch

            torch.set_num_threads(threads)
        self.corpus = corpus
        self.encoder = SpladeEncoder(**encoder_options, device=device)
        self.options = options

    def __call__(self, batch: dict) -> dict:
        out: dict[str, list] = {"number": [], "text": [], "documents": [], "empty": [], "truncated": [], "ids": [],
                                "error": []}
        for i in range(len(batch["number"])):
            part = {key: int(batch[key][i]) for key in ("number", "start", "stop", "first_line", "documents")}
            try:
                docs = read_part(self.corpus, part)
            except (InputError, OSError) as exc:  # bad input: the driver raises it as it is
                for key, value in (("number", part["number"]), ("text", ""), ("documents", 0), ("empty", 0),
                                   ("truncated", 0), ("ids", "[]"), ("error", f"{type(exc).__name__}: {exc}")):
                    out[key].append(value)
                continue
            vectors = encode_by_part(self.encoder, ((d[0], d[1]) for d in docs), len(docs))
            lines, empty, truncated = [], 0, 0
            for docid, terms, cut in quantized_records(vectors, self.encoder.id_to_term, self.options["scale"],
                                                       doc_top_k=self.options["doc_top_k"],
                                                       doc_min_weight=self.options["doc_min_weight"]):
                lines.append(record_line(self.options["format"], docid, terms))
                empty += not terms
                truncated += bool(cut)
            out["number"].append(part["number"])
            out["text"].append("".join(lines))
            out["documents"].append(len(lines))
            out["empty"].append(empty)
            out["truncated"].append(truncated)
            out["ids"].append(json.dumps([[d[0], d[2]] for d in docs]))
            out["error"].append("")
        return out


def start_ray(address: str | None = None, workers: int | None = None):
    """Connect to the Ray cluster at ``address``, or start a local one of ``workers`` CPUs (default: all);
    (ray module, whether this call started it). A running connection is reused."""
    ray = require("ray", "ray", "--executor ray")

    if ray.is_initialized():
        return ray, False
    kwargs = {"include_dashboard": False, "log_to_driver": False, "logging_level": "error"}
    with keep_signal_handlers():  # a JVM in this process keeps its handlers (see keep_signal_handlers)
        if address:
            ray.init(address=address, **kwargs)
        else:
            # Ray starts workers at niceness 15 (background work); on a local cluster they are the job
            os.environ.setdefault("RAY_worker_niceness", "0")
            ray.init(num_cpus=workers or os.cpu_count(), **kwargs)
    return ray, True


def stop_ray(ray) -> None:
    """``ray.shutdown()``, with this process's crash-signal handlers kept (see :func:`start_ray`)."""
    with keep_signal_handlers():
        ray.shutdown()


def encode_corpus_ray(corpus: Path, output: Path, *, encoder: SpladeEncoder, options: CollectionOptions,
                      settings: dict, address: str | None = None, workers: int | None = None,
                      gpus_per_worker: float | None = None, resume: bool = True,
                      progress: bool = True) -> EncodeSummary:
    """``encode_corpus(..., executor="ray")``, called by it once the output may be written: see the
    module's description. ``settings``: the run's :func:`~splade_lucene.encoding.writing.run_settings`."""
    from tqdm import tqdm

    if corpus.suffix in (".gz", ".xz"):
        raise InputError(f"{corpus}: the Ray executor reads the corpus by byte ranges and cannot read a compressed "
                         "file; decompress it first (gunzip -k, xz -dk) or use the local executor")
    if workers is not None and workers < 1:
        raise SettingError(f"workers must be at least 1, not {workers}")
    if gpus_per_worker is not None and gpus_per_worker < 0:
        raise SettingError(f"gpus_per_worker must be 0 (CPU) or positive, not {gpus_per_worker}")
    start_time = time.perf_counter()
    parts = corpus_parts(corpus, options.part_size)
    if not parts:
        raise InputError(f"{corpus} holds no documents (it is empty or blank): an index of nothing is no index")
    ray, started = start_ray(address, workers)
    try:
        resources = ray.cluster_resources()
        if gpus_per_worker is None:  # one worker per GPU where the cluster has GPUs
            gpus_per_worker = 1.0 if resources.get("GPU", 0) >= 1 else 0.0
        device = "cuda" if gpus_per_worker else "cpu"
        settings = {**settings, "device": device}
        tmp = writing_folder(output)
        done = finished_parts(tmp, settings, contiguous=False) if resume else []
        if not done:
            shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir(parents=True, exist_ok=True)
        finished = {p["file"] for p in done}
        todo = [p for p in parts if part_name(p["number"]) not in finished]
        resumed = sum(p["documents"] for p in done)
        ids: dict[int, list] = {}
        if todo:
            cpus = max(1, int(resources.get("CPU", 1)))
            pool = workers or (int(resources["GPU"] // gpus_per_worker) if gpus_per_worker else cpus)
            pool = max(1, min(pool, len(todo)))
            threads = None if gpus_per_worker else max(1, cpus // pool)
            ray.data.DataContext.get_current().enable_progress_bars = False
            dataset = ray.data.from_items(todo, override_num_blocks=len(todo)).map_batches(
                PartEncoder, batch_size=1, compute=ray.data.ActorPoolStrategy(size=pool),
                num_cpus=threads, num_gpus=gpus_per_worker or None,
                fn_constructor_kwargs={"corpus": str(corpus.resolve()), "encoder_options": encoder.options(),
                                       "device": device, "threads": threads, "options": options.record()})
            total = sum(p["documents"] for p in parts)
            with tqdm(total=total, initial=resumed, desc="encode (ray)", unit="doc", disable=not progress) as bar:
                for row in dataset.iter_rows():
                    if row["error"]:
                        kind, _, message = row["error"].partition(": ")
                        raise (NotFoundError if kind in ("FileNotFoundError", "NotFoundError") else InputError)(message)
                    number = int(row["number"])
                    write_part(tmp, number, row["text"])
                    record_progress(tmp, settings, done, {
                        "file": part_name(number), "documents": int(row["documents"]), "empty": int(row["empty"]),
                        "truncated": int(row["truncated"])})
                    ids[number] = json.loads(row["ids"])
                    bar.update(int(row["documents"]))
    finally:
        if started:
            stop_ray(ray)
    _check_unique_ids(corpus, tmp, done, ids)
    done.sort(key=lambda p: part_number(p["file"]))
    metadata = collection_metadata(encoder, done, options, corpus=corpus)
    publish_collection(tmp, output, metadata)
    return EncodeSummary(metadata["documents"], metadata["empty_documents"], output,
                         time.perf_counter() - start_time, metadata, metadata["truncated_documents"], resumed)


def _check_unique_ids(corpus: Path, tmp: Path, parts: list[dict], ids: dict[int, list]) -> None:
    """Every document id once across the parts encoded in this run and those it resumed."""
    seen: dict[str, int | None] = {}
    for part in sorted(parts, key=lambda p: part_number(p["file"])):
        number = part_number(part["file"])
        if number in ids:
            pairs = ids[number]
        else:  # a part finished by an earlier run: its ids from its records, lines unknown
            with open(tmp / part["file"], encoding="utf-8") as fh:
                pairs = [[json.loads(line)["id"], None] for line in fh]
        for docid, line in pairs:
            if docid in seen:
                where = f"line {line}" if line else "in a part encoded earlier"
                first = f"line {seen[docid]}" if seen[docid] else "in a part encoded earlier"
                raise InputError(f"{corpus}: duplicate document id {docid!r} ({where}; first {first})")
            seen[docid] = line
