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
import shutil
import time
from dataclasses import dataclass
from pathlib import Path

from ..core.atomic import check_output_path, move_into_place, output_lock, write_text
from ..core.errors import NotFoundError, OutputExistsError
from ..core.faults import fault_point
from ..encoding.loading import model_weights_sha256, resolve_model, write_sparse_encoder_folder
from ..encoding.model import SpladeEncoder
from ..evaluation.pipeline import run_pipeline
from ..formats.collection import read_queries, sha256_file
from ..formats.metadata import CollectionOptions
from ..formats.trec import read_qrels
from ..indexing.lucene import package_versions
from ..indexing.query_table import MODEL_TABLE_FILE, load_table, sha256_table
from .checkpoints import Checkpoints
from .data import PSEUDO_RULES, TrainingSet
from .objective import QueryTable, SpladeModel, lr_at, ranking_loss
from .plot import plot_training
from .settings import TrainingError, TrainSettings, make_settings
from .teacher import HybridTeacher

MANIFEST_FILE = "training.json"
STATE_FILE = "state.json"


# the layout of a work folder (pairs, dev pool, checkpoint): a folder of another version is not resumed
WORK_VERSION = 4


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
        self.checkpoints = Checkpoints(self.work)
        self.query_table: QueryTable | None = None

    def load_data(self) -> None:
        s = self.settings
        self.set = TrainingSet(self.folder, s)
        self.data, self.train_qids, self.dev_qids = self.set.data, self.set.train_qids, self.set.dev_qids
        self.steps_per_epoch, self.total_steps = self.set.steps_per_epoch, self.set.total_steps
        self.warmup, self.lambda_warmup = self.set.warmup, self.set.lambda_warmup
        self.fingerprint = {
            "work_version": WORK_VERSION,
            "settings": dataclasses.asdict(s),
            "base_model_sha256": model_weights_sha256(self.base_path),
            "dataset": {name: sha256_file(path) for name, path in sorted(self.data.files.items())},
            "pseudo_rules": PSEUDO_RULES if s.pairs == "pseudo" else None,
        }

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
        bm25 = self.set.mine(self.work) if s.negatives == "bm25" or s.dev_depth else {}
        self.set.choose_negatives(bm25)
        self.dev = self.set.write_dev_pool(self.work, bm25)

    # -- the loop ---------------------------------------------------------------------------------
    def _evaluate(self, model: SpladeModel, step: int) -> dict:
        """Dev metrics of the current weights through encode, index and search, as `experiment` runs."""

        s = self.settings
        folder = self.work / "eval"
        shutil.rmtree(folder, ignore_errors=True)
        model.model.eval()
        model.save(folder / "model")
        if self.query_table is not None:
            self.query_table.save(folder / "model")
        encoder = SpladeEncoder(str(folder / "model"), max_length=s.max_length, pooling=s.pooling, device=s.device)
        fault_point("train.evaluate")
        result = run_pipeline(self.dev / "corpus.jsonl", read_queries(self.dev / "queries.tsv"),
                              read_qrels(self.dev / "qrels.tsv"), folder, encoder=encoder,
                              options=CollectionOptions(scale=s.scale, query_max_length=s.query_max_length),
                              k=100, query_mode=s.query_mode, progress=False, warn=False)
        model.model.train()
        return {"step": step, "epoch": step / self.steps_per_epoch, "nDCG@10": result.metrics["nDCG@10"],
                "RR@10": result.metrics["RR@10"], "R@100": result.metrics["R@100"],
                "mean_terms_per_document": result.mean_terms_per_document,
                "mean_terms_per_query": result.mean_terms_per_query}

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
            self.query_table = QueryTable(model, self.data, self.train_qids, max_length=s.max_length,
                                          query_max_length=s.query_max_length or s.max_length,
                                          learned=s.query_mode == "learned")
        if s.query_mode == "learned":
            groups.append({"params": [self.query_table.weights], "weight_decay": 0.0, "lr": s.query_lr,
                           "fixed_lr": True})
        optimizer = torch.optim.AdamW(groups, lr=s.lr, foreach=False)
        teacher = None
        if s.teacher == "hybrid":  # the base model, frozen, beside BM25
            frozen = SpladeModel(self.base_path, pooling=s.pooling, new_head=s.new_head, device=s.device)
            frozen.model.requires_grad_(False)
            teacher = HybridTeacher(frozen, self.data.corpus, s)
        step, history = self.checkpoints.load(model, optimizer, self.query_table)
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
                loss, log = ranking_loss(model, self.data, self.set.batch(step), step, s, self.lambda_warmup,
                                         self.query_table, teacher)
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
                    self.checkpoints.keep_best(record, history, self.work / "eval" / "model")
                    bar.write(f"step {step}: dev nDCG@10 {record['nDCG@10']:.4f}, "
                              f"{record['mean_terms_per_document']:.0f} terms/doc, "
                              f"{record['mean_terms_per_query']:.0f} terms/query")
                if step % s.checkpoint_every == 0 or step in eval_steps:
                    history["seconds"] += time.perf_counter() - session
                    session = time.perf_counter()
                    self.checkpoints.save(model, optimizer, step, history, self.query_table)
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
            if self.query_table is not None:
                self.query_table.save(tmp)
            kept = {"rule": "last step (no dev part)", "step": self.total_steps}
        s = self.settings
        table_file = tmp / MODEL_TABLE_FILE
        # also a sentence-transformers SparseEncoder folder (the Router form for a learned query table)
        write_sparse_encoder_folder(tmp, max_length=s.max_length, tokenizer=model.tokenizer,
                                    query_weights=load_table(table_file) if table_file.is_file() else None)
        manifest = {
            "base_model": {"name": self.base_name, "path": self.base_path,
                           "sha256": self.fingerprint["base_model_sha256"]},
            "model_sha256": model_weights_sha256(tmp),
            "query_table_sha256": sha256_table(load_table(tmp / MODEL_TABLE_FILE))
            if (tmp / MODEL_TABLE_FILE).is_file() else None,
            # inference-free training: the training queries' IDF was divided by this (see QueryTable)
            "query_table_scale": self.query_table.scale if self.query_table is not None else None,
            "dataset": {"folder": str(self.folder), "pairs": s.pairs,
                        "files": {name: {"path": str(path), "sha256": self.fingerprint["dataset"][name]}
                                  for name, path in sorted(self.data.files.items())},
                        "dropped": self.data.dropped, "pseudo_rules": self.fingerprint["pseudo_rules"]},
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
        for path in tmp.rglob("*"):
            path.chmod(0o755 if path.is_dir() else 0o644)  # save_pretrained may write the weights owner-only
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
    if not isinstance(old.get("settings"), dict):
        return False
    # a setting added since that model was trained is at its default there: every new setting's
    # default keeps the behaviour from before it existed
    recorded = {**{f.name: f.default for f in dataclasses.fields(TrainSettings)}, **old["settings"]}
    # pseudo-query pairs drawn under older rules (a manifest without the field: version 1)
    if settings.pairs == "pseudo" and old.get("dataset", {}).get("pseudo_rules", 1) != PSEUDO_RULES:
        return False
    return recorded == dataclasses.asdict(settings) and all(
        Path(f["path"]).is_file() and f["sha256"] == sha256_file(f["path"]) for f in old["dataset"]["files"].values())





