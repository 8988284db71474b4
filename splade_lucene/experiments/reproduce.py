"""Reproducible experiments described as data, graded against their expected scores.

An experiment file (YAML, kept under ``scripts/experiments/``) names a dataset and its conditions:

.. code-block:: yaml

    dataset: scifact            # a folder under the data root, or a path
    plain: false                # true: a copy without titles, lowercased, without punctuation
    split: test                 # qrels/<split>.tsv
    k: 1000
    conditions:
      bm25:   {type: bm25, k1: 0.9, b: 0.4, expected: {nDCG@10: 0.6789}}
      splade: {type: splade, model: splade-tiny, scale: 100, max_length: 512, expected: {...}}
      hybrid-rrf: {type: rrf, runs: [bm25, splade], rrf_k: 60, expected: {...}}
      hybrid-linear: {type: interpolation, runs: [bm25, splade], alpha: 0.3, expected: {...}}

Each condition writes ``DIR/<dataset>/<condition>/``: ``run.trec``, ``metrics.json`` and
``manifest.json`` (versions, model and dataset sha256s, every setting, index statistics, wall times
per stage). Each expected metric is graded as Pyserini's two-click reproductions do: ``OK`` when
equal to 4 decimals, ``FAIL`` otherwise, with both numbers.
"""

from __future__ import annotations

import dataclasses
import json
import shutil
import statistics
import time
from dataclasses import dataclass, field
from pathlib import Path

from ..core.atomic import output_lock, write_text
from ..core.errors import NotFoundError, SpladeLuceneError
from ..encoding.loading import DEFAULT_MODEL
from ..encoding.model import EncoderSettings
from ..evaluation.metrics import METRICS, evaluate, write_metrics
from ..formats.collection import read_queries, sha256_file
from ..formats.metadata import CollectionOptions
from ..formats.trec import read_qrels, read_run, write_run
from ..indexing.lucene import document_frequencies, package_versions
from ..search import fusion
from ..search.bm25 import BM25Searcher, build_bm25_index
from ..search.engines import SearchSettings
from ..training.settings import TrainSettings, make_settings
from ..training.trainer import MANIFEST_FILE, train, trained_with
from .experiment import dataset_files, find_dataset, plain_dataset, run_experiment

CONDITION_TYPES = ("bm25", "splade", "train", "rrf", "interpolation")
# a splade condition takes every setting of the encoder and of the collection (static pruning included),
# named as the records name them, and of the search
_SPLADE = {**{f.name: f.default for f in dataclasses.fields(EncoderSettings) if f.name != "threads"},
           "model": DEFAULT_MODEL, **CollectionOptions.defaults(),
           **{f.name: f.default for f in dataclasses.fields(SearchSettings)}}
_SETTINGS = {
    "bm25": {"k1": 0.9, "b": 0.4},
    "splade": _SPLADE,
    # fine-tune `model` on the dataset (`train`: TrainSettings fields), then the splade condition with it
    "train": {**_SPLADE, "train": {}},
    "rrf": {"runs": None, "rrf_k": 60, "depth": 1000},
    "interpolation": {"runs": None, "alpha": 0.5, "depth": 1000},
}


class ExperimentFileError(SpladeLuceneError, ValueError):
    """An experiment file that does not describe a valid experiment."""


def settings_of(record: type, settings: dict):
    """The ``record`` made of the fields ``settings`` names."""
    return record(**{f.name: settings[f.name] for f in dataclasses.fields(record) if f.name in settings})


@dataclass
class Condition:
    name: str
    type: str
    settings: dict
    expected: dict[str, float]


@dataclass
class ExperimentSpec:
    path: Path
    dataset: str
    split: str
    k: int
    remove_query: bool
    conditions: dict[str, Condition]
    plain: bool = False  # run on a copy without titles, lowercased, without punctuation (plain_dataset)


@dataclass
class Grade:
    dataset: str
    condition: str
    metric: str
    expected: float | None
    actual: float

    @property
    def status(self) -> str:
        if self.expected is None:
            return "UNCHECKED"
        return "OK" if round(self.actual, 4) == round(self.expected, 4) else "FAIL"

    def line(self) -> str:
        if self.expected is None:
            return f"[UNCHECKED] {self.dataset}/{self.condition} {self.metric}: {self.actual:.4f} (no expected score)"
        return (f"[{self.status}] {self.dataset}/{self.condition} {self.metric}: expected {self.expected:.4f}, "
                f"got {self.actual:.4f}")


