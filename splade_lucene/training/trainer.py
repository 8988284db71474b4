"""Fine-tuning a masked LM as SPLADE: a contrastive ranking loss plus FLOPS regularisation.

The objective is naver/splade's (and sentence-transformers' ``SpladeLoss`` around
``SparseMultipleNegativesRankingLoss``): for a batch of queries, each with one judged positive and
``negatives_per_query`` hard negatives mined with BM25 (judged documents are never negatives), the
score of a query and a document is the dot product of their SPLADE vectors, and the ranking loss is
the cross-entropy of each query's positive against every document of the batch (its own negatives
and everyone else's: in-batch negatives; a batch document judged relevant to the query is masked
out, not counted as a negative). The FLOPS term ``sum_j (mean_i w_ij)^2`` over the batch's query
vectors and document vectors, weighted by ``lambda_q`` and ``lambda_d``, pushes towards sparse
vectors; both weights rise quadratically, ``lambda_t = lambda * min(1, t / T)^2``.

The vectors trained are the encoder's: the same tokenization (:func:`splade_lucene.encoding.model.tokenize`),
the same pooling over real positions, special tokens removed from the output, the same max lengths.

Training pairs come from a BEIR folder's ``qrels/<split>.tsv`` (queries from ``queries.jsonl``), from
a file of generated queries (``{"_id": doc id, "query": text}`` lines), or from the corpus itself
(pseudo-queries: see :func:`pseudo_query_pairs`). A dev part is carved from those queries, fixed by
the seed, and evaluated at the end of every epoch through this package's own encode, index and
search path on a dev pool of documents; the best evaluation's weights are kept.

State lives in a work folder beside the output (``.NAME.training``): the mined negatives, a
checkpoint every ``checkpoint_every`` steps (one file, ``checkpoint-STEP.pt``, holding model,
optimiser, step, random state and history, written atomically; the newest two are kept), the best
weights so far. Every random choice is a function of (seed, step), and the thread count is pinned
(``threads``, recorded; a resume with another count is refused, since the floating-point sums
depend on it), so a killed run started again with the same command resumes from its last checkpoint
and ends with the same weights, byte for byte, as a run never interrupted (on a CPU). A checkpoint
that cannot be read is skipped, with a warning, for the previous one. The output folder appears only
when training is complete.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal, Sequence

import numpy as np

from ..core.atomic import atomic_file, check_output_path, move_into_place, output_lock, write_text
from ..core.errors import NotFoundError, OutputExistsError, SettingError, SettingTypeError, SpladeLuceneError, require
from ..core.faults import fault_point
from ..encoding.local import encode_corpus
from ..encoding.model import (
    DEFAULT_MAX_LENGTH,
    SpladeEncoder,
    has_words,
    load_masked_lm,
    model_weights_sha256,
    resolve_model,
    tokenize,
)
from ..evaluation.metrics import evaluate, read_qrels, read_run
from ..formats.collection import InputError, open_text, parse_line, read_corpus, read_queries, sha256_file
from ..indexing.build import build_index, read_metadata
from ..indexing.lucene import package_versions
from ..indexing.query_table import MODEL_TABLE_FILE, QUERY_MODES, corpus_idf, load_table, save_table, sha256_table
from ..search.bm25 import BM25Searcher, build_bm25_index
from ..search.searcher import QueryEncoder, Searcher, write_run

MANIFEST_FILE = "training.json"
CHECKPOINTS_KEPT = 2  # the newest checkpoint and the previous good one
STATE_FILE = "state.json"
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


@dataclass
class TrainingData:
    """Queries with their positives: ``groups`` keep a document's generated queries together when
    the dev part is carved (no dev document is seen in training)."""

    corpus: dict[str, str]
    queries: dict[str, str]
    positives: dict[str, list[str]]
    judged: dict[str, set[str]]
    groups: dict[str, str]
    files: dict[str, Path]
    dropped: dict[str, int] = field(default_factory=dict)
    # the text a query's positive is trained with, where it is not the document's own (pseudo-queries)
    positive_texts: dict[str, str] = field(default_factory=dict)

    def add(self, qid: str, text: str, positives: list[str], judged: set[str], group: str) -> None:
        self.queries[qid], self.positives[qid], self.judged[qid], self.groups[qid] = text, positives, judged, group

    def drop(self, reason: str) -> None:
        self.dropped[reason] = self.dropped.get(reason, 0) + 1


def _corpus(folder: Path) -> tuple[Path, dict[str, str], dict[str, str]]:
    corpus_file = next((folder / n for n in ("corpus.jsonl", "corpus.jsonl.gz") if (folder / n).is_file()), None)
    if corpus_file is None:
        raise TrainingError(f"{folder} has no corpus.jsonl: training needs a BEIR-layout folder")
    texts, titles = {}, {}
    for doc in read_corpus(corpus_file):
        texts[doc.id] = doc.text
        titles[doc.id] = doc.title
    if not texts:
        raise TrainingError(f"{corpus_file} holds no documents (it is empty or blank)")
    return corpus_file, texts, titles


def qrels_pairs(folder: Path, split: str) -> TrainingData:
    """(query, positive) pairs from ``qrels/<split>.tsv``: judgments >= 1 are positives, and every
    judged document of a query (any grade) is kept out of its negatives."""
    qrels_file = folder / "qrels" / f"{split}.tsv"
    if not qrels_file.is_file():
        have = sorted(p.stem for p in (folder / "qrels").glob("*.tsv")) if (folder / "qrels").is_dir() else []
        raise TrainingError(f"{folder} has no training split {qrels_file.name} (qrels splits there: "
                            f"{', '.join(have) or 'none'}); use --split, --queries-file or --pseudo-queries")
    if split == "test":
        raise TrainingError(f"refusing to train on {qrels_file}: the test split is for evaluation only")
    corpus_file, corpus, _ = _corpus(folder)
    queries_file = next((folder / n for n in ("queries.jsonl", "queries.jsonl.gz", "queries.tsv")
                         if (folder / n).is_file()), None)
    if queries_file is None:
        raise TrainingError(f"{folder} has no queries.jsonl")
    texts = dict(read_queries(queries_file))
    qrels = read_qrels(qrels_file)
    for qid, judged in qrels.items():
        if qid not in texts:
            raise TrainingError(f"{qrels_file}: query {qid!r} is not in {queries_file}")
        unknown = next((d for d in judged if d not in corpus), None)
        if unknown is not None:
            raise TrainingError(f"{qrels_file}: query {qid!r} judges document {unknown!r}, "
                                f"which is not in {corpus_file}")
    data = TrainingData(corpus, {}, {}, {}, {}, {"corpus": corpus_file, "queries": queries_file, "qrels": qrels_file})
    for qid, judged in qrels.items():
        positives = [d for d, rel in judged.items() if rel >= 1 and has_words(corpus[d])]
        if positives and has_words(texts[qid]):
            data.add(qid, texts[qid], positives, set(judged), qid)
        else:
            data.drop("queries without a positive or without words")
    return data


def generated_query_pairs(folder: Path, queries_file: str | Path) -> TrainingData:
    """(query, positive) pairs from generated queries: lines ``{"_id": doc id, "query": text}``
    (other fields ignored), ``.gz`` read as such. The document is the query's only judged one."""
    queries_file = Path(queries_file)
    if not queries_file.is_file():
        raise TrainingError(f"no such queries file: {queries_file}")
    corpus_file, corpus, _ = _corpus(folder)
    data = TrainingData(corpus, {}, {}, {}, {}, {"corpus": corpus_file, "queries_file": queries_file})
    with open_text(queries_file) as fh:
        for lineno, line in enumerate(fh, 1):
            obj = parse_line(line.encode("utf-8"), queries_file, lineno)
            if obj is None:
                continue
            docid, text = obj.get("_id"), obj.get("query")
            if not isinstance(docid, (str, int)) or not isinstance(text, str):
                raise InputError(f"{queries_file}:{lineno}: expected {{\"_id\": doc id, \"query\": text}}")
            docid = str(docid)
            if docid not in corpus:
                raise InputError(f"{queries_file}:{lineno}: document {docid!r} is not in {corpus_file}")
            if has_words(text) and has_words(corpus[docid]):
                data.add(f"gen-{lineno}", text, [docid], {docid}, docid)
            else:
                data.drop("pairs without words")
    if not data.queries:
        raise TrainingError(f"{queries_file} holds no usable (query, document) pair")
    return data


