"""Search across shards: Cranfield cut into 3 shard indexes, searched as one (locally), gives the run
of the index built in one go byte for byte; a failing shard is retried, then named, and no run is
written; the same with one Ray actor per shard on a local cluster."""

from __future__ import annotations

import shutil
import subprocess
import sys

import pytest
from conftest import need_module

from splade_lucene.core.errors import SettingError
from splade_lucene.formats.metadata import IncompatibleIndexError
from splade_lucene.formats.trec import run_lines
from splade_lucene.indexing.build import set_query_mode
from splade_lucene.search.searcher import Searcher
from splade_lucene.search.shards import ShardedSearcher, ShardError, open_searcher

K = 1000


def run_text(results) -> str:
    return "".join(run_lines(results))


@pytest.fixture(scope="module")
def one_go(cranfield):
    """The run of the index built in one go, every Cranfield query at k = 10 and 1000."""
    with Searcher(cranfield["vector_index"], cranfield["query_encoder"]) as searcher:
        return {k: run_text(searcher.batch_search_terms(cranfield["encoded"], k=k)) for k in (10, K)}


@pytest.mark.parametrize("engine,prune", [("auto", None), ("auto", True), ("auto", False), ("lucene", None)])
def test_local_shards_give_the_one_index_run_byte_for_byte(cranfield, shards, one_go, engine, prune):
    with open_searcher(shards["indexes"], cranfield["query_encoder"], engine=engine, prune=prune) as searcher:
        assert isinstance(searcher, ShardedSearcher) and searcher.num_docs == 1400
        for k in (10, K):
            assert run_text(searcher.batch_search_terms(cranfield["encoded"], k=k, threads=2)) == one_go[k]
        qid, text = cranfield["queries"][0]
        assert searcher.search(text, k=10) == searcher.batch_search_terms({qid: cranfield["encoded"][qid]}, 10)[qid]


def test_a_failing_local_shard_is_retried_then_named(cranfield, shards, one_go, monkeypatch):
    with open_searcher(shards["indexes"], cranfield["query_encoder"]) as searcher:
        shard = searcher._shards[1]
        real = shard.batch_ranked_terms
        calls = []

        def flaky(*args, **kwargs):
            calls.append(1)
            if len(calls) == 1:
                raise RuntimeError("lost the disk for a moment")
            return real(*args, **kwargs)

        monkeypatch.setattr(shard, "batch_ranked_terms", flaky)
        assert run_text(searcher.batch_search_terms(cranfield["encoded"], k=K)) == one_go[K]
        assert len(calls) == 2

        def broken(*args, **kwargs):
            raise RuntimeError("the disk is gone")

        monkeypatch.setattr(shard, "batch_ranked_terms", broken)
        with pytest.raises(ShardError, match=f"shard {shards['indexes'][1]} failed 3 times: RuntimeError: the disk"):
            searcher.batch_search_terms(cranfield["encoded"], k=K)


def test_one_door_opens_one_index_or_several(cranfield, shards):
    with open_searcher([shards["indexes"][0]], cranfield["query_encoder"]) as one:
        assert type(one) is Searcher and one.num_docs < 1400
    with pytest.raises(SettingError, match="ShardedSearcher"):
        Searcher(shards["indexes"], cranfield["query_encoder"])


def test_shards_must_not_share_documents_nor_settings(cranfield, shards, tmp_path):
    first = shards["indexes"][0]
    copy = tmp_path / "copy-of-shard-0"
    shutil.copytree(first, copy)
    with pytest.raises(IncompatibleIndexError, match="is in both"):
        ShardedSearcher([first, copy], cranfield["query_encoder"])
    with pytest.raises(ValueError, match="named twice"):
        ShardedSearcher([first, first], cranfield["query_encoder"])
    set_query_mode(copy, "idf")
    with pytest.raises(IncompatibleIndexError, match="differ in query_mode"):
        ShardedSearcher([shards["indexes"][1], copy])
    with pytest.raises(IncompatibleIndexError, match="idf query tables are per shard"):
        ShardedSearcher([copy], pretokenized=True)
    with pytest.raises(FileNotFoundError, match="does not exist"):
        ShardedSearcher([first, tmp_path / "nowhere"], cranfield["query_encoder"])


def test_the_cli_searches_shards_as_one(cranfield, shards, tmp_path):
    queries = cranfield["base"] / "queries.tsv"
    queries.write_text("".join(f"{q}\t{t}\n" for q, t in cranfield["queries"]))
    runs = {}
    for name, indexes in (("shards", [str(i) for i in shards["indexes"]]), ("one", [str(cranfield["vector_index"])])):
        out = tmp_path / f"{name}.trec"
        done = subprocess.run([sys.executable, "-m", "splade_lucene", "search", "--index", *indexes, "--queries",
                               str(queries), "--output", str(out), "--k", "100", "--quiet"],
                              capture_output=True, text=True)
        assert done.returncode == 0, done.stderr
        runs[name] = out.read_bytes()
    assert runs["shards"] == runs["one"] and runs["one"].count(b"\n") > 20_000
    out = tmp_path / "never.trec"
    done = subprocess.run([sys.executable, "-m", "splade_lucene", "search", "--index", str(shards["indexes"][0]),
                           str(tmp_path / "nowhere"), "--queries", str(queries), "--output", str(out), "--quiet"],
                          capture_output=True, text=True)
    assert done.returncode != 0 and "nowhere does not exist" in done.stderr and not out.exists()


@pytest.fixture(scope="module")
def cluster():
    """A local Ray cluster of 3 CPUs (one actor per shard) for this module."""
    need_module("ray", "ray")
    from splade_lucene.encoding.distributed import start_ray, stop_ray

    ray, started = start_ray(workers=3)
    assert started
    yield ray
    stop_ray(ray)


def test_ray_shards_give_the_one_index_run_and_survive_a_lost_actor(cluster, cranfield, shards, one_go, tmp_path):
    with open_searcher(shards["indexes"], cranfield["query_encoder"], executor="ray") as searcher:
        assert searcher.num_docs == 1400
        assert run_text(searcher.batch_search_terms(cranfield["encoded"], k=K)) == one_go[K]
        cluster.kill(searcher._shards[2], no_restart=True)  # its process is gone: started again, resent
        assert run_text(searcher.batch_search_terms(cranfield["encoded"], k=10)) == one_go[10]

    # a shard whose index is gone for good: retried, then named, and nothing returned
    lost = tmp_path / "shard-lost"
    shutil.copytree(shards["indexes"][2], lost)
    with ShardedSearcher([*shards["indexes"][:2], lost], cranfield["query_encoder"], executor="ray",
                         retries=1) as searcher:
        shutil.rmtree(lost)
        cluster.kill(searcher._shards[2], no_restart=True)
        with pytest.raises(ShardError, match=f"shard {lost} failed 2 times"):
            searcher.batch_search_terms(cranfield["encoded"], k=10)
