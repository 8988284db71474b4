"""TREC files: run files (``qid Q0 docid rank score tag``, as Pyserini writes them) and qrels
(BEIR's TSV or TREC's four columns); a hit of a run is a :class:`Hit`."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable

from ..core.atomic import atomic_file
from .collection import InputError, check_id, open_text

# the depth of a run unless asked otherwise (Pyserini's and trec_eval's 1000)
DEFAULT_K = 1000

DEFAULT_TAG = "splade-lucene"


@dataclass(frozen=True)
class Hit:
    docid: str
    score: float


def run_lines(results: dict[str, list[Hit]], *, tag: str = DEFAULT_TAG, remove_query: bool = False,
              score_format: str = ".6f") -> Iterable[str]:
    """TREC run lines as Pyserini writes them (score with 6 decimals, ranks from 1)."""
    for qid, hits in results.items():
        if remove_query:
            hits = [h for h in hits if h.docid != qid]
        for rank, hit in enumerate(hits, 1):
            yield f"{qid} Q0 {hit.docid} {rank} {hit.score:{score_format}} {tag}\n"


def write_run(results: dict[str, list[Hit]], path: str | Path, *, tag: str = DEFAULT_TAG,
              remove_query: bool = False, score_format: str = ".6f", metadata: dict | None = None) -> None:
    """The TREC run file at ``path``; ``metadata`` (how the run was made: engine, approximate
    settings, k) goes beside it as ``PATH.json``."""
    with atomic_file(path) as fh:
        fh.writelines(run_lines(results, tag=tag, remove_query=remove_query, score_format=score_format))
    if metadata is not None:
        try:
            with atomic_file(f"{path}.json") as fh:
                fh.write(json.dumps(metadata, indent=2) + "\n")
        except BaseException:
            Path(path).unlink(missing_ok=True)  # a run without its record of how it was made is not left
            raise


Qrels = dict[str, dict[str, int]]


Run = dict[str, list[tuple[str, float]]]


def _fields(path: str | Path):
    """(line number, whitespace-separated fields) of each non-blank line of a text file."""
    with open_text(path) as fh:
        for lineno, line in enumerate(fh, 1):
            parts = line.split()
            if parts:
                yield lineno, parts


def read_qrels(path: str | Path) -> Qrels:
    """Read BEIR qrels (``query-id<TAB>corpus-id<TAB>score`` with a header) or TREC qrels
    (``qid iter docid rel``). CRLF line endings are accepted."""
    qrels: Qrels = {}
    for lineno, parts in _fields(path):
        if lineno == 1 and parts[0].lower() in ("query-id", "query_id", "qid"):
            continue
        if len(parts) == 3:
            qid, docid, rel = parts
        elif len(parts) == 4:
            qid, _, docid, rel = parts
        else:
            raise InputError(f"{path}:{lineno}: expected 3 (BEIR) or 4 (TREC) columns, got {len(parts)}")
        try:
            value = int(rel)
        except ValueError:
            raise InputError(f"{path}:{lineno}: relevance {rel!r} is not an integer") from None
        qid, docid = check_id(qid, path, lineno, "query id"), check_id(docid, path, lineno, "doc id")
        qrels.setdefault(qid, {})[docid] = value
    if not qrels:
        raise InputError(f"{path}: no judgments")
    return qrels


def read_run(path: str | Path) -> Run:
    """Read a TREC run file ``qid Q0 docid rank score tag``."""
    run: Run = {}
    for lineno, parts in _fields(path):
        if len(parts) != 6:
            raise InputError(f"{path}:{lineno}: a TREC run line has 6 columns, got {len(parts)}")
        try:
            score = float(parts[4])
        except ValueError:
            raise InputError(f"{path}:{lineno}: score {parts[4]!r} is not a number") from None
        qid, docid = check_id(parts[0], path, lineno, "query id"), check_id(parts[2], path, lineno, "doc id")
        run.setdefault(qid, []).append((docid, score))
    if not run:
        raise InputError(f"{path} holds no run lines (it is empty or blank)")
    return run