# the layout of a work folder (pairs, dev pool, checkpoint): a folder of another version is not resumed
WORK_VERSION = 4
PSEUDO_MIN_WORDS = 8  # words a pseudo-query's positive keeps once its query is taken out


def pseudo_query_pairs(folder: Path, seed: int) -> TrainingData:
    """(query, positive) pairs made from the corpus alone, for a collection without training queries.

    A document's title is its query where it has one: a title is a short statement of what the
    document is about, which is what a query is. A document without a title gets one of its own
    sentences, drawn with the seed (the inverse cloze task of Lee et al., 2019): a sentence of at
    least four words, most of them words rather than numbers or codes; with no such sentence, its
    first 16 words. The positive is the document with every occurrence of the query taken out, so
    that the pair is not solved by string matching; negatives are whole documents. A document left
    with fewer than ``PSEUDO_MIN_WORDS`` words gives no pair (it is still a negative).
    """
    import re

    corpus_file, corpus, titles = _corpus(folder)
    rng = np.random.default_rng([seed, 7])
    data = TrainingData(corpus, {}, {}, {}, {}, {"corpus": corpus_file})
    for docid, text in corpus.items():
        query = titles.get(docid, "").strip()
        if not query:
            sentences = [x.strip() for x in re.split(r"(?<=[.!?])\s+", text) if _wordy(x)]
            query = sentences[int(rng.integers(len(sentences)))] if sentences else " ".join(text.split()[:16])
        # the query is taken out of its positive (the inverse cloze task's masking): a document that
        # contains its query verbatim is found by string matching, the ranking loss is ~0 from the
        # first step, and the FLOPS term alone then drives the weights to zero
        rest = " ".join(text.replace(query, " ").split()) if query else ""
        if not has_words(query) or _words(rest) < PSEUDO_MIN_WORDS:
            # a title-only record (its rest is an author, a date, codes) would teach the model to
            # match a title to nothing; it stays in the corpus as a negative
            data.drop(f"documents with fewer than {PSEUDO_MIN_WORDS} words besides the pseudo-query")
            continue
        qid = f"pseudo-{len(data.queries)}"
        data.add(qid, query, [docid], {docid}, docid)
        data.positive_texts[qid] = rest
    if not data.queries:
        raise TrainingError(f"{corpus_file}: no document gives a pseudo-query (every text is empty)")
    return data


