"""A crash at any instant loses nothing: each writer is killed (SIGKILL, through the fault points of
splade_lucene.core.faults) at each point where it can be, and the same command, run again, finishes with
the bytes of an uninterrupted run made in the same environment in a subprocess. Then a seeded loop
kills a small encode, index build and training at random points, as SQLite's crash tests do."""

from __future__ import annotations

import hashlib
import json
import os
import random
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from splade_lucene.core.faults import ENVIRONMENT, POINTS, parse

# a small training: 32 train queries in batches of 4 (8 steps an epoch), a checkpoint every 2 steps,
# the dev part evaluated at the end of each epoch (steps 8 and 16); the thread count pinned
TRAIN = ["--max-length", "64", "--batch-size", "4", "--epochs", "2", "--lr", "2e-4", "--dev-fraction", "0.2",
         "--checkpoint-every", "2", "--dev-depth", "10", "--threads", "2"]


def cli(*args, fault: str | None = None, timeout: float = 900) -> subprocess.CompletedProcess:
    """``splade-lucene ARGS`` in a subprocess, with the fault point ``fault`` armed (none: a clean run)."""
    env = {k: v for k, v in os.environ.items() if k != ENVIRONMENT}
    if fault:
        env[ENVIRONMENT] = fault
    return subprocess.run([sys.executable, "-m", "splade_lucene", "--quiet", *map(str, args)], env=env,
                          capture_output=True, text=True, timeout=timeout)


def killed(proc: subprocess.CompletedProcess) -> bool:
    return proc.returncode == -signal.SIGKILL


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def tree_digests(folder: Path) -> dict[str, str]:
    return {str(p.relative_to(folder)): sha256(p) for p in sorted(folder.rglob("*")) if p.is_file()}


def index_fingerprint(index: Path, encoded: dict[str, dict[str, int]]) -> dict:
    """What an index build determines: its impact table's and doc-id file's bytes, its Lucene
    statistics, and the run its queries get (Lucene's own files carry random segment ids, so they are
    compared through what they answer)."""
    from splade_lucene.formats.trec import write_run
    from splade_lucene.search.searcher import Searcher

    meta = json.loads((index / "splade_lucene.json").read_text())
    run = index.parent / f"{index.name}.check.trec"
    with Searcher(index, pretokenized=True, engine="lucene") as searcher:
        write_run(searcher.batch_search_terms(encoded, k=100), run)
    return {"table": tree_digests(index / "impacts"), "docids": sha256(index / "docids.json"),
            "stats": meta["index_stats"], "documents": meta["documents"], "run": sha256(run)}


def leftovers(folder: Path, keep: set[str]) -> list[str]:
    """Names in ``folder`` other than ``keep``: temporary folders, locks, stale copies."""
    return sorted(p.name for p in folder.iterdir() if p.name not in keep)


def test_fault_specs_are_checked():
    assert parse("train.checkpoint:5") == ("train.checkpoint", 5, signal.SIGKILL)
    assert parse("*:3:stop") == ("*", 3, signal.SIGSTOP)
    for bad in ("nowhere", "encode.part:0", "encode.part:often"):
        with pytest.raises(ValueError, match=ENVIRONMENT):
            parse(bad)


# ---- encode ---------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def encoded_reference(small_corpus, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("reference") / "collection"
    proc = cli("encode", "--corpus", small_corpus, "--output", out, "--part-size", "40")
    assert proc.returncode == 0, proc.stderr
    return out


def recorded_parts(out: Path) -> int:
    """How many finished parts a killed encode left recorded for the next run."""
    progress = out.parent / f".{out.name}.writing" / "progress.json"
    return len(json.loads(progress.read_text())["parts"]) if progress.is_file() else 0