def load_spec(path: str | Path) -> ExperimentSpec:
    import yaml

    path = Path(path)
    if not path.is_file():
        raise NotFoundError(f"no such experiment file: {path}")
    try:
        data = yaml.safe_load(path.read_bytes().decode("utf-8-sig"))  # a byte-order mark is no content
    except UnicodeDecodeError as exc:
        raise ExperimentFileError(f"{path}: not UTF-8 ({exc.reason} at byte {exc.start})") from None
    except yaml.YAMLError as exc:
        raise ExperimentFileError(f"{path}: not valid YAML: {' '.join(str(exc).split())}") from None
    if not isinstance(data, dict) or "dataset" not in data or not isinstance(data.get("conditions"), dict):
        raise ExperimentFileError(f"{path}: needs 'dataset' and a 'conditions' mapping")
    unknown = set(data) - {"dataset", "split", "k", "remove_query", "conditions", "description", "plain"}
    if unknown:
        raise ExperimentFileError(f"{path}: unknown keys {sorted(unknown)}")
    conditions = {}
    for name, raw in data["conditions"].items():
        if not isinstance(raw, dict) or raw.get("type") not in CONDITION_TYPES:
            raise ExperimentFileError(f"{path}: condition {name!r} needs 'type', one of {CONDITION_TYPES}")
        kind = raw["type"]
        settings = dict(_SETTINGS[kind])
        extra = set(raw) - set(settings) - {"type", "expected"}
        if extra:
            raise ExperimentFileError(f"{path}: condition {name!r} ({kind}) has unknown settings {sorted(extra)}; "
                                      f"allowed: {sorted(settings)}")
        settings.update({k: v for k, v in raw.items() if k in settings})
        expected = raw.get("expected") or {}
        bad = set(expected) - set(METRICS)
        if bad:
            raise ExperimentFileError(f"{path}: condition {name!r} expects unknown metrics {sorted(bad)}; "
                                      f"known: {list(METRICS)}")
        conditions[name] = Condition(name, kind, settings, {m: float(v) for m, v in expected.items()})
    for c in conditions.values():
        if c.type == "train":

            fields = {f.name for f in dataclasses.fields(TrainSettings)}
            train = c.settings["train"]
            if not isinstance(train, dict) or set(train) - fields:
                raise ExperimentFileError(f"{path}: condition {c.name!r} has unknown training settings "
                                          f"{sorted(set(train) - fields) if isinstance(train, dict) else train!r}; "
                                          f"allowed: {sorted(fields - {'model', 'max_length', 'query_max_length'})}")
            for key in ("model", "max_length", "query_max_length"):
                if key in train:
                    raise ExperimentFileError(f"{path}: condition {c.name!r}: set {key!r} beside 'train', not in it "
                                              "(training and encoding share it)")
        if c.type in ("rrf", "interpolation"):
            runs = c.settings["runs"]
            if not isinstance(runs, list) or len(runs) < 2 or any(r not in conditions for r in runs):
                raise ExperimentFileError(f"{path}: condition {c.name!r} needs 'runs': names of two or more "
                                          f"conditions of this file, got {runs!r}")
    if not isinstance(data.get("plain", False), bool):
        raise ExperimentFileError(f"{path}: 'plain' is true or false, not {data['plain']!r}")
    return ExperimentSpec(path, str(data["dataset"]), str(data.get("split", "test")), int(data.get("k", 1000)),
                          bool(data.get("remove_query", True)), conditions, data.get("plain", False))


def _dataset_folder(spec: ExperimentSpec) -> Path:

    as_path = Path(spec.dataset)
    if as_path.is_dir():
        return as_path
    if not as_path.is_absolute():
        relative = (spec.path.parent / as_path)
        if relative.is_dir():
            return relative
    return find_dataset(None, name=spec.dataset)


def _folder_size(path: Path) -> int:
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file())


@dataclass
class ConditionResult:
    condition: Condition
    folder: Path
    metrics: dict[str, float]
    grades: list[Grade] = field(default_factory=list)


