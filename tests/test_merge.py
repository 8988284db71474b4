"""Sharded indexing: shard indexes merged by Lucene's addIndexes search exactly like one index."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from splade_lucene.formats.metadata import METADATA_FILE, IncompatibleIndexError, IndexBuildError, read_metadata
from splade_lucene.indexing.build import build_index, merge_indexes, parse_shard
from splade_lucene.indexing.lucene import lucene_stats
from splade_lucene.search.encoders import QueryEncoder
from splade_lucene.search.searcher import Searcher


def runs(index: Path, queries, engine: str) -> dict:
    with Searcher(index, engine=engine) as searcher:
        assert searcher.engine == engine
        found = searcher.batch_search_terms(queries, k=100)
    return {q: [(h.docid, h.score) for h in hits] for q, hits in found.items()}


def test_shards_hold_their_part_files(shards):
    sizes = [read_metadata(i)["documents"] for i in shards["indexes"]]
    per_part = -(-len(shards["lines"]) // 5)
    assert sizes == [2 * per_part, 2 * per_part, len(shards["lines"]) - 4 * per_part]
    meta = read_metadata(shards["indexes"][0])
    assert meta["shard"] == "0/3"
    assert [Path(f).name for f in meta["collection_files"]] == ["part-00000.jsonl", "part-00003.jsonl"]


def test_merged_index_searches_exactly_like_one_built_in_one_go(cranfield, shards):
    merged = merge_indexes(shards["indexes"], shards["base"] / "merged", quiet=True)
    one_go = cranfield["vector_index"]
    assert merged.documents == 1400
    assert lucene_stats(merged.index_dir) == lucene_stats(one_go)
    meta = read_metadata(merged.index_dir)
    assert [p["shard"] for p in meta["parts"]] == ["0/3", "1/3", "2/3"]
    assert [p["index"] for p in meta["parts"]] == [str(i) for i in shards["indexes"]]
    assert sum(p["documents"] for p in meta["parts"]) == 1400
    assert meta["model_sha256"] == read_metadata(one_go)["model_sha256"]
    queries = cranfield["encoded"]
    for engine in ("memory", "lucene"):
        assert runs(merged.index_dir, queries, engine) == runs(one_go, queries, "lucene")


def test_merged_index_opens_in_plain_pyserini(cranfield, shards):
    """The CLI merge, force-merged to one segment, read by Pyserini's LuceneImpactSearcher."""
    out = shards["base"] / "merged-cli"
    proc = subprocess.run([sys.executable, "-m", "splade_lucene", "--quiet", "merge", "--index", str(out),
                           "--segments", "1", *map(str, shards["indexes"])], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    assert "merged 3 indexes (1400 documents)" in proc.stdout
    assert "forceMerge(1)" in read_metadata(out)["merged_with"]
    from splade_lucene.indexing.lucene import lucene_reader

    with lucene_reader(out) as reader:
        assert reader.leaves().size() == 1
    from pyserini.search.lucene import LuceneImpactSearcher

    queries = cranfield["queries"][:25]
    theirs = LuceneImpactSearcher(str(out), QueryEncoder.from_index(out), min_idf=-1)
    got = theirs.batch_search([t for _, t in queries], [q for q, _ in queries], k=100, threads=1)
    with Searcher(cranfield["vector_index"]) as one_go:
        ours = one_go.batch_search(queries, k=100)
    for qid, _ in queries:
        assert [(h.docid, h.score) for h in got[qid]] == [(h.docid, h.score) for h in ours[qid]]


def test_merge_refuses_mismatched_overlapping_or_repeated_parts(shards, tmp_path):
    first, second = shards["indexes"][:2]
    with pytest.raises(ValueError, match="named twice"):
        merge_indexes([first, first], tmp_path / "m1", quiet=True)
    copy = tmp_path / "copy-of-shard-0"
    shutil.copytree(first, copy)
    with pytest.raises(IndexBuildError, match="is in both"):
        merge_indexes([first, copy], tmp_path / "m2", quiet=True)
    meta = json.loads((copy / METADATA_FILE).read_text())
    (copy / METADATA_FILE).write_text(json.dumps({**meta, "scale": 50.0}))
    with pytest.raises(IncompatibleIndexError, match="differ in scale"):
        merge_indexes([second, copy], tmp_path / "m3", quiet=True)
    with pytest.raises(FileNotFoundError):
        merge_indexes([second, tmp_path / "nowhere"], tmp_path / "m4", quiet=True)
    (tmp_path / "taken").mkdir()
    with pytest.raises(FileExistsError):
        merge_indexes([first, second], tmp_path / "taken", quiet=True)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["copy-of-shard-0", "taken"]  # nothing half-written


def test_shard_arguments_are_checked(shards, tmp_path):
    assert parse_shard("1/3") == (1, 3)
    for bad in ("3/3", "-1/2", "x", "1/0", "1"):
        with pytest.raises(ValueError, match="shard"):
            parse_shard(bad)
    with pytest.raises(IndexBuildError, match="holds no part file"):
        build_index(shards["collection"], tmp_path / "empty-shard", shard="5/6", quiet=True)
    assert not any(tmp_path.iterdir())


def test_merge_without_the_parts_collections_keeps_the_index_and_says_so(cranfield, shards, tmp_path):
    moved = []
    for index in shards["indexes"][:2]:
        copy = tmp_path / index.name
        shutil.copytree(index, copy)
        meta = json.loads((copy / METADATA_FILE).read_text())
        meta["collection_files"] = [str(tmp_path / "gone" / Path(f).name) for f in meta["collection_files"]]
        (copy / METADATA_FILE).write_text(json.dumps(meta))
        moved.append(copy)
    with pytest.warns(UserWarning, match="no impact table .* is gone; searches will go through Lucene"):
        merged = merge_indexes(moved, tmp_path / "merged", quiet=True)
    assert not (merged.index_dir / "impacts").exists()
    with Searcher(merged.index_dir) as searcher:
        assert searcher.engine == "lucene"
        assert len(searcher.docids) == merged.documents == sum(read_metadata(i)["documents"] for i in moved)


def test_merged_idf_shards_get_the_idf_of_the_whole(cranfield, shards, tmp_path):
    """A shard's idf table is its own documents'; the merge recomputes it from the merged postings, so
    it equals the table of the index built in one go. Shards of different query modes are refused.
    (The shards are switched to idf in place, as set_query_mode does for any built index.)"""
    from splade_lucene.indexing.build import set_query_mode

    idf = []
    for i, shard in enumerate(shards["indexes"]):
        shutil.copytree(shard, tmp_path / f"idf-{i}")
        assert set_query_mode(tmp_path / f"idf-{i}", "idf")["query_mode"] == "idf"
        idf.append(tmp_path / f"idf-{i}")
    shutil.copytree(cranfield["vector_index"], tmp_path / "idf-one")
    one_go = tmp_path / "idf-one"
    set_query_mode(one_go, "idf")
    tables = {read_metadata(i)["query_table_sha256"] for i in idf}
    merged = merge_indexes(idf, tmp_path / "idf-merged", quiet=True).index_dir
    meta = read_metadata(merged)
    assert meta["query_mode"] == "idf" and meta["query_table_sha256"] == read_metadata(one_go)["query_table_sha256"]
    assert meta["query_table_sha256"] not in tables
    with Searcher(merged) as a, Searcher(one_go) as b:
        texts = cranfield["queries"][:25]
        assert a.batch_search(texts, k=50) == b.batch_search(texts, k=50)
    with pytest.raises(IncompatibleIndexError, match="different query modes"):
        merge_indexes([idf[0], shards["indexes"][1]], tmp_path / "mixed", quiet=True)
    assert not (tmp_path / "mixed").exists()
    # and back: a full index again, its table gone
    meta = set_query_mode(one_go, "full")
    assert meta["query_mode"] == "full" and "query_table_sha256" not in meta
    assert not (one_go / "query-encoder").exists()
    assert not [p.name for p in one_go.iterdir() if p.name.startswith(".")]