def _words(text: str) -> int:
    """The tokens with at least two letters (words rather than numbers or codes)."""
    return sum(1 for t in text.split() if sum(c.isalpha() for c in t) >= 2)


def _wordy(sentence: str) -> bool:
    """At least four words with letters, and they are most of the sentence's tokens."""
    words = _words(sentence)
    return words >= 4 and words >= 0.6 * len(sentence.split())


def carve_dev(data: TrainingData, fraction: float, seed: int) -> tuple[list[str], list[str]]:
    """(train qids, dev qids): a ``fraction`` of the groups (queries, or documents for generated
    queries), drawn with the seed; both lists in the data's order."""
    groups = sorted(set(data.groups.values()))
    n_dev = int(round(fraction * len(groups)))
    chosen = set(np.random.default_rng([seed, 1]).permutation(len(groups))[:n_dev].tolist())
    dev_groups = {g for i, g in enumerate(groups) if i in chosen}
    train = [q for q in data.queries if data.groups[q] not in dev_groups]
    dev = [q for q in data.queries if data.groups[q] in dev_groups]
    return train, dev


def lambda_at(step: int, lam: float, warmup: int) -> float:
    """The FLOPS weight at step ``step`` (from 0): ``lam * min(1, (step + 1) / warmup)^2``."""
    if warmup <= 0:
        return lam
    return lam * min(1.0, (step + 1) / warmup) ** 2


def lr_at(step: int, lr: float, warmup: int, total: int) -> float:
    """Linear warm-up over ``warmup`` steps, then linear decay to 0 at ``total``."""
    if warmup > 0 and step < warmup:
        return lr * (step + 1) / warmup
    return lr * max(0.0, (total - step) / max(1, total - warmup))


def flops(vectors):
    """The FLOPS regulariser: sum over terms of the squared mean weight over the batch."""
    return (vectors.abs().mean(dim=0) ** 2).sum()