def test_a_killed_encode_finishes_as_an_uninterrupted_one(small_corpus, encoded_reference, tmp_path):
    """One output, killed again and again, each run resuming the last one's work (arrivals count
    from 1 in each process): part 3 written but not recorded, then the 4th part recorded (parts 3-4
    of that run), then the finished folder about to take its name; then a clean run."""
    out = tmp_path / "collection"
    args = ("encode", "--corpus", small_corpus, "--output", out, "--part-size", "40")
    for fault, recorded in (("encode.part:3", 2), ("encode.progress:2", 4), ("publish.swap:1", 0)):
        assert killed(cli(*args, fault=fault)), fault
        assert not out.exists() and recorded_parts(out) == recorded, fault
    done = cli(*args)
    assert done.returncode == 0, done.stderr
    assert "kept from an interrupted run" not in done.stdout  # the progress record goes just before the move
    assert tree_digests(out) == tree_digests(encoded_reference)
    assert leftovers(tmp_path, {"collection"}) == []


def test_a_killed_encode_keeps_the_parts_it_recorded(small_corpus, encoded_reference, tmp_path):
    out = tmp_path / "collection"
    args = ("encode", "--corpus", small_corpus, "--output", out, "--part-size", "40")
    assert killed(cli(*args, fault="encode.progress:3"))
    done = cli(*args)
    assert done.returncode == 0 and "; 120 kept from an interrupted run" in done.stdout, done.stdout + done.stderr
    assert tree_digests(out) == tree_digests(encoded_reference)


# ---- index, impact table, merge ----------------------------------------------------------------

@pytest.fixture(scope="module")
def queries(datasets, encoder):
    from splade_lucene.formats.collection import read_queries
    from splade_lucene.search.encoders import QueryEncoder

    texts = read_queries(datasets / "cranfield" / "queries.jsonl")[:40]
    return dict(zip([q for q, _ in texts], QueryEncoder(encoder=encoder).encode_batch([t for _, t in texts])))


@pytest.fixture(scope="module")
def index_reference(encoded_reference, queries, tmp_path_factory) -> dict:
    out = tmp_path_factory.mktemp("reference-index") / "index"
    proc = cli("index", "--collection", encoded_reference, "--index", out)
    assert proc.returncode == 0, proc.stderr
    return index_fingerprint(out, queries)


def test_a_killed_index_build_finishes_as_an_uninterrupted_one(encoded_reference, index_reference, queries,
                                                               tmp_path):
    """Killed with Anserini running, with Anserini done (before the metadata and the table), with the
    table's arrays written, with the table taking its name, with the index taking its name: never an
    index at the target, and the next run builds the reference's."""
    out = tmp_path / "index"
    args = ("index", "--collection", encoded_reference, "--index", out)
    for fault in ("index.running:1", "index.built:1", "impacts.write:1", "publish.swap:1", "publish.swap:2"):
        assert killed(cli(*args, fault=fault)), fault
        assert not out.exists(), fault  # a half-built index never has the name
    done = cli(*args)
    assert done.returncode == 0, done.stderr
    assert index_fingerprint(out, queries) == index_reference
    assert leftovers(tmp_path, {"index", "index.check.trec"}) == []  # no building folder, lock or copy left
    assert not [p.name for p in out.iterdir() if ".writing-" in p.name or ".tmp-" in p.name]


def test_a_killed_overwrite_finishes_and_leaves_no_old_copy(encoded_reference, index_reference, queries, tmp_path):
    out = tmp_path / "index"
    args = ("index", "--collection", encoded_reference, "--index", out, "--overwrite")
    assert cli(*args).returncode == 0
    assert killed(cli(*args, fault="publish.swap:2"))  # the old index moved aside, the new one not yet in
    assert not out.exists() and [p.name for p in tmp_path.iterdir() if ".building-old-" in p.name]
    done = cli(*args)
    assert done.returncode == 0, done.stderr
    assert index_fingerprint(out, queries) == index_reference
    assert leftovers(tmp_path, {"index", "index.check.trec"}) == []


def test_a_killed_impact_table_write_leaves_the_old_table_and_the_command_finishes(encoded_reference,
                                                                                   index_reference, queries, tmp_path):
    out = tmp_path / "index"
    assert cli("index", "--collection", encoded_reference, "--index", out).returncode == 0
    before = tree_digests(out / "impacts")
    assert killed(cli("impacts", "--index", out, fault="impacts.write:1"))
    assert tree_digests(out / "impacts") == before  # the old table, whole
    assert [p.name for p in out.glob("impacts.writing-*")]  # the killed writer's folder ...
    done = cli("impacts", "--index", out)
    assert done.returncode == 0, done.stderr
    assert not list(out.glob("impacts.writing-*"))  # ... removed by the next writer
    assert index_fingerprint(out, queries) == index_reference


