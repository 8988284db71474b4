"""A crash at any instant loses nothing: each writer is killed (SIGKILL, through the fault points of
splade_lucene.faults) at each point where it can be, and the same command, run again, finishes with
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

from splade_lucene.faults import ENVIRONMENT, POINTS, parse

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


def tree_digests(folder: Path, skip=()) -> dict[str, str]:
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file() and p.name not in skip}


def index_fingerprint(index: Path, encoded: dict[str, dict[str, int]]) -> dict:
    """What an index build determines: its impact table's and doc-id file's bytes, its Lucene
    statistics, and the run its queries get (Lucene's own files carry random segment ids, so they are
    compared through what they answer)."""
    from splade_lucene.search import Searcher, write_run

    meta = json.loads((index / "splade_lucene.json").read_text())
    run = index.parent / f"{index.name}.check.trec"
    with Searcher(index, pretokenized=True, engine="lucene") as searcher:
        write_run(searcher.batch_search_terms(encoded, k=100), run)
    return {"table": tree_digests(index / "impacts"), "docids": tree_digests(index, skip=("splade_lucene.json",))
            .get("docids.json"), "stats": meta["index_stats"], "documents": meta["documents"],
            "run": hashlib.sha256(run.read_bytes()).hexdigest()}


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


@pytest.mark.parametrize("fault, kept", [
    ("encode.part:3", 80),       # part 3's file written, not yet recorded: parts 1-2 kept
    ("encode.progress:3", 120),  # part 3 recorded
    ("publish.swap:1", 0),       # the finished folder about to take its name (its progress record gone)
])
def test_a_killed_encode_finishes_as_an_uninterrupted_one(small_corpus, encoded_reference, tmp_path, fault, kept):
    out = tmp_path / "collection"
    args = ("encode", "--corpus", small_corpus, "--output", out, "--part-size", "40")
    assert killed(cli(*args, fault=fault))
    assert not out.exists()
    done = cli(*args)
    assert done.returncode == 0, done.stderr
    assert (f"; {kept} kept from an interrupted run" in done.stdout) == (kept > 0), done.stdout
    assert tree_digests(out) == tree_digests(encoded_reference)
    assert leftovers(tmp_path, {"collection"}) == []


# ---- index, impact table, merge ----------------------------------------------------------------

@pytest.fixture(scope="module")
def queries(datasets, encoder):
    from splade_lucene.collection import read_queries
    from splade_lucene.search import QueryEncoder

    texts = read_queries(datasets / "cranfield" / "queries.jsonl")[:40]
    return dict(zip([q for q, _ in texts], QueryEncoder(encoder=encoder).encode_batch([t for _, t in texts])))


@pytest.fixture(scope="module")
def index_reference(encoded_reference, queries, tmp_path_factory) -> dict:
    out = tmp_path_factory.mktemp("reference-index") / "index"
    proc = cli("index", "--collection", encoded_reference, "--index", out)
    assert proc.returncode == 0, proc.stderr
    return index_fingerprint(out, queries)


@pytest.mark.parametrize("fault, overwrite", [
    ("index.built:1", False),    # Anserini done, before the metadata and the impact table
    ("impacts.write:1", False),  # the table's arrays written, before its rename
    ("publish.swap:1", False),   # the table taking its name inside the new index
    ("publish.swap:2", False),   # the index taking its name
    ("publish.swap:2", True),    # ... over an old index, moved aside and not yet removed
])
def test_a_killed_index_build_finishes_as_an_uninterrupted_one(encoded_reference, index_reference, queries,
                                                               tmp_path, fault, overwrite):
    out = tmp_path / "index"
    args = ["index", "--collection", encoded_reference, "--index", out]
    if overwrite:
        assert cli(*args).returncode == 0
        args.append("--overwrite")
    assert killed(cli(*args, fault=fault))
    assert not out.exists()  # a half-built index never has the name; an old one is moved aside whole
    done = cli(*args)
    assert done.returncode == 0, done.stderr
    assert index_fingerprint(out, queries) == index_reference
    assert leftovers(tmp_path, {"index", "index.check.trec"}) == []  # no building, old or lock left
    assert not [p.name for p in out.iterdir() if ".writing-" in p.name or ".tmp-" in p.name]


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


@pytest.fixture(scope="module")
def shard_indexes(encoded_reference, tmp_path_factory) -> list[Path]:
    base = tmp_path_factory.mktemp("crash-shards")
    shards = []
    for i in range(2):
        proc = cli("index", "--collection", encoded_reference, "--index", base / f"shard-{i}", "--shard", f"{i}/2")
        assert proc.returncode == 0, proc.stderr
        shards.append(base / f"shard-{i}")
    return shards


@pytest.mark.parametrize("fault", ["merge.merged:1", "impacts.write:1", "publish.swap:2"])
def test_a_killed_merge_finishes_as_an_uninterrupted_one(shard_indexes, queries, tmp_path, fault):
    reference = tmp_path / "reference"
    assert cli("merge", "--index", reference, *shard_indexes).returncode == 0
    out = tmp_path / "merged"
    assert killed(cli("merge", "--index", out, *shard_indexes, fault=fault))
    assert not out.exists()
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


@pytest.mark.parametrize("fault, resumed, damage", [
    ("train.checkpoint:5", 8, False),  # inside step 10's checkpoint write: step 8's is the newest whole one
    ("train.rotate:5", 10, False),     # step 10's checkpoint in place, step 8's not yet removed
    ("train.rotate:5", 8, True),       # ... and step 10's then damaged: the previous one is taken, and said so
    ("train.evaluate:2", 6, False),    # inside the dev evaluation of step 8 (the first is the base model's)
    ("train.step:11:term", 10, False),  # SIGTERM after step 11: one line, exit 143, checkpoint 10 kept
])
def test_a_killed_training_resumes_to_the_same_bits(tiny_dataset, trained_reference, tmp_path, fault, resumed,
                                                    damage):
    out = tmp_path / "model"
    args = ("train", "--dataset", tiny_dataset, "--output", out, *TRAIN)
    stopped = cli(*args, fault=fault)
    if fault.endswith(":term"):
        assert stopped.returncode == 143, stopped.stderr
        assert stopped.stderr.strip().startswith("splade-lucene train: stopped by SIGTERM")
        assert "\n" not in stopped.stderr.strip()
        # the weights depend on the thread count: a resume with another is refused, naming both
        other = cli(*args[:-2], "--threads", "1")
        assert other.returncode == 2 and "--threads 2" in other.stderr and "--threads 1" in other.stderr
        assert len(other.stderr.strip().splitlines()) == 1
    else:
        assert killed(stopped), stopped.stderr
    assert not out.exists()
    work = tmp_path / ".model.training"
    if damage:
        newest = sorted(work.glob("checkpoint-*.pt"))[-1]
        newest.write_bytes(newest.read_bytes()[: newest.stat().st_size // 2])
    done = cli(*args)
    assert done.returncode == 0, done.stderr
    assert ("cannot be read" in done.stderr) == damage, done.stderr
    digest, losses, manifest = model_of(out)
    assert manifest["resumed_from_step"] == resumed and manifest["settings"]["threads"] == 2
    assert (digest, losses) == trained_reference[:2]
    assert manifest["kept"] == trained_reference[2]["kept"] and manifest["dev"] == trained_reference[2]["dev"]
    assert leftovers(tmp_path, {"model"}) == []


# ---- kills at random instants -------------------------------------------------------------------

def test_kills_at_random_instants_lose_nothing(small_corpus, encoded_reference, index_reference, queries,
                                               tiny_dataset, trained_reference, tmp_path):
    """Six kills at random arrivals at any fault point (seeded) of an encode, an index build and a
    training, each followed by the same command run again: every output equals the reference."""
    rng = random.Random(20261205)
    commands = {
        "encode": (("encode", "--corpus", small_corpus, "--output", "{out}", "--part-size", "40"), 13),
        "index": (("index", "--collection", encoded_reference, "--index", "{out}"), 4),
        "train": (("train", "--dataset", tiny_dataset, "--output", "{out}", *TRAIN), 60),
    }
    plan = [("encode", rng.randint(1, 13)), ("index", rng.randint(1, 4)), ("train", rng.randint(1, 60)),
            *[(name, rng.randint(1, commands[name][1])) for name in rng.sample(sorted(commands), 3)]]
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
        elif name == "index":
            assert index_fingerprint(out, queries) == index_reference, (name, arrival)
        else:
            assert model_of(out)[:2] == trained_reference[:2], (name, arrival)
        shutil.rmtree(out)


def test_every_fault_point_is_armed_by_a_test():
    named = Path(__file__).read_text() + (Path(__file__).parent / "test_reliability.py").read_text()
    assert [p for p in POINTS if f'"{p}:' not in named] == []