class Runner:
    """Runs the conditions of one experiment file, each once, components before hybrids."""

    def __init__(self, spec: ExperimentSpec, output: str | Path, *, threads: int = 1, progress: bool = True):

        self.spec = spec
        self.folder = _dataset_folder(spec)
        self.name = Path(spec.dataset).name
        if spec.plain:  # the copy is made anew each run (seconds), from the dataset as it is now
            self.name += "-plain"
            copy = Path(output) / "datasets" / self.name
            shutil.rmtree(copy, ignore_errors=True)
            self.folder = plain_dataset(self.folder, copy)
        self.corpus, self.queries_file, self.qrels_file = dataset_files(self.folder, spec.split)
        self.qrels = read_qrels(self.qrels_file)
        self.output = Path(output) / self.name
        self.threads = threads
        self.progress = progress
        self.results: dict[str, ConditionResult] = {}
        self._dataset_sha = None

    def dataset_manifest(self) -> dict:
        if self._dataset_sha is None:
            self._dataset_sha = {str(p.relative_to(self.folder)): sha256_file(p)
                                 for p in (self.corpus, self.queries_file, self.qrels_file)}
        return {"name": self.name, "folder": str(self.folder), "split": self.spec.split, "sha256": self._dataset_sha}

    def run(self, names: list[str] | None = None) -> list[ConditionResult]:
        wanted = names or list(self.spec.conditions)
        for name in wanted:
            if name not in self.spec.conditions:
                raise ExperimentFileError(f"{self.spec.path}: no condition {name!r}; "
                                          f"has {list(self.spec.conditions)}")
            self._run(name)
        return [self.results[n] for n in wanted]

    def _run(self, name: str) -> ConditionResult:
        if name in self.results:
            return self.results[name]
        cond = self.spec.conditions[name]
        folder = self.output / name
        if folder.exists():
            shutil.rmtree(folder)
        folder.mkdir(parents=True)
        manifest: dict = {"condition": name, "type": cond.type, "settings": cond.settings, "k": self.spec.k,
                          "remove_query": self.spec.remove_query, "experiment_file": str(self.spec.path),
                          "dataset": self.dataset_manifest()}
        times: dict[str, float] = {}
        if cond.type == "splade":
            self._splade(cond, folder, manifest, times)
        elif cond.type == "train":
            self._train(cond, folder, manifest, times)
        elif cond.type == "bm25":
            self._bm25(cond, folder, manifest, times)
        else:
            components = [self._run(r) for r in cond.settings["runs"]]
            self._fuse(cond, folder, components, manifest, times)
        t = time.perf_counter()
        metrics = evaluate(self.qrels, read_run(folder / "run.trec"), remove_query=self.spec.remove_query,
                           warn=False).metrics
        times["evaluate"] = time.perf_counter() - t
        write_metrics(metrics, folder / "metrics.json")
        manifest.update({"versions": package_versions(), "run_sha256": sha256_file(folder / "run.trec"),
                         "metrics": metrics, "seconds": times})
        write_text(folder / "manifest.json", json.dumps(manifest, indent=2, sort_keys=True) + "\n")
        result = ConditionResult(cond, folder, metrics,
                                 [Grade(self.name, name, m, cond.expected.get(m), metrics[m]) for m in METRICS])
        self.results[name] = result
        return result

    def _judged_queries(self) -> list[tuple[str, str]]:

        return [(q, t) for q, t in read_queries(self.queries_file) if q in self.qrels]

    def _splade(self, cond: Condition, folder: Path, manifest: dict, times: dict) -> None:

        s = cond.settings
        result = run_experiment(self.folder, folder, encoder=settings_of(EncoderSettings, s),
                                collection=CollectionOptions.from_record(s), search=settings_of(SearchSettings, s),
                                k=self.spec.k, threads=self.threads, split=self.spec.split,
                                remove_query=self.spec.remove_query, overwrite=True, progress=self.progress)
        times.update(result.seconds)
        meta = result.pipeline.index_metadata
        encoded = list(result.pipeline.encoded.values())
        df = document_frequencies(result.index_dir, {t for q in encoded for t in q})
        stats = meta["index_stats"]
        manifest["model"] = {"name": meta["model"], "sha256": meta["model_sha256"],
                             "query_model": meta["query_model"], "query_sha256": meta["query_model_sha256"]}
        manifest["index"] = {
            "size_bytes": _folder_size(result.index_dir), "documents": stats["documents"],
            "unique_terms": stats["unique_terms"], "empty_documents": meta.get("empty_documents"),
            "mean_terms_per_document": stats["postings"] / stats["documents"],
            "mean_terms_per_query": sum(len(q) for q in encoded) / len(encoded),
            "mean_postings_per_query": sum(df.get(t, 0) for q in encoded for t in q) / len(encoded),
            "anserini_command": meta["anserini_command"],
        }

    def _train(self, cond: Condition, folder: Path, manifest: dict, times: dict) -> None:
        """Fine-tune, then run the splade condition with the trained model. The model is kept at
        ``<dataset>/<condition>.model`` and reused while its training settings and data are the same."""

        s = cond.settings
        settings = {**s["train"], "model": s["model"], "max_length": s["max_length"],
                    "query_max_length": s["query_max_length"]}
        if settings.get("queries_file") and not Path(settings["queries_file"]).is_absolute():
            settings["queries_file"] = str(self.folder / settings["queries_file"])  # beside the dataset
        model_dir = self.output / f"{cond.name}.model"
        previous = model_dir / MANIFEST_FILE
        t = time.perf_counter()
        reused = trained_with(model_dir, make_settings(**settings))
        if not reused:
            train(self.folder, model_dir, overwrite=True, progress=self.progress, **settings)
        times["train"] = time.perf_counter() - t
        trained = json.loads(previous.read_text())
        self._splade(Condition(cond.name, "splade", {**s, "model": str(model_dir)}, cond.expected), folder,
                     manifest, times)
        manifest["training"] = {"model_dir": str(model_dir), "reused": reused,
                                **{k: trained[k] for k in ("base_model", "model_sha256", "settings", "derived",
                                                           "kept", "dev", "dev_base", "seconds", "dataset")}}

    def _bm25(self, cond: Condition, folder: Path, manifest: dict, times: dict) -> None:

        t = time.perf_counter()
        built = build_bm25_index(self.corpus, folder / "index", threads=self.threads, overwrite=True)
        times["index"] = time.perf_counter() - t
        t = time.perf_counter()
        queries = self._judged_queries()
        searcher = BM25Searcher(folder / "index", k1=cond.settings["k1"], b=cond.settings["b"])
        results = searcher.batch_search(queries, k=self.spec.k, threads=self.threads)
        write_run(results, folder / "run.trec", tag="bm25", remove_query=self.spec.remove_query)
        times["search"] = time.perf_counter() - t
        analyzed = [searcher.query_terms(text) for _, text in queries]
        searcher.close()
        df = document_frequencies(folder / "index", {t for q in analyzed for t in q})
        stats = built["index_stats"]
        manifest["index"] = {
            "size_bytes": _folder_size(folder / "index"), "documents": stats["documents"],
            "unique_terms": stats["unique_terms"],
            "mean_terms_per_document": stats["postings"] / stats["documents"],
            "mean_terms_per_query": sum(len(set(q)) for q in analyzed) / len(analyzed),
            "mean_postings_per_query": sum(df.get(t, 0) for q in analyzed for t in set(q)) / len(analyzed),
            "anserini_command": built["anserini_command"],
        }

    def _fuse(self, cond: Condition, folder: Path, components: list[ConditionResult], manifest: dict,
              times: dict) -> None:

        t = time.perf_counter()
        files = [c.folder / "run.trec" for c in components]
        s = cond.settings
        if cond.type == "rrf":
            fused = fusion.rrf(files, rrf_k=int(s["rrf_k"]), depth=int(s["depth"]), k=self.spec.k)
        else:
            fused = fusion.interpolation(files, alpha=float(s["alpha"]), depth=int(s["depth"]), k=self.spec.k)
        write_run(fused, folder / "run.trec", tag=cond.name, score_format=".8f")
        times["fuse"] = time.perf_counter() - t
        manifest["components"] = {c.condition.name: {"run_sha256": sha256_file(c.folder / "run.trec"),
                                                     "metrics": c.metrics} for c in components}