def test_a_killed_blockmax_write_leaves_the_old_files_and_the_command_finishes(encoded_reference, queries, tmp_path):
    from splade_lucene.search.searcher import Searcher

    out = tmp_path / "index"
    assert cli("index", "--collection", encoded_reference, "--index", out).returncode == 0
    assert killed(cli("blockmax", "--index", out, fault="blockmax.write:1"))
    assert not (out / "blockmax").exists() and list(out.glob("blockmax.writing-*"))  # nothing under the name
    assert cli("blockmax", "--index", out, "--order", "index").returncode == 0
    arrays = lambda: {n: d for n, d in tree_digests(out / "blockmax").items() if n != "blockmax.json"}  # noqa: E731
    before = arrays()
    assert killed(cli("blockmax", "--index", out, fault="blockmax.write:1"))
    assert arrays() == before  # the old files, whole
    done = cli("blockmax", "--index", out)
    assert done.returncode == 0, done.stderr
    assert not list(out.glob("blockmax.writing-*"))  # the killed writer's folder removed by the next one
    written = arrays()
    assert written != before  # BP's order, not the index's
    assert cli("blockmax", "--index", out).returncode == 0 and arrays() == written  # deterministic: the same bytes
    with Searcher(out, pretokenized=True, engine="blockmax") as ours, \
            Searcher(out, pretokenized=True, engine="lucene") as lucene:
        assert ours.batch_search_terms(queries, k=100) == lucene.batch_search_terms(queries, k=100)


@pytest.fixture(scope="module")
def shard_indexes(encoded_reference, tmp_path_factory) -> list[Path]:
    base = tmp_path_factory.mktemp("crash-shards")
    shards = []
    for i in range(2):
        proc = cli("index", "--collection", encoded_reference, "--index", base / f"shard-{i}", "--shard", f"{i}/2")
        assert proc.returncode == 0, proc.stderr
        shards.append(base / f"shard-{i}")
    return shards


def test_a_killed_merge_finishes_as_an_uninterrupted_one(shard_indexes, queries, tmp_path):
    reference = tmp_path / "reference"
    assert cli("merge", "--index", reference, *shard_indexes).returncode == 0
    out = tmp_path / "merged"
    for fault in ("merge.merged:1", "impacts.write:1", "publish.swap:2"):
        assert killed(cli("merge", "--index", out, *shard_indexes, fault=fault)), fault
        assert not out.exists(), fault
    done = cli("merge", "--index", out, *shard_indexes)
    assert done.returncode == 0, done.stderr
    assert index_fingerprint(out, queries) == index_fingerprint(reference, queries)
    assert leftovers(tmp_path, {"reference", "merged", "reference.check.trec", "merged.check.trec"}) == []


# ---- training -----------------------------------------------------------------------------------

def model_of(folder: Path) -> tuple[str, list[float], dict]:
    manifest = json.loads((folder / "training.json").read_text())
    return (hashlib.sha256((folder / "model.safetensors").read_bytes()).hexdigest(),
            [s["loss"] for s in manifest["steps"]], manifest)


@pytest.fixture(scope="module")
def trained_reference(tiny_dataset, tmp_path_factory):
    """The small training, uninterrupted, as a command in a subprocess: weights, losses and manifest."""
    out = tmp_path_factory.mktemp("reference-model") / "model"
    proc = cli("train", "--dataset", tiny_dataset, "--output", out, *TRAIN)
    assert proc.returncode == 0, proc.stderr
    return model_of(out)


def newest_checkpoint(work: Path) -> int:
    return int(sorted(work.glob("checkpoint-*.pt"))[-1].stem.split("-")[1])


