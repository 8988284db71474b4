"""Shared fixtures. Tests that need ../shared/datasets find it through $SPLADE_LUCENE_DATA or
../shared/datasets beside the checkout. Where something a test needs is missing (the collections, an
extra, a file system it mounts), the test is skipped with the reason on a developer's machine, and
FAILS under CI (``CI`` set, as CI sets ``CI=true``): a suite must not go green by not testing."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

import splade_lucene  # noqa: F401  (sets up Java before any pyserini import)

REPO = Path(__file__).resolve().parent.parent


UNDER_CI = bool(os.environ.get("CI"))


def unavailable(reason: str):
    """Skip for ``reason``; under CI, fail: what CI must test may not be skipped."""
    if UNDER_CI:
        pytest.fail(f"CI must run this test, but {reason}", pytrace=False)
    pytest.skip(reason)


def need_module(name: str, extra: str):
    """``pytest.importorskip`` that fails under CI (see :func:`unavailable`)."""
    try:
        return __import__(name)
    except ImportError:
        unavailable(f"{name} is not installed (pip install 'splade-lucene[{extra}]')")


def data_root() -> Path | None:
    if os.environ.get("SPLADE_LUCENE_DATA"):
        return Path(os.environ["SPLADE_LUCENE_DATA"])
    candidate = REPO.parent / "shared" / "datasets"
    return candidate if candidate.is_dir() else None


@pytest.fixture(scope="session")
def datasets() -> Path:
    root = data_root()
    if os.environ.get("SPLADE_LUCENE_DATA") and not (root / "scifact").is_dir():
        # a folder named on purpose and wrong is a mistake, never a reason to skip
        pytest.fail(f"SPLADE_LUCENE_DATA={root} holds no test collections (no scifact/ there)", pytrace=False)
    if root is None or not root.is_dir():
        unavailable("the test collections are not found: set SPLADE_LUCENE_DATA or place them at "
                    "../shared/datasets")
    return root


@pytest.fixture(scope="session")
def encoder():
    from splade_lucene.encoding.model import SpladeEncoder

    return SpladeEncoder()


# ---- the two command-line runs, in the background ---------------------------------------------
# `reproduce` (SciFact, Cranfield and CACM encoded and searched: about 10 minutes) and `experiment`
# (Cranfield) are subprocesses started as soon as the tests are collected, at a low priority, so that
# they use the core the other tests leave idle; the tests that read them run last and wait for them.

BACKGROUND = ("cli_experiment", "reproduced")


def _background_commands(root: Path, out: Path) -> dict[str, list[str]]:
    cli = [sys.executable, "-m", "splade_lucene", "--quiet"]
    files = sorted(str(p) for p in (REPO / "scripts" / "experiments").glob("*.yaml"))
    return {"cli_experiment": [*cli, "experiment", "--keep-query-hits", "--dataset", str(root / "cranfield"),
                               "--output", str(out / "cli_experiment" / "cranfield")],
            "reproduced": [*cli, "reproduce", *files, "--output", str(out / "reproduced")]}


class Background:
    """A command run in the background: its output files, waited for by the fixture that owns it."""

    def __init__(self, args: list[str], folder: Path, env: dict[str, str]):
        folder.mkdir(parents=True)
        self.args, self.folder = args, folder
        self.stdout, self.stderr = open(folder / "stdout", "wb"), open(folder / "stderr", "wb")
        self.proc = subprocess.Popen(args, stdout=self.stdout, stderr=self.stderr, env=env,
                                     preexec_fn=lambda: os.nice(10))

    def result(self, timeout: float) -> subprocess.CompletedProcess:
        try:
            code = self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
            raise
        finally:
            self.stdout.close(), self.stderr.close()
        read = lambda name: (self.folder / name).read_text(encoding="utf-8", errors="replace")  # noqa: E731
        return subprocess.CompletedProcess(self.args, code, read("stdout"), read("stderr"))

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()


_started: dict[str, tuple[Path, Background]] = {}  # fixture name -> (its output folder, its run)


@pytest.hookimpl(trylast=True)  # after `-k` and `-m` have deselected
def pytest_collection_modifyitems(session, config, items):
    """The tests reading a background run go last (their order kept); the runs they need start now."""
    uses = {id(item): set(BACKGROUND) & set(getattr(item, "fixturenames", ())) for item in items}
    needs = set().union(*uses.values())
    items.sort(key=lambda item: bool(uses[id(item)]))  # stable: each group keeps its order
    root = data_root()
    if not needs or config.option.collectonly or root is None or not root.is_dir():
        return  # nothing to run (the fixtures skip through `datasets` where there are no collections)
    out = Path(tempfile.mkdtemp(prefix="splade-lucene-background-"))
    config.add_cleanup(lambda: shutil.rmtree(out, ignore_errors=True))
    env = {**os.environ, "SPLADE_LUCENE_DATA": str(root)}
    for name, args in _background_commands(root, out).items():
        if name in needs:
            _started[name] = out, Background(args, out / "logs" / name, env)
            config.add_cleanup(_started[name][1].stop)


def _background(name: str) -> tuple[Path, subprocess.CompletedProcess]:
    out, run = _started[name]
    return out / name, run.result(timeout=3600)


@pytest.fixture(scope="session")
def cli_experiment(datasets):
    """`python -m splade_lucene experiment` on Cranfield with the defaults, as a user runs it (its query
    and document ids are unrelated numberings: query hits kept). SciFact, the default dataset, runs
    with the same settings in `reproduced`."""
    folder, proc = _background("cli_experiment")
    return folder / "cranfield", proc


@pytest.fixture(scope="session")
def reproduced(datasets):
    """`splade-lucene reproduce` on every shipped experiment file, then `report`."""
    out, proc = _background("reproduced")
    report = subprocess.run([sys.executable, "-m", "splade_lucene", "report", "--output", str(out)],
                            capture_output=True, text=True, timeout=600)
    return out, proc, report


@pytest.fixture(scope="session")
def small_corpus(datasets, tmp_path_factory) -> Path:
    """The first 240 Cranfield documents (some longer than 64 tokens)."""
    path = tmp_path_factory.mktemp("corpus") / "corpus.jsonl"
    with open(datasets / "cranfield" / "corpus.jsonl", encoding="utf-8") as fh:
        path.write_text("".join(next(fh) for _ in range(240)), encoding="utf-8")
    return path


@pytest.fixture(scope="session")
def tiny_dataset(datasets, tmp_path_factory) -> Path:
    """A slice of SciFact: 40 train queries, their judged documents and 200 others."""
    import json

    src = datasets / "scifact"
    out = tmp_path_factory.mktemp("tiny") / "scifact"
    (out / "qrels").mkdir(parents=True)
    rows = [line.rstrip("\r\n").split("\t") for line in (src / "qrels" / "train.tsv").read_text().splitlines()[1:]]
    qids = list(dict.fromkeys(r[0] for r in rows))[:40]
    rows = [r for r in rows if r[0] in qids]
    judged = {r[1] for r in rows}
    lines = (src / "corpus.jsonl").read_text(encoding="utf-8").splitlines(keepends=True)
    (out / "corpus.jsonl").write_text("".join(line for i, line in enumerate(lines)
                                              if i < 200 or json.loads(line)["_id"] in judged), encoding="utf-8")
    queries = [line for line in (src / "queries.jsonl").read_text(encoding="utf-8").splitlines(keepends=True)
               if json.loads(line)["_id"] in qids]
    (out / "queries.jsonl").write_text("".join(queries), encoding="utf-8")
    lines = "".join("\t".join(r) + "\n" for r in rows)
    (out / "qrels" / "train.tsv").write_text("query-id\tcorpus-id\tscore\n" + lines)
    return out


@pytest.fixture
def read_only_dir(tmp_path):
    """An empty folder on a read-only tmpfs made for the test (needs Linux and root: CI runs as root)."""
    where = tmp_path / "read-only"
    where.mkdir()
    if not sys.platform.startswith("linux") or os.geteuid() != 0:
        unavailable("mounting a read-only file system needs Linux and root")
    proc = subprocess.run(["mount", "-t", "tmpfs", "-o", "ro,size=1m", "tmpfs", str(where)],
                          capture_output=True, text=True)
    if proc.returncode != 0:
        unavailable(f"a read-only tmpfs cannot be mounted here: {proc.stderr.strip()}")
    yield where
    subprocess.run(["umount", str(where)], capture_output=True)


def read_vectors(folder: Path) -> dict[str, dict[str, int]]:
    import json

    from splade_lucene.formats.collection import collection_files

    return {r["id"]: r["vector"] for f in collection_files(folder)
            for r in map(json.loads, f.read_text().splitlines())}


@pytest.fixture(scope="session")
def cranfield(datasets, encoder, tmp_path_factory):
    """Cranfield (1,400 documents, two of them empty) encoded with SPLADE-tiny, indexed from the
    JsonVectorCollection files and from the equivalent pseudo-documents, with its queries encoded."""
    import json

    from splade_lucene.encoding.local import encode_corpus
    from splade_lucene.formats.collection import COLLECTION_METADATA_FILE, pseudo_record, read_queries
    from splade_lucene.formats.trec import read_qrels
    from splade_lucene.indexing.build import build_index
    from splade_lucene.search.encoders import QueryEncoder

    base = tmp_path_factory.mktemp("cranfield")
    folder = datasets / "cranfield"
    summary = encode_corpus(folder / "corpus.jsonl", base / "vector", encoder=encoder, progress=False)
    # The same vectors as pseudo-documents (what --format pseudo writes).
    vectors = read_vectors(base / "vector")
    (base / "pseudo").mkdir()
    with open(base / "pseudo" / "part-00000.jsonl", "w") as fh:
        for docid, terms in vectors.items():
            fh.write(json.dumps(pseudo_record(docid, terms)) + "\n")
    meta = json.loads((base / "vector" / COLLECTION_METADATA_FILE).read_text())
    (base / "pseudo" / COLLECTION_METADATA_FILE).write_text(json.dumps({**meta, "format": "pseudo"}))
    vector_index = build_index(base / "vector", base / "index-vector", quiet=True)
    pseudo_index = build_index(base / "pseudo", base / "index-pseudo", quiet=True)
    qrels = read_qrels(folder / "qrels" / "test.tsv")
    queries = read_queries(folder / "queries.jsonl")
    qenc = QueryEncoder(encoder=encoder)
    encoded = dict(zip([q for q, _ in queries], qenc.encode_batch([t for _, t in queries])))
    return {"base": base, "summary": summary, "vectors": vectors, "vector_index": vector_index.index_dir,
            "pseudo_index": pseudo_index.index_dir, "queries": queries, "encoded": encoded, "qrels": qrels,
            "query_encoder": qenc}


@pytest.fixture(scope="session")
def shards(cranfield, tmp_path_factory):
    """Cranfield's collection cut into 5 part files, indexed as 3 shards (parts 0+3, 1+4, 2)."""
    import shutil

    from splade_lucene.formats.collection import COLLECTION_METADATA_FILE
    from splade_lucene.indexing.build import build_index

    base = tmp_path_factory.mktemp("shards")
    parts = base / "collection"
    parts.mkdir()
    source = cranfield["base"] / "vector"
    lines = (source / "part-00000.jsonl").read_text().splitlines(keepends=True)
    size = -(-len(lines) // 5)
    for number in range(5):
        (parts / f"part-{number:05d}.jsonl").write_text("".join(lines[number * size:(number + 1) * size]))
    shutil.copy(source / COLLECTION_METADATA_FILE, parts / COLLECTION_METADATA_FILE)
    indexes = [build_index(parts, base / f"shard-{i}", shard=f"{i}/3", quiet=True).index_dir for i in range(3)]
    return {"base": base, "collection": parts, "indexes": indexes, "lines": lines}