class SpladeModel:
    """A masked LM as a differentiable SPLADE encoder, the same vectors as :class:`SpladeEncoder`."""

    def __init__(self, path: str, *, pooling: str = "all", new_head: bool = False, device: str = "cpu"):
        import torch

        self.path = path
        self.model, self.tokenizer = load_masked_lm(path, allow_new_head=new_head)
        self.model.to(device)
        self.device = torch.device(device)
        self.pooling = pooling
        keep = torch.ones(int(self.model.get_output_embeddings().weight.shape[0]), dtype=torch.float32)
        keep[sorted(set(self.tokenizer.all_special_ids))] = 0
        self.keep = keep.to(self.device)
        body = getattr(self.model, getattr(self.model, "base_model_prefix", ""), None)
        pred = getattr(getattr(self.model, "cls", None), "predictions", None)
        decoder = getattr(pred, "decoder", None)
        bias = None
        if decoder is not None:
            bias = decoder.bias if decoder.bias is not None else getattr(pred, "bias", None)
        # BERT-like heads (transform, then decoder): the memory-lean pooled head of splade_head
        self._fused = (body, pred.transform, decoder, bias) if body is not None and bias is not None \
            and hasattr(pred, "transform") and isinstance(decoder, torch.nn.Linear) else None

    def vectors(self, texts: Sequence[str], max_length: int):
        """(texts, V) SPLADE weights, differentiable."""
        import torch

        from ..encoding.head import splade_pool  # imports torch: deliberately lazy, as every torch import here

        batch = tokenize(self.tokenizer, texts, max_length).to(self.device)
        mask = batch["attention_mask"].bool()
        if self.pooling == "no-special":
            mask &= ~batch["special_tokens_mask"].bool()
        if self._fused is not None:
            body, transform, decoder, bias = self._fused
            hidden = transform(body(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"])[0])
            pooled = splade_pool(hidden, mask, decoder.weight, bias)
        else:
            logits = self.model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
            pooled = torch.log1p(torch.relu(logits.masked_fill(~mask.unsqueeze(-1), float("-inf")).amax(dim=1)))
        return pooled * self.keep

    def save(self, folder: Path) -> None:
        """A Hugging Face checkpoint folder (config, model.safetensors, tokenizer files)."""
        folder.mkdir(parents=True, exist_ok=True)
        self.model.save_pretrained(folder, safe_serialization=True)
        self.tokenizer.save_pretrained(folder)


@dataclass
class TrainResult:
    output: Path
    manifest: dict
    seconds: float


def _write_json(path: Path, obj) -> None:
    write_text(path, json.dumps(obj, indent=1, sort_keys=True) + "\n")


class Trainer:
    """One training run; :func:`train` is the usual door."""

    def __init__(self, dataset: str | Path, output: str | Path, settings: TrainSettings, *,
                 overwrite: bool = False, progress: bool = True, plot: str | Path | None = None):
        self.settings = settings.with_threads().check()
        self.folder = Path(dataset)
        if not self.folder.is_dir():
            raise NotFoundError(f"dataset folder {self.folder} does not exist")
        self.output = Path(output)
        if self.output.exists() and not overwrite and (self.output.is_file() or any(self.output.iterdir())):
            what = "a model" if (self.output / "config.json").exists() else "files"
            raise OutputExistsError(f"{self.output} already holds {what}; pass --overwrite to replace it "
                                  "or choose another --output")
        self.work = self.output.parent / f".{self.output.name}.training"
        self.progress = progress
        self.plot = check_output_path(plot, "file") if plot is not None else None
        self.base_name, self.base_path = resolve_model(settings.model)

    # -- data -------------------------------------------------------------------------------------
    def load_data(self) -> None:
        s = self.settings
        if s.pairs == "queries-file":
            self.data = generated_query_pairs(self.folder, s.queries_file)
        elif s.pairs == "pseudo":
            self.data = pseudo_query_pairs(self.folder, s.seed)
        else:
            self.data = qrels_pairs(self.folder, s.split)
        self.train_qids, self.dev_qids = carve_dev(self.data, s.dev_fraction, s.seed)
        if len(self.train_qids) < s.batch_size:
            raise TrainingError(f"only {len(self.train_qids)} training queries after carving the dev part "
                                f"({len(self.dev_qids)}), fewer than --batch-size {s.batch_size}: "
                                "lower --batch-size or --dev-fraction")
        self.steps_per_epoch = len(self.train_qids) // s.batch_size
        total = s.epochs * self.steps_per_epoch
        self.total_steps = min(total, s.max_steps) if s.max_steps is not None else total
        self.warmup = s.warmup_steps if s.warmup_steps is not None else self.total_steps // 10
        self.lambda_warmup = s.lambda_warmup_steps if s.lambda_warmup_steps is not None else self.total_steps // 3
        self.fingerprint = {
            "work_version": WORK_VERSION,
            "settings": dataclasses.asdict(s),
            "base_model_sha256": model_weights_sha256(self.base_path),
            "dataset": {name: sha256_file(path) for name, path in sorted(self.data.files.items())},
        }

    def _mine(self) -> dict[str, list[str]]:
        """BM25's top documents for every train and dev query (judged ones kept: dev pools use them),
        cached in the work folder."""
        cache = self.work / "bm25-hits.json"
        if cache.is_file():
            return json.loads(cache.read_text())
        depth = max(self.settings.negatives_depth + 20, self.settings.dev_depth)
        index = self.work / "bm25-index"
        build_bm25_index(self.data.files["corpus"], index, overwrite=True)
        searcher = BM25Searcher(index)
        # only the queries the run will see: --max-steps may stop long before an epoch ends
        used = set(self.dev_qids)
        if self.total_steps < self.steps_per_epoch:
            for step in range(self.total_steps):
                used.update(self._batch_queries(step))
        else:
            used.update(self.train_qids)
        queries = [(q, self.data.queries[q]) for q in self.train_qids + self.dev_qids if q in used]
        found: dict[str, list[str]] = {}
        try:
            # in slices: each hit crosses JNI as an object, so a whole set of generated queries at
            # once (25,844 x 120 hits for ArguAna) would hold millions of them
            for start in range(0, len(queries), 1000):
                chunk = queries[start:start + 1000]
                hits = searcher.batch_search(chunk, k=depth, threads=max(1, min(4, os.cpu_count() or 1)))
                found.update({q: [h.docid for h in hits.get(q, [])] for q, _ in chunk})
        finally:
            searcher.close()
        _write_json(cache, found)
        shutil.rmtree(index, ignore_errors=True)
        return found

    def prepare(self) -> None:
        """The work folder: kept where an interrupted run had the same settings and data."""
        state = self.work / STATE_FILE
        if self.work.exists():
            try:
                old = json.loads(state.read_text())["fingerprint"]
            except (OSError, ValueError, KeyError):
                old = None
            threads = (old or {}).get("settings", {}).get("threads"), self.settings.threads
            if old is not None and threads[0] != threads[1] and \
                    {**old, "settings": {**old["settings"], "threads": threads[1]}} == self.fingerprint:
                raise TrainingError(
                    f"{self.work} holds an interrupted run of this training with --threads {threads[0]}, and this "
                    f"run asks for --threads {threads[1]}: the weights depend on the thread count, so resume with "
                    f"--threads {threads[0]}, or remove {self.work} to start again")
            if old != self.fingerprint:
                shutil.rmtree(self.work)
        self.work.mkdir(parents=True, exist_ok=True)
        if not state.is_file():
            _write_json(state, {"fingerprint": self.fingerprint})
        s = self.settings
        self.bm25 = self._mine() if s.negatives == "bm25" or s.dev_depth else {}
        self.negatives = {}
        if s.negatives == "bm25":
            for q in self.train_qids:
                judged = self.data.judged[q]
                self.negatives[q] = [d for d in self.bm25.get(q, ()) if d not in judged
                                     and has_words(self.data.corpus[d])][:s.negatives_depth]
        self._write_dev_pool()

    def _write_dev_pool(self) -> None:
        """The dev documents (the dev queries' judged ones and BM25's top ``dev_depth`` for each) as
        a corpus file, with the dev queries and qrels."""
        self.dev = self.work / "dev"
        if not self.dev_qids or (self.dev / "qrels.tsv").is_file():
            return
        tmp = self.work / "dev.tmp"
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir()
        pool: dict[str, None] = {}
        for q in self.dev_qids:
            for d in [*sorted(self.data.judged[q]), *self.bm25.get(q, [])[:self.settings.dev_depth]]:
                pool.setdefault(d, None)
        # a pseudo-query's document is in the pool as it is trained on, without its query: with the
        # query left in, every model finds it by string matching and the dev score says nothing
        masked = {self.data.positives[q][0]: self.data.positive_texts[q]
                  for q in self.dev_qids if q in self.data.positive_texts}
        with open(tmp / "corpus.jsonl", "w", encoding="utf-8") as fh:
            for d in pool:
                fh.write(json.dumps({"_id": d, "text": masked.get(d, self.data.corpus[d])}) + "\n")
        with open(tmp / "queries.tsv", "w", encoding="utf-8") as fh:
            for q in self.dev_qids:
                fh.write(f"{q}\t{' '.join(self.data.queries[q].split())}\n")
        with open(tmp / "qrels.tsv", "w", encoding="utf-8") as fh:
            for q in self.dev_qids:
                for d in self.data.positives[q]:
                    fh.write(f"{q}\t0\t{d}\t1\n")
        move_into_place(tmp, self.dev)

    # -- the loop ---------------------------------------------------------------------------------
    def _batch_queries(self, step: int) -> list[str]:
        """The qids of a step's batch: the seed's permutation of the training queries for its epoch."""
        s = self.settings
        epoch, index = divmod(step, self.steps_per_epoch)
        order = np.random.default_rng([s.seed, 2, epoch]).permutation(len(self.train_qids))
        return [self.train_qids[i] for i in order[index * s.batch_size:(index + 1) * s.batch_size]]

    def _batch(self, step: int) -> tuple[list[str], list[str], list[str]]:
        """(qids, their positives, the batch's documents: positives first, then negatives) of a step;
        a function of (seed, step) only."""
        s = self.settings
        qids = self._batch_queries(step)
        rng = np.random.default_rng([s.seed, 3, step])
        positives = [self.data.positives[q][int(rng.integers(len(self.data.positives[q])))] for q in qids]
        docs = list(positives)
        if s.negatives == "bm25" and s.negatives_per_query:
            for q in qids:
                pool = self.negatives[q]
                if pool:
                    picks = rng.choice(len(pool), size=min(s.negatives_per_query, len(pool)), replace=False)
                    docs.extend(pool[int(i)] for i in sorted(picks.tolist()))
        return qids, positives, docs

    def _loss(self, model: SpladeModel, step: int):
        import torch

        s = self.settings
        qids, positives, docs = self._batch(step)
        torch.manual_seed(s.seed * 1_000_003 + step)  # dropout: a function of the step
        if s.query_mode == "full":
            q = model.vectors([self.data.queries[x] for x in qids], s.query_max_length or s.max_length)
        else:
            q = self._table_queries(qids, model.device)
        texts = [self.data.positive_texts.get(q, self.data.corpus[x]) for q, x in zip(qids, docs)]
        texts += [self.data.corpus[x] for x in docs[len(qids):]]
        d = model.vectors(texts, s.max_length)
        scores = q @ d.t()
        # a batch document judged for the query (other than its target) is no negative of it
        judged = torch.tensor([[doc in self.data.judged[qid] and j != i for j, doc in enumerate(docs)]
                               for i, qid in enumerate(qids)], device=scores.device)
        scores = scores.masked_fill(judged, float("-inf"))
        target = torch.arange(len(qids), device=scores.device)
        rank = torch.nn.functional.cross_entropy(scores, target)
        lq, ld = lambda_at(step, s.lambda_q, self.lambda_warmup), lambda_at(step, s.lambda_d, self.lambda_warmup)
        fq, fd = flops(q), flops(d)
        # inference-free: the query side has no encoder to sparsify (its weights come from the table)
        loss = rank + ld * fd + (lq * fq if s.query_mode == "full" else 0)
        log = {"step": step + 1, "loss": loss.item(), "rank": rank.item(), "flops_q": fq.item(), "flops_d": fd.item(),
               "lambda_q": lq, "lambda_d": ld, "nonzero_q": float((q > 0).sum(dim=1).float().mean()),
               "nonzero_d": float((d > 0).sum(dim=1).float().mean())}
        return loss, log

    def _table_queries(self, qids: list[str], device):
        """(queries, V) weights of inference-free queries: each distinct token's table weight
        (``learned``: relu of the trained table, so a weight pushed below 0 drops the token)."""
        import torch

        rows = torch.cat([torch.full((len(self._query_ids[q]),), i, dtype=torch.long) for i, q in enumerate(qids)])
        cols = torch.cat([self._query_ids[q] for q in qids])
        table = torch.relu(self.query_table)
        q = torch.zeros(len(qids), len(table), device=device, dtype=table.dtype)
        return q.index_put((rows.to(device), cols.to(device)), table[cols.to(device)])

    def _setup_query_table(self, model: SpladeModel):
        """The inference-free query side: IDF of the training corpus's tokens (the table ``idf``
        trains against and ``learned`` starts from), and each query's distinct token ids."""
        import torch

        s = self.settings
        vocab = int(model.model.get_output_embeddings().weight.shape[0])
        init = corpus_idf(model.tokenizer, list(self.data.corpus.values()), vocab, s.max_length)
        special = torch.tensor(sorted(set(model.tokenizer.all_special_ids)), dtype=torch.long)
        ids = model.tokenizer([self.data.queries[q] for q in self.data.queries], add_special_tokens=False,
                              truncation=True, max_length=s.query_max_length or s.max_length)["input_ids"]
        self._query_ids = {}
        for q, row in zip(self.data.queries, ids):
            u = torch.unique(torch.tensor(row, dtype=torch.long))
            self._query_ids[q] = u[~torch.isin(u, special)]
        # IDF divided by its mean over the training queries' tokens: a query token weighs about 1, as
        # the model's own query weights do. A ranking does not change with a query's scale, but the
        # softmax of the ranking loss does: raw IDF (2 to 9) saturates it, and the FLOPS term then
        # wins (measured on SciFact dev: 0.6106 after 2 epochs unscaled, documents down to 93 terms)
        used = torch.cat([self._query_ids[q] for q in self.train_qids])
        self.query_table_scale = float(torch.tensor(init)[used].mean())
        self.query_table = torch.tensor(init / self.query_table_scale, device=model.device)
        if s.query_mode == "learned":
            self.query_table = torch.nn.Parameter(self.query_table)

    def _save_table(self, folder: Path) -> None:
        import torch

        if self.settings.query_mode == "learned":
            save_table(torch.relu(self.query_table.detach()).cpu().numpy(), folder / MODEL_TABLE_FILE)

    def _checkpoints(self) -> list[Path]:
        """The work folder's checkpoint files, newest first."""
        return sorted(self.work.glob("checkpoint-*.pt"), reverse=True)

    def _save_checkpoint(self, model: SpladeModel, optimizer, step: int, history: dict) -> None:
        """One file holds all a resume needs (model, optimiser, step, random state, history), written
        beside its name and renamed into place; then all but the newest ``CHECKPOINTS_KEPT`` go."""
        import torch

        state = {"model": model.model.state_dict(), "optimizer": optimizer.state_dict(), "step": step,
                 "rng": torch.get_rng_state(), "history": json.dumps(history)}
        if self.settings.query_mode == "learned":
            state["query_table"] = self.query_table.detach()
        with atomic_file(self.work / f"checkpoint-{step:07d}.pt", "wb") as fh:
            torch.save(state, fh)
            fh.flush()
            fault_point("train.checkpoint")
        fault_point("train.rotate")
        for old in self._checkpoints()[CHECKPOINTS_KEPT:]:
            old.unlink()
        # best models: each improves on the one before, so the two kept checkpoints' histories name at
        # most the two newest up to this step; others (and any of a later step, left by a killed run) go
        bests = sorted((f for f in self.work.glob("best-*") if f.is_dir()), key=_step_of, reverse=True)
        keep = [f for f in bests if _step_of(f) <= step][:CHECKPOINTS_KEPT]
        for folder in bests:
            if folder not in keep:
                shutil.rmtree(folder, ignore_errors=True)

    def _load_checkpoint(self, model: SpladeModel, optimizer) -> tuple[int, dict]:
        """(step, history) of the newest checkpoint that can be read, loaded into the model and the
        optimiser; one that cannot (cut short, damaged) is skipped for the previous one, with a warning."""
        import pickle
        import warnings

        import torch

        checkpoints = self._checkpoints()
        for path in checkpoints:
            try:
                state = torch.load(path, map_location=model.device, weights_only=True)
                history = json.loads(state["history"])
                if state["step"] != _step_of(path):
                    raise ValueError(f"it holds step {state['step']}")
                if history.get("best") and not (self.work / f"best-{history['best']['step']:07d}").is_dir():
                    raise ValueError(f"its best model (step {history['best']['step']}) is gone")
                model.model.load_state_dict(state["model"])
                if "query_table" in state:
                    with torch.no_grad():
                        self.query_table.copy_(state["query_table"])
                optimizer.load_state_dict(state["optimizer"])
                torch.set_rng_state(state["rng"])
            except (OSError, EOFError, RuntimeError, ValueError, KeyError, TypeError, pickle.UnpicklingError) as exc:
                warnings.warn(f"{path} cannot be read ({type(exc).__name__}: {str(exc).splitlines()[0][:200]}); "
                              "trying the checkpoint before it", stacklevel=2)
                continue
            return int(state["step"]), history
        if checkpoints:
            warnings.warn(f"no checkpoint in {self.work} can be read: training starts again from step 0",
                          stacklevel=2)
        return 0, {"steps": [], "dev": [], "best": None}

    def _evaluate(self, model: SpladeModel, step: int) -> dict:
        """Dev metrics of the current weights through encode, index and search, as `experiment` runs."""

        s = self.settings
        folder = self.work / "eval"
        shutil.rmtree(folder, ignore_errors=True)
        model.model.eval()
        model.save(folder / "model")
        self._save_table(folder / "model")
        encoder = SpladeEncoder(str(folder / "model"), max_length=s.max_length, pooling=s.pooling, device=s.device)
        encode_corpus(self.dev / "corpus.jsonl", folder / "collection", encoder=encoder, scale=s.scale,
                      query_max_length=s.query_max_length, progress=False)
        fault_point("train.evaluate")
        build_index(folder / "collection", folder / "index", quiet=True, query_mode=s.query_mode)
        queries = read_queries(self.dev / "queries.tsv")
        if s.query_mode == "full":
            query_encoder = QueryEncoder(encoder=encoder, scale=s.scale,
                                         max_length=s.query_max_length or s.max_length)
        else:
            query_encoder = QueryEncoder.from_index(folder / "index")
        with Searcher(folder / "index", query_encoder) as searcher:
            results = searcher.batch_search(queries, k=100)
            encoded = query_encoder.encode_batch([t for _, t in queries])
        write_run(results, folder / "run.trec", remove_query=True)
        metrics = evaluate(read_qrels(self.dev / "qrels.tsv"), read_run(folder / "run.trec"), remove_query=True,
                           warn=False).metrics
        stats = read_metadata(folder / "index")["index_stats"]
        model.model.train()
        return {"step": step, "epoch": step / self.steps_per_epoch, "nDCG@10": metrics["nDCG@10"],
                "RR@10": metrics["RR@10"], "R@100": metrics["R@100"],
                "mean_terms_per_document": stats["postings"] / stats["documents"],
                "mean_terms_per_query": sum(len(q) for q in encoded) / max(1, len(encoded))}

    def _keep_best(self, record: dict, history: dict) -> None:
        best = history.get("best")
        if best is None or record["nDCG@10"] > best["nDCG@10"]:
            tmp = self.work / "best.tmp"
            shutil.rmtree(tmp, ignore_errors=True)
            shutil.copytree(self.work / "eval" / "model", tmp)
            # by step: the checkpoint's history names its best model, whichever evaluation came later
            move_into_place(tmp, self.work / f"best-{record['step']:07d}")
            history["best"] = record

    def run(self) -> TrainResult:
        import torch

        start = time.perf_counter()
        self.load_data()
        self.prepare()
        threads = torch.get_num_threads()
        torch.set_num_threads(self.settings.threads)
        try:
            return self._run(start)
        finally:
            torch.set_num_threads(threads)

    def _run(self, start: float) -> TrainResult:
        import torch
        from tqdm import tqdm

        s = self.settings
        torch.manual_seed(s.seed)
        model = SpladeModel(self.base_path, pooling=s.pooling, new_head=s.new_head, device=s.device)
        model.model.train()
        decay = [p for n, p in model.model.named_parameters() if p.requires_grad and p.ndim >= 2]
        no_decay = [p for n, p in model.model.named_parameters() if p.requires_grad and p.ndim < 2]
        groups = [{"params": decay, "weight_decay": s.weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
        if s.query_mode != "full":
            self._setup_query_table(model)
        if s.query_mode == "learned":
            groups.append({"params": [self.query_table], "weight_decay": 0.0, "lr": s.query_lr, "fixed_lr": True})
        optimizer = torch.optim.AdamW(groups, lr=s.lr, foreach=False)
        step, history = self._load_checkpoint(model, optimizer)
        history.setdefault("seconds", 0.0)
        if step == 0 and self.dev_qids and s.dev_baseline:
            history["base"] = self._evaluate(model, 0)  # the base model on the same dev pool, for reference
            if self.progress:
                tqdm.write(f"base model: dev nDCG@10 {history['base']['nDCG@10']:.4f}, "
                           f"{history['base']['mean_terms_per_document']:.0f} terms/doc")
        resumed = step
        eval_steps = {e * self.steps_per_epoch for e in range(1, s.epochs + 1)} | {self.total_steps}
        bar = tqdm(total=self.total_steps, initial=step, desc="train", unit="step", disable=not self.progress)
        last_good = step
        session = time.perf_counter()
        try:
            while step < self.total_steps:
                for group in optimizer.param_groups:
                    base = s.query_lr if group.get("fixed_lr") else s.lr
                    group["lr"] = lr_at(step, base, self.warmup, self.total_steps)
                loss, log = self._loss(model, step)
                if not math.isfinite(log["loss"]):
                    raise TrainingError(
                        f"the loss is {log['loss']} at step {step + 1} (ranking {log['rank']:.4g}, FLOPS q "
                        f"{log['flops_q']:.4g} d {log['flops_d']:.4g}): training stopped. The last good "
                        f"checkpoint (step {last_good}) is kept in {self.work}; nothing was written to "
                        f"{self.output}. Lower --lr (now {s.lr:g}) or the lambdas")
                loss.backward()
                torch.nn.utils.clip_grad_norm_(model.model.parameters(), 1.0)
                optimizer.step()
                optimizer.zero_grad(set_to_none=True)
                log["lr"] = optimizer.param_groups[0]["lr"]
                history["steps"].append(log)
                step += 1
                fault_point("train.step")
                bar.update(1)
                bar.set_postfix(loss=f"{log['loss']:.3f}", rank=f"{log['rank']:.3f}", nz_d=f"{log['nonzero_d']:.0f}")
                if step in eval_steps and self.dev_qids:
                    record = self._evaluate(model, step)
                    history["dev"].append(record)
                    self._keep_best(record, history)
                    bar.write(f"step {step}: dev nDCG@10 {record['nDCG@10']:.4f}, "
                              f"{record['mean_terms_per_document']:.0f} terms/doc, "
                              f"{record['mean_terms_per_query']:.0f} terms/query")
                if step % s.checkpoint_every == 0 or step in eval_steps:
                    history["seconds"] += time.perf_counter() - session
                    session = time.perf_counter()
                    self._save_checkpoint(model, optimizer, step, history)
                    last_good = step
        finally:
            bar.close()
        history["seconds"] += time.perf_counter() - session
        return self._publish(model, history, resumed, time.perf_counter() - start)

    def _publish(self, model: SpladeModel, history: dict, resumed: int, seconds: float) -> TrainResult:

        tmp = self.output.parent / f".{self.output.name}.writing"
        shutil.rmtree(tmp, ignore_errors=True)
        if history.get("best") is not None:
            shutil.copytree(self.work / f"best-{history['best']['step']:07d}", tmp)
            kept = {"rule": "best dev nDCG@10", **history["best"]}
        else:
            model.save(tmp)
            self._save_table(tmp)
            kept = {"rule": "last step (no dev part)", "step": self.total_steps}
        s = self.settings
        manifest = {
            "base_model": {"name": self.base_name, "path": self.base_path,
                           "sha256": self.fingerprint["base_model_sha256"]},
            "model_sha256": model_weights_sha256(tmp),
            "query_table_sha256": sha256_table(load_table(tmp / MODEL_TABLE_FILE))
            if (tmp / MODEL_TABLE_FILE).is_file() else None,
            # inference-free training: the training queries' IDF was divided by this (see _setup_query_table)
            "query_table_scale": getattr(self, "query_table_scale", None),
            "dataset": {"folder": str(self.folder), "pairs": s.pairs,
                        "files": {name: {"path": str(path), "sha256": self.fingerprint["dataset"][name]}
                                  for name, path in sorted(self.data.files.items())},
                        "dropped": self.data.dropped},
            "settings": dataclasses.asdict(s),
            "derived": {"steps": self.total_steps, "steps_per_epoch": self.steps_per_epoch,
                        "warmup_steps": self.warmup, "lambda_warmup_steps": self.lambda_warmup},
            "train_queries": len(self.train_qids),
            "dev_queries": self.dev_qids,
            "dev_pool_documents": sum(1 for _ in open(self.dev / "corpus.jsonl")) if self.dev_qids else 0,
            "kept": kept,
            "dev_base": history.get("base"),
            "dev": history["dev"],
            "steps": history["steps"],
            "resumed_from_step": resumed or None,
            "seconds": {"training": history["seconds"], "this_run": seconds},
            "versions": package_versions(),
        }
        _write_json(tmp / MANIFEST_FILE, manifest)
        for path in tmp.iterdir():
            path.chmod(0o644)  # save_pretrained may write the weights owner-only
        if self.plot is not None:
            plot_training(manifest, self.plot)
        self.output.parent.mkdir(parents=True, exist_ok=True)
        move_into_place(tmp, self.output)
        shutil.rmtree(self.work, ignore_errors=True)
        return TrainResult(self.output, manifest, seconds)


def train(dataset: str | Path, output: str | Path, *, overwrite: bool = False, progress: bool = True,
          plot: str | Path | None = None, **settings) -> TrainResult:
    """Fine-tune a masked LM as SPLADE on a BEIR folder; writes a Hugging Face checkpoint folder at
    ``output`` (with ``training.json``) that ``--model`` takes everywhere. ``settings`` are the fields
    of :class:`TrainSettings` (model, epochs, max_steps, batch_size, lr, lambda_q, lambda_d, ...)."""
    with output_lock(output):
        return Trainer(dataset, output, make_settings(**settings), overwrite=overwrite, progress=progress,
                       plot=plot).run()


def trained_with(model_dir: str | Path, settings: TrainSettings) -> bool:
    """Whether ``model_dir`` holds a model trained with exactly ``settings`` on data whose files are
    unchanged (their sha256s as its manifest records them): such a model need not be trained again."""
    manifest = Path(model_dir) / MANIFEST_FILE
    if not manifest.is_file():
        return False
    old = json.loads(manifest.read_text())
    return old.get("settings") == dataclasses.asdict(settings) and all(
        Path(f["path"]).is_file() and f["sha256"] == sha256_file(f["path"]) for f in old["dataset"]["files"].values())


def available_cpus() -> int:
    """The CPUs this process may run on (its affinity where the system tells it)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:
        return os.cpu_count() or 1


def _step_of(path: Path) -> int:
    """The step in a ``checkpoint-STEP.pt`` or ``best-STEP`` name (-1 for another name)."""
    digits = path.name.split("-", 1)[-1].split(".")[0]
    return int(digits) if digits.isdigit() else -1


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


def plot_training(manifest: dict, png: str | Path) -> None:
    """Loss (ranking and FLOPS parts) and dev nDCG@10 against steps."""
    matplotlib = require("matplotlib", "plot", "--plot")
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    steps = manifest["steps"]
    x = [r["step"] for r in steps]
    fig, (left, right) = plt.subplots(1, 2, figsize=(11, 4))
    window = max(1, min(20, len(steps) // 10))

    def smooth(values):  # the trailing mean over `window` steps
        values = np.asarray(values, dtype=float)
        sums = np.cumsum(np.concatenate([[0.0], values]))
        starts = np.maximum(0, np.arange(1, len(values) + 1) - window)
        return (sums[1:] - sums[starts]) / (np.arange(1, len(values) + 1) - starts)

    left.plot(x, [r["loss"] for r in steps], color="0.8", lw=0.8, label="total, per step")
    left.plot(x, smooth([r["loss"] for r in steps]), lw=1.5, label=f"total, mean of {window} steps")
    left.plot(x, smooth([r["rank"] for r in steps]), lw=1.5, label="ranking part")
    left.plot(x, smooth([r["loss"] - r["rank"] for r in steps]), lw=1.5, label="FLOPS part (weighted)")
    left.set_xlabel("step")
    left.set_ylabel("loss")
    left.legend()
    left.set_title("training loss")
    dev = ([manifest["dev_base"]] if manifest.get("dev_base") else []) + manifest["dev"]
    if dev:
        right.plot([r["step"] for r in dev], [r["nDCG@10"] for r in dev], marker="o")
    right.set_xlabel("step")
    right.set_ylabel("dev nDCG@10")
    right.set_title("dev nDCG@10 (carved from the training queries)")
    fig.tight_layout()
    Path(png).parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(png, dpi=120)
    plt.close(fig)