def test_a_killed_training_resumes_to_the_same_bits(tiny_dataset, trained_reference, tmp_path):
    """One training, stopped five times, each run resuming the last (checkpoints every 2 steps, dev
    evaluations at steps 0 (the base model), 8 and 16; arrivals count from 1 in each process):

    1. killed inside step 4's checkpoint write: step 2's is the newest whole one;
    2. resumed from 2, killed after step 6's checkpoint is in place, step 4's not yet removed;
    3. resumed from 6, killed inside the dev evaluation of step 8 (before its checkpoint);
    4. resumed from 6, stopped by SIGTERM after step 11: one line, exit 143, step 10's kept; a resume
       with another thread count is refused, naming both;
    5. step 10's checkpoint then damaged: the last run warns, resumes from step 8's, and ends with the
       uninterrupted run's weights (sha256), losses, dev figures and kept model."""
    out = tmp_path / "model"
    work = tmp_path / ".model.training"
    args = ("train", "--dataset", tiny_dataset, "--output", out, *TRAIN)
    for fault, newest in (("train.checkpoint:2", 2), ("train.rotate:2", 6), ("train.evaluate:1", 6)):
        assert killed(cli(*args, fault=fault)), fault
        assert not out.exists() and newest_checkpoint(work) == newest, fault
    assert list(work.glob("checkpoint-0000004.pt.tmp-*"))  # the write killed in step 1, never renamed
    stopped = cli(*args, fault="train.step:5:term")
    assert stopped.returncode == 143, stopped.stderr
    # the stale lock of the run killed before is taken over with a warning; then the one stop line
    assert "taking over the stale lock" in stopped.stderr
    assert stopped.stderr.strip().splitlines()[-1].startswith("splade-lucene train: stopped by SIGTERM")
    assert newest_checkpoint(work) == 10
    other = cli(*args[:-2], "--threads", "1")
    assert other.returncode == 2 and len(other.stderr.strip().splitlines()) == 1, other.stderr
    assert "--threads 2" in other.stderr and "--threads 1" in other.stderr
    newest = sorted(work.glob("checkpoint-*.pt"))[-1]
    newest.write_bytes(newest.read_bytes()[: newest.stat().st_size // 2])
    done = cli(*args)
    assert done.returncode == 0, done.stderr
    assert "checkpoint-0000010.pt cannot be read" in done.stderr, done.stderr
    digest, losses, manifest = model_of(out)
    assert manifest["resumed_from_step"] == 8 and manifest["settings"]["threads"] == 2
    assert (digest, losses) == trained_reference[:2]
    assert manifest["kept"] == trained_reference[2]["kept"] and manifest["dev"] == trained_reference[2]["dev"]
    assert leftovers(tmp_path, {"model"}) == []


# ---- kills at random instants -------------------------------------------------------------------

def test_kills_at_random_instants_lose_nothing(small_corpus, encoded_reference, index_reference, queries, tmp_path):
    """Four kills at random arrivals at any fault point (seeded), of encodes and index builds, each
    followed by the same command run again: every output equals the reference. (A training killed at
    random was one more: it took two minutes of the suite, and the killed training's points are each
    armed by test_a_killed_training_resumes_to_the_same_bits.)"""
    rng = random.Random(20261205)
    commands = {
        "encode": (("encode", "--corpus", small_corpus, "--output", "{out}", "--part-size", "40"), 13),
        "index": (("index", "--collection", encoded_reference, "--index", "{out}"), 4),
    }
    plan = [(name, rng.randint(1, commands[name][1])) for name in rng.choices(list(commands), k=4)]
    for number, (name, arrival) in enumerate(plan):
        out = tmp_path / f"{number}-{name}"
        args = [str(out) if a == "{out}" else a for a in commands[name][0]]
        first = cli(*args, fault=f"*:{arrival}")
        assert killed(first) or first.returncode == 0, (name, arrival, first.stderr)
        if killed(first):
            done = cli(*args)
            assert done.returncode == 0, (name, arrival, done.stderr)
        if name == "encode":
            assert tree_digests(out) == tree_digests(encoded_reference), (name, arrival)
        else:
            assert index_fingerprint(out, queries) == index_reference, (name, arrival)
        shutil.rmtree(out)


def test_every_fault_point_is_armed_by_a_test():
    named = "".join((Path(__file__).parent / name).read_text()
                    for name in ("test_crash.py", "test_reliability.py", "test_serve_live.py"))
    assert [p for p in POINTS if f'"{p}:' not in named] == []
