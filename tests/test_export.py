"""`export --to milvus`: an index's document vectors in Milvus Lite (the embedded Milvus, a real
library), searched with `QueryEncoder.encode_ids`, give the index's top 10 for every query, ties aside.

Milvus's client runs in child processes: it starts gRPC threads, after which a process that forks
(Anserini's indexer, the servers of other tests) may abort in the child."""

from __future__ import annotations

import json
import subprocess
import sys

from conftest import need_module

SEARCH = """
import json, sys
from pymilvus import MilvusClient
from splade_lucene.search.encoders import QueryEncoder
index, uri, queries = sys.argv[1], sys.argv[2], json.loads(sys.argv[3])
encoder = QueryEncoder.from_index(index)
client = MilvusClient(uri)
client.load_collection("cranfield")  # a collection opened by another process starts released
out = {}
for qid, text in queries:
    found = client.search("cranfield", [encoder.encode_ids(text)], anns_field="vector", limit=10,
                          search_params={"metric_type": "IP"})[0]
    out[qid] = [[h["id"], h["distance"]] for h in found]
client.close()
print(json.dumps(out))
"""


def same_top(ours: list[tuple[str, float]], theirs: list[tuple[str, float]]) -> bool:
    """The same scores, and the same documents above the lowest of them (documents tied at the
    k-th score may differ: each engine breaks ties its own way)."""
    if sorted(s for _, s in ours) != sorted(s for _, s in theirs):
        return False
    last = min((s for _, s in ours), default=0)
    return {d for d, s in ours if s > last} == {d for d, s in theirs if s > last}


def run(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, *args], capture_output=True, text=True, timeout=1200)


def test_milvus_lite_answers_as_the_index(cranfield, tmp_path):
    need_module("pymilvus", "milvus")
    from splade_lucene.search.searcher import Searcher

    index, uri = str(cranfield["vector_index"]), str(tmp_path / "cranfield.db")
    export = ["-m", "splade_lucene", "export", "--index", index, "--to", "milvus", "--uri", uri,
              "--collection", "cranfield"]
    done = run(*export)
    assert done.returncode == 0 and "exported 1398 documents" in done.stdout, done.stderr  # two empty ones left out
    again = run(*export)
    assert again.returncode == 2 and "--overwrite" in again.stderr
    found = run("-c", SEARCH, index, uri, json.dumps(cranfield["queries"]))
    assert found.returncode == 0, found.stderr
    theirs = json.loads(found.stdout.strip().splitlines()[-1])
    with Searcher(index, cranfield["query_encoder"]) as searcher:
        for qid, _ in cranfield["queries"]:
            ours = searcher.ranked_terms(cranfield["encoded"][qid], 10)
            assert same_top(ours, [tuple(h) for h in theirs[qid]]), (qid, ours, theirs[qid])
    assert run(*export, "--overwrite").returncode == 0
