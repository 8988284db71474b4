"""The settings of a training run, checked once and recorded in its manifest."""

from __future__ import annotations

import dataclasses
import math
import os
from dataclasses import dataclass
from typing import Literal

from ..core.errors import SettingError, SettingTypeError, SpladeLuceneError
from ..encoding.model import DEFAULT_MAX_LENGTH
from ..indexing.query_table import QUERY_MODES

NEGATIVE_SOURCES = ("bm25", "none")


PAIR_SOURCES = ("qrels", "queries-file", "pseudo")


class TrainingError(SpladeLuceneError, RuntimeError):
    """Training cannot start or cannot go on (bad data, settings, or a diverging loss)."""


@dataclass(frozen=True)
class TrainSettings:
    """Every setting of a training run (recorded in the manifest; a resumed run must match them).

    The defaults are the recommended SciFact recipe (see docs/training.md).
    """

    model: str = "splade-tiny"
    split: str = "train"
    epochs: int = 5
    max_steps: int | None = None
    batch_size: int = 16
    lr: float = 1e-4
    weight_decay: float = 0.01
    warmup_steps: int | None = None  # linear learning-rate warm-up; default: 10% of the steps
    lambda_q: float = 1e-3
    lambda_d: float = 1e-3
    lambda_warmup_steps: int | None = None  # T of lambda * min(1, t/T)^2; default: a third of the steps
    negatives: Literal["bm25", "none"] = "bm25"
    negatives_depth: int = 100  # hard negatives drawn from BM25's top N, judged documents left out
    negatives_per_query: int = 1
    max_length: int = DEFAULT_MAX_LENGTH
    query_max_length: int | None = None  # default: max_length, as encode and experiment do
    pooling: Literal["all", "no-special"] = "all"
    seed: int = 13
    dev_fraction: float = 0.1
    dev_depth: int = 30  # dev pool: the dev queries' judged documents and BM25's top N for each
    checkpoint_every: int = 25
    dev_baseline: bool = True  # also evaluate the base model on the dev pool (recorded, never kept)
    scale: float = 100.0  # quantization of the dev index, as the default pipeline's
    new_head: bool = False  # accept a checkpoint without a complete MLM head (the head then starts random)
    pairs: Literal["qrels", "queries-file", "pseudo"] = "qrels"
    queries_file: str | None = None
    device: str = "cpu"
    # inference-free queries: "idf" trains the documents against IDF-weighted query tokens, "learned"
    # also learns one query weight per vocabulary entry (from IDF, at query_lr); FLOPS on documents only
    query_mode: Literal["full", "idf", "learned"] = "full"
    query_lr: float = 5e-3
    # torch's intra-op threads; None: the CPUs this process may run on (see with_threads)
    threads: int | None = None

    def with_threads(self) -> "TrainSettings":
        """These settings with ``threads`` filled in: None becomes the CPUs this process may run on."""
        return self if self.threads is not None else dataclasses.replace(self, threads=available_cpus())

    def check(self) -> "TrainSettings":
        def need(ok: bool, message: str) -> None:
            if not ok:
                raise SettingError(message)

        need(self.epochs >= 1, f"--epochs must be at least 1, not {self.epochs}")
        need(self.max_steps is None or self.max_steps >= 1, f"--max-steps must be at least 1, not {self.max_steps}")
        need(self.batch_size >= 2, f"--batch-size must be at least 2 (in-batch negatives), not {self.batch_size}")
        need(math.isfinite(self.lr) and self.lr > 0, f"--lr must be a positive number, not {self.lr}")
        for name in ("lambda_q", "lambda_d", "weight_decay"):
            value = getattr(self, name)
            need(math.isfinite(value) and value >= 0, f"--{name.replace('_', '-')} must be >= 0, not {value}")
        need(self.negatives in NEGATIVE_SOURCES,
             f"--negatives must be one of {NEGATIVE_SOURCES}, not {self.negatives!r}")
        need(self.negatives_depth >= 1, f"--negatives-depth must be at least 1, not {self.negatives_depth}")
        need(self.negatives_per_query >= 0, f"--negatives-per-query must be >= 0, not {self.negatives_per_query}")
        need(self.max_length >= 8, f"--max-length must be at least 8, not {self.max_length}")
        need(self.query_max_length is None or self.query_max_length >= 8,
             f"--query-max-length must be at least 8, not {self.query_max_length}")
        need(self.pooling in ("all", "no-special"), f"pooling must be 'all' or 'no-special', not {self.pooling!r}")
        need(0 <= self.dev_fraction < 1, f"--dev-fraction must be in [0, 1), not {self.dev_fraction}")
        need(self.dev_depth >= 0, f"--dev-depth must be >= 0, not {self.dev_depth}")
        need(self.checkpoint_every >= 1, f"--checkpoint-every must be at least 1, not {self.checkpoint_every}")
        need(self.query_mode in QUERY_MODES, f"--query-mode must be one of {QUERY_MODES}, not {self.query_mode!r}")
        need(math.isfinite(self.query_lr) and self.query_lr > 0,
             f"--query-lr must be a positive number, not {self.query_lr}")
        need(self.threads is None or self.threads >= 1, f"--threads must be at least 1, not {self.threads}")
        need(self.pairs in PAIR_SOURCES, f"pairs must be one of {PAIR_SOURCES}, not {self.pairs!r}")
        need((self.pairs == "queries-file") == (self.queries_file is not None),
             "--queries-file names the generated queries file (and only it)")
        for name in ("warmup_steps", "lambda_warmup_steps"):
            value = getattr(self, name)
            need(value is None or value >= 0, f"--{name.replace('_', '-')} must be >= 0, not {value}")
        return self


def available_cpus() -> int:
    """The CPUs this process may run on (its affinity where the system tells it)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:
        return os.cpu_count() or 1


def make_settings(**settings) -> TrainSettings:
    """:class:`TrainSettings` from keyword settings, checked; a ``queries_file`` implies
    ``pairs="queries-file"``, and no ``threads`` means the CPUs this process may run on."""
    unknown = set(settings) - {f.name for f in dataclasses.fields(TrainSettings)}
    if unknown:
        raise SettingTypeError(f"unknown training settings {sorted(unknown)}")
    if settings.get("queries_file") is not None:
        settings.setdefault("pairs", "queries-file")
        settings["queries_file"] = str(settings["queries_file"])
    return TrainSettings(**settings).with_threads().check()
