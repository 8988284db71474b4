"""`export --to milvus`: an index's document vectors in Milvus Lite (the embedded Milvus, a real
library), searched with `QueryEncoder.encode_ids`, give the index's top 10 for every query, ties aside."""

from __future__ import annotations

import pytest
from conftest import need_module

from splade_lucene import cli
from splade_lucene.core.errors import OutputExistsError


def same_top(ours: list[tuple[str, float]], theirs: list[tuple[str, float]]) -> bool:
    """The same scores, and the same documents above the lowest of them (documents tied at the
    k-th score may differ: each engine breaks ties its own way)."""
    if sorted(s for _, s in ours) != sorted(s for _, s in theirs):
        return False
    last = min((s for _, s in ours), default=0)
    return {d for d, s in ours if s > last} == {d for d, s in theirs if s > last}


def test_milvus_lite_answers_as_the_index(cranfield, tmp_path, capsys):
    need_module("pymilvus", "milvus")
    from pymilvus import MilvusClient

    from splade_lucene.indexing.export import export_milvus
    from splade_lucene.search.searcher import Searcher

    index, uri = str(cranfield["vector_index"]), str(tmp_path / "cranfield.db")
    assert cli.main(["export", "--index", index, "--to", "milvus", "--uri", uri, "--collection", "cranfield"]) == 0
    assert "exported 1398 documents" in capsys.readouterr().out  # its two empty documents left out
    with pytest.raises(OutputExistsError, match="--overwrite"):
        export_milvus(index, uri, "cranfield")
    client = MilvusClient(uri)
    try:
        with Searcher(index, cranfield["query_encoder"]) as searcher:
            for qid, text in cranfield["queries"]:
                ours = searcher.ranked_terms(cranfield["encoded"][qid], 10)
                found = client.search("cranfield", [searcher.query_encoder.encode_ids(text)], anns_field="vector",
                                      limit=10, search_params={"metric_type": "IP"})[0]
                theirs = [(h["id"], h["distance"]) for h in found]
                assert same_top(ours, theirs), (qid, ours, theirs)
    finally:
        client.close()
    assert export_milvus(index, uri, "cranfield", overwrite=True)["documents"] == 1398