SEED_MARK = "@seed"


def _own_seed(c: Condition) -> int:
    """The seed a training condition trains with (its file's, else the default)."""
    return c.settings["train"].get("seed", TrainSettings.seed)


def with_seeds(spec: ExperimentSpec, seeds: list[int]) -> ExperimentSpec:
    """``spec`` with every training condition also trained with each of ``seeds`` (the condition
    ``NAME@seedS``, run after ``NAME``, graded against nothing: expected scores are one seed's), for a
    recipe's spread over seeds. A seed the condition already trains with adds nothing."""
    if any(isinstance(x, bool) or not isinstance(x, int) or x < 0 for x in seeds):
        raise ExperimentFileError(f"seeds are non-negative integers, got {seeds!r}")
    conditions: dict[str, Condition] = {}
    for name, c in spec.conditions.items():
        conditions[name] = c
        if c.type != "train":
            continue
        own = _own_seed(c)
        for seed in dict.fromkeys(seeds):
            if seed != own:
                variant = f"{name}{SEED_MARK}{seed}"
                conditions[variant] = Condition(variant, c.type, {**c.settings, "train": {**c.settings["train"],
                                                                                        "seed": seed}}, {})
    return dataclasses.replace(spec, conditions=conditions)


@dataclass
class Spread:
    """One condition's figure over training seeds."""

    dataset: str
    condition: str
    seeds: list[int]
    values: list[float]

    @property
    def mean(self) -> float:
        return statistics.fmean(self.values)

    @property
    def sd(self) -> float:
        """Sample standard deviation (0 for one seed)."""
        return statistics.stdev(self.values) if len(self.values) > 1 else 0.0

    def line(self, metric: str = "nDCG@10") -> str:
        each = ", ".join(f"{s}: {v:.4f}" for s, v in zip(self.seeds, self.values))
        return (f"{self.dataset}/{self.condition} {metric} over {len(self.seeds)} seeds: mean {self.mean:.4f}, "
                f"sd {self.sd:.4f} ({each})")


