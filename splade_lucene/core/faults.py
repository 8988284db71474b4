"""Fault points: named places in the writers where the tests stop or kill a run.

``SPLADE_LUCENE_FAULT=NAME[:N][:ACTION]`` makes the N-th arrival (default 1) of this process at the
point ``NAME`` (``*``: any point) send the process a signal: ``kill`` (SIGKILL, the default: a crash
at that instant), ``term`` (SIGTERM), ``int`` (SIGINT) or ``stop`` (SIGSTOP: the process halts there
until SIGCONT, which tells a test, through ``waitpid(WUNTRACED)``, that the run has reached the point).
The variable is read once, when this module is imported; without it a fault point costs one
comparison. Only the tests set it. The points are listed in :data:`POINTS` (docs/errors.md says what
each run leaves behind when it is killed there, and that the same command then finishes the work).
"""

from __future__ import annotations

import os
import signal

from .errors import SettingError

ENVIRONMENT = "SPLADE_LUCENE_FAULT"
POINTS = {
    "encode.part": "a part file of an encoding is written, before progress.json records it",
    "encode.progress": "progress.json records a finished part",
    "publish.swap": "a finished folder (collection, index, model) is about to take its name: the old one moved aside",
    "index.running": "Anserini's indexer (a child JVM) has started and logged its first line",
    "index.built": "Anserini has written the index, before its metadata and impact table",
    "impacts.write": "the impact table's arrays are written, before the table is renamed into place",
    "blockmax.write": "the block-max engine's arrays are written, before its folder is renamed into place",
    "merge.merged": "Lucene's addIndexes has merged the shards, before the merged index is published",
    "train.checkpoint": "a checkpoint's bytes are written, before the file is renamed into place",
    "train.rotate": "a new checkpoint is in place, the previous one not yet removed",
    "train.evaluate": "the dev evaluation has encoded the dev pool, before it is indexed and searched",
    "train.step": "a training step is done (every step)",
    "search.chunk": "a batch search has answered a chunk of queries",
    "serve.request": "a server has checked a search request and holds its index, before it searches",
}
ACTIONS = {"kill": signal.SIGKILL, "term": signal.SIGTERM, "int": signal.SIGINT, "stop": signal.SIGSTOP}


def parse(spec: str | None) -> tuple[str, int, signal.Signals] | None:
    """(point, arrival, signal) of a ``NAME[:N][:ACTION]`` spec; None for no spec."""
    if not spec:
        return None
    name, *rest = spec.split(":")
    if name != "*" and name not in POINTS:
        raise SettingError(f"{ENVIRONMENT}: unknown fault point {name!r} (known: {', '.join(sorted(POINTS))})")
    count, action = 1, "kill"
    for field in rest:
        if field.isdigit() and int(field) >= 1:
            count = int(field)
        elif field in ACTIONS:
            action = field
        else:
            raise SettingError(f"{ENVIRONMENT}: {field!r} is neither a count (1, 2, ...) nor one of {sorted(ACTIONS)}")
    return name, count, ACTIONS[action]


_SPEC = parse(os.environ.get(ENVIRONMENT))
_arrivals = 0


def fault_point(name: str) -> None:
    """Mark the point ``name``; under ``SPLADE_LUCENE_FAULT`` the chosen arrival signals the process."""
    global _arrivals
    if _SPEC is None or _SPEC[0] not in (name, "*"):
        return
    assert name in POINTS, name
    _arrivals += 1
    if _arrivals == _SPEC[1]:
        os.kill(os.getpid(), _SPEC[2])
