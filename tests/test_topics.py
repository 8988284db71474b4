"""Pre-encoded topics for plain Anserini: `encode-queries` on Cranfield, Anserini's own
SearchCollection run on them (the command the README shows), and its run file equal to ours for
every query at k=1000; the topics readers' bad input."""

from __future__ import annotations

import subprocess
import sys
from collections import defaultdict

import pytest

from splade_lucene.formats.collection import InputError, read_encoded_queries, topic_line


def by_query(path):
    runs = defaultdict(list)
    for line in open(path):
        qid, _, docid, rank, score, _ = line.split()
        runs[qid].append((docid, rank, score))
    return dict(runs)


def test_topic_lines_round_trip(tmp_path):
    path = tmp_path / "topics.tsv"
    path.write_text(topic_line("q1", {"flow": 3, "##ing": 1}) + topic_line("q2", {}))
    assert path.read_text() == "q1\tflow flow flow ##ing\nq2\t\n"
    assert read_encoded_queries(path) == [("q1", {"flow": 3, "##ing": 1}), ("q2", {})]


@pytest.mark.parametrize("content, message", [
    ('{"id": "q1", "vector": {"a": 1.5}}\n', "topics.jsonl:1: the weight of 'a' must be a positive integer"),
    ('{"id": "q1", "vector": {"a": 2}}\n{"id": "q2", "vector": {"b": 0}}\n', "topics.jsonl:2: the weight of 'b'"),
    ('{"id": "q1", "vector": {"a b": 2}}\n', "without whitespace"),
    ('{"id": "q1", "vector": [1]}\n', "topics.jsonl:1: expected"),
    ('{"id": "q 1", "vector": {"a": 1}}\n', "topics.jsonl:1: field 'id' 'q 1' holds SPACE"),
    ('{"id": "q1", "vector": {"a": 1}}\n{"id": "q1", "vector": {"a": 1}}\n', "duplicate query id 'q1'"),
])
def test_bad_json_topics(tmp_path, content, message):
    path = tmp_path / "topics.jsonl"
    path.write_text(content)
    with pytest.raises(InputError, match=message):
        read_encoded_queries(path)


def test_bad_tsv_topics(tmp_path):
    path = tmp_path / "topics.tsv"
    path.write_text("q1\ta a b\nq2 a b\n")
    with pytest.raises(InputError, match="topics.tsv:2: expected 'qid<TAB>term term"):
        read_encoded_queries(path)


def test_anserini_alone_gives_our_run_on_cranfield(cranfield, tmp_path):
    from splade_lucene.core import java as _java
    from splade_lucene.formats.trec import write_run
    from splade_lucene.search.searcher import Searcher
    from splade_lucene.search.topics import anserini_search_command

    index = cranfield["vector_index"]
    topics = tmp_path / "topics.tsv"
    queries = tmp_path / "queries.tsv"
    queries.write_text("".join(f"{q}\t{t}\n" for q, t in cranfield["queries"]))
    proc = subprocess.run([sys.executable, "-m", "splade_lucene", "--quiet", "encode-queries", "--index", str(index),
                           "--queries", str(queries), "--output", str(topics)], capture_output=True, text=True,
                          timeout=900)
    assert proc.returncode == 0, proc.stderr
    assert read_encoded_queries(topics) == list(cranfield["encoded"].items())
    # Anserini's SearchCollection, with the Java and fatjar the packages ship: no project code runs
    _java.configure_environment()
    cmd = anserini_search_command(index, topics, tmp_path / "anserini.trec", hits=1000)
    assert "splade_lucene" not in " ".join(cmd)
    java = subprocess.run(cmd, capture_output=True, text=True, timeout=900)
    assert java.returncode == 0, java.stderr[-2000:]
    with Searcher(index, cranfield["query_encoder"]) as s:
        write_run(s.batch_search(cranfield["queries"], k=1000), tmp_path / "ours.trec")
    theirs, ours = by_query(tmp_path / "anserini.trec"), by_query(tmp_path / "ours.trec")
    assert len(ours) == 225 and theirs.keys() == ours.keys()
    assert sum(len(h) for h in ours.values()) > 200_000
    for qid in ours:
        assert theirs[qid] == ours[qid], qid  # documents, ranks and scores as printed
    # and our own search on the same topics (no query encoder) writes the same run
    proc = subprocess.run([sys.executable, "-m", "splade_lucene", "--quiet", "search", "--index", str(index),
                           "--queries", str(topics), "--pretokenized", "--output", str(tmp_path / "pre.trec")],
                          capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stderr
    assert (tmp_path / "pre.trec").read_text() == (tmp_path / "ours.trec").read_text()