def spreads(grades: list[Grade], seeds_of: dict[tuple[str, str], int], metric: str = "nDCG@10") -> list[Spread]:
    """Each condition's ``metric`` over the seeds it was trained with: its own run and its ``NAME@seedS``
    runs among ``grades``; ``seeds_of``: (dataset, condition) -> the seed of a condition without a mark."""
    found: dict[tuple[str, str], dict[int, float]] = {}
    for g in grades:
        if g.metric != metric:
            continue
        base, mark, seed = g.condition.partition(SEED_MARK)
        if mark and seed.isdigit():
            found.setdefault((g.dataset, base), {})[int(seed)] = g.actual
        elif (g.dataset, g.condition) in seeds_of:
            found.setdefault((g.dataset, g.condition), {})[seeds_of[(g.dataset, g.condition)]] = g.actual
    return [Spread(d, c, sorted(v), [v[s] for s in sorted(v)]) for (d, c), v in found.items() if len(v) > 1]


def reproduce(files: list[str | Path], output: str | Path, *, conditions: list[str] | None = None,
              threads: int = 1, progress: bool = True, echo=print, seeds: list[int] | None = None) -> list[Grade]:
    """Run experiment files and grade them; returns every grade (``status`` OK / FAIL / UNCHECKED).
    ``seeds``: every training condition also trained with each (:func:`with_seeds`), and each one's
    nDCG@10 over its seeds echoed after its file (mean, sample sd, each seed's figure)."""
    specs = [load_spec(f) for f in files]  # validate every file before running any
    if seeds:
        specs = [with_seeds(spec, seeds) for spec in specs]
    if conditions:
        unknown = [c for c in conditions if not any(c in spec.conditions for spec in specs)]
        if unknown:
            raise ExperimentFileError(f"no experiment file has the condition(s) {unknown}; they have "
                                      f"{sorted({c for spec in specs for c in spec.conditions})}")
    grades: list[Grade] = []
    with output_lock(output):
        for spec in specs:
            names = [c for c in conditions if c in spec.conditions] if conditions else None
            if names is not None and seeds:  # a chosen training condition brings its seed variants
                names = [n for n in spec.conditions if n in names or n.partition(SEED_MARK)[0] in names]
            if names == []:  # none of the chosen conditions is in this file
                continue
            start = len(grades)
            runner = Runner(spec, output, threads=threads, progress=progress)
            for result in runner.run(names):
                for g in result.grades:
                    if g.expected is not None or g.metric == "nDCG@10":
                        echo(g.line())
                grades.extend(result.grades)
            if seeds:
                own = {(runner.name, c.name): _own_seed(c) for c in spec.conditions.values()
                       if c.type == "train" and SEED_MARK not in c.name}
                for spread in spreads(grades[start:], own):
                    echo(spread.line())
    return grades
