"""The block-max engine and document reordering: exact against an independent brute force on random
tables full of ties, against Lucene on every Cranfield and SciFact query, and refusing files that do
not match their index."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from splade_lucene.core.errors import SettingError
from splade_lucene.experiments.experiment import dataset_files
from splade_lucene.formats.collection import read_queries
from splade_lucene.indexing.blockmax import BLOCK_DIR, BlockMaxError, BlockMaxIndex, write_blockmax
from splade_lucene.indexing.impacts import ImpactTable
from splade_lucene.indexing.reorder import bisection_order, log_gap_cost
from splade_lucene.search.searcher import Searcher

KS = (10, 100, 1000)


def brute_force(docs: list[dict[int, int]], id_rank: np.ndarray, query: dict[int, int], k: int):
    """The top k (row, score) by score, then id rank: plain Python, no code of the package."""
    scored = []
    for row, doc in enumerate(docs):
        score = sum(w * doc.get(t, 0) for t, w in query.items())
        if score > 0:
            scored.append((-score, int(id_rank[row]), row, score))
    return [(row, float(score)) for _, _, row, score in sorted(scored)[:k]]


def table_of(docs: list[dict[int, int]], n_terms: int, id_rank: np.ndarray) -> ImpactTable:
    offsets, rows, impacts = [0], [], []
    for t in range(n_terms):
        for row, doc in enumerate(docs):
            if t in doc:
                rows.append(row)
                impacts.append(doc[t])
        offsets.append(len(rows))
    return ImpactTable.from_postings([f"t{t}" for t in range(n_terms)], np.array(offsets), np.array(rows, np.int32),
                                     np.array(impacts, np.int32), id_rank)


@st.composite
def collections(draw):
    n_terms = draw(st.integers(1, 12))
    n_docs = draw(st.integers(1, 120))
    top = draw(st.sampled_from([1, 2, 3, 300]))  # few impact values: many ties
    docs = [draw(st.dictionaries(st.integers(0, n_terms - 1), st.integers(1, top), max_size=n_terms))
            for _ in range(n_docs)]
    id_rank = np.array(draw(st.permutations(range(n_docs))), dtype=np.int32)
    order = np.array(draw(st.permutations(range(n_docs))), dtype=np.int32)
    queries = draw(st.lists(st.dictionaries(st.integers(0, n_terms + 1), st.integers(1, 5), min_size=1, max_size=6),
                            min_size=1, max_size=5))
    return n_terms, docs, id_rank, order, queries, draw(st.sampled_from([1, 2, 3, 8, 64])), draw(
        st.sampled_from([1, 2, 3, 16]))


@settings(max_examples=150, deadline=None, derandomize=True)
@given(collections())
def test_blockmax_is_exact_on_random_tables_with_ties(case):
    n_terms, docs, id_rank, order, queries, block, group = case
    table = table_of(docs, n_terms, id_rank)
    for index in (BlockMaxIndex.from_table(table, order, block=block, group=group),
                  BlockMaxIndex.from_table(table, block=block, group=group)):
        for query in queries:
            terms = {f"t{t}": w for t, w in query.items()}
            for k in (1, 2, 5, len(docs), len(docs) + 3):
                assert index.top(terms, k) == brute_force(docs, id_rank, query, k), (query, k, block, group)


@settings(max_examples=40, deadline=None, derandomize=True)
@given(collections(), st.sampled_from([1.0, 0.9, 0.5, 0.05]), st.integers(1, 4))
def test_approximate_settings_return_true_scores_of_real_documents(case, alpha, query_terms):
    # whatever it misses, an approximate search returns documents with their exact scores, in order
    n_terms, docs, id_rank, order, queries, block, group = case
    table = table_of(docs, n_terms, id_rank)
    index = BlockMaxIndex.from_table(table, order, block=block, group=group)
    for query in queries:
        terms = {f"t{t}": w for t, w in query.items()}
        exact = brute_force(docs, id_rank, query, len(docs))
        got = index.top(terms, 5, alpha=alpha, query_terms=query_terms)
        assert len({row for row, _ in got}) == len(got) <= 5
        assert set(got) <= set(exact)  # real documents, their exact scores
        assert got == sorted(got, key=lambda hit: exact.index(hit))  # in the exact order
        if alpha == 1.0 and query_terms >= len(query):
            assert got == exact[:5]


def test_bisection_is_a_deterministic_permutation_that_groups_shared_terms():
    # two kinds of documents, interleaved: bisection puts each kind together
    rng = np.random.default_rng(7)
    docs = [rng.choice(np.arange(0, 50) if i % 2 else np.arange(50, 100), 12, replace=False) for i in range(256)]
    offsets = np.cumsum([0] + [len(d) for d in docs])
    terms = np.concatenate(docs).astype(np.int32)
    order = bisection_order(offsets, terms, 100)
    assert sorted(order.tolist()) == list(range(256))
    assert np.array_equal(order, bisection_order(offsets, terms, 100))
    kinds = np.array([i % 2 for i in order])
    assert (kinds[:128] == kinds[0]).all() and (kinds[128:] != kinds[0]).all()
    # term-major postings of the same documents: BP's order codes them in fewer bits than the input's
    t_rows = [[i for i, d in enumerate(docs) if t in d] for t in range(100)]
    t_offsets = np.cumsum([0] + [len(r) for r in t_rows])
    t_docs = np.concatenate(t_rows).astype(np.int32)
    assert log_gap_cost(order, t_offsets, t_docs) < 0.7 * log_gap_cost(np.arange(256), t_offsets, t_docs)
    impacts = np.concatenate([np.arange(len(d), 0, -1) for d in docs])
    strongest = bisection_order(offsets, terms, 100, doc_impacts=impacts, terms_per_doc=4)
    assert sorted(strongest.tolist()) == list(range(256))


def blockmax_copy(index, tmp_path, **options):
    """A copy of a built index with its block-max engine written."""
    copy = tmp_path / "index"
    shutil.copytree(index, copy)
    write_blockmax(copy, **options)
    return copy


@pytest.mark.parametrize("order", ["bp", "index"])
def test_every_cranfield_query_gets_lucenes_hits(cranfield, tmp_path, order):
    index = blockmax_copy(cranfield["vector_index"], tmp_path, order=order)
    with Searcher(index, pretokenized=True, engine="blockmax") as ours, \
            Searcher(index, pretokenized=True, engine="lucene") as lucene:
        for k in KS:
            assert ours.batch_search_terms(cranfield["encoded"], k=k) == lucene.batch_search_terms(
                cranfield["encoded"], k=k), k
    meta = json.loads((index / BLOCK_DIR / "blockmax.json").read_text())
    assert meta["order"]["method"] == order and meta["docs"] == 1400
    perm = np.load(index / BLOCK_DIR / "perm.npy")
    assert sorted(perm.tolist()) == list(range(1400))
    assert (order == "index") == np.array_equal(perm, np.arange(1400))


def test_every_scifact_query_gets_lucenes_hits(reproduced, datasets, tmp_path):
    out, proc, _ = reproduced
    assert proc.returncode == 0, proc.stderr[-2000:]
    index = blockmax_copy(out / "scifact" / "splade" / "index", tmp_path)
    _, queries_file, _ = dataset_files(datasets / "scifact", "test")
    texts = read_queries(queries_file)
    with Searcher(index, engine="blockmax") as ours, Searcher(index, pretokenized=True, engine="lucene") as lucene:
        encoded = dict(zip([q for q, _ in texts], ours.query_encoder.encode_batch([t for _, t in texts])))
        assert len(encoded) == 1109
        for k in KS:
            assert ours.batch_search_terms(encoded, k=k) == lucene.batch_search_terms(encoded, k=k), k


def test_auto_takes_blockmax_only_where_it_measured_faster(cranfield, tmp_path, monkeypatch):
    from splade_lucene.search import engines

    index = blockmax_copy(cranfield["vector_index"], tmp_path, order="index")
    with Searcher(index, pretokenized=True) as auto, Searcher(index, pretokenized=True, engine="memory") as memory:
        assert auto.engine_for(10, 50) == "memory"  # 1,400 documents: below BLOCKMAX_MIN_DOCS
        assert memory.engine_for(10, 50) == "memory"
        monkeypatch.setattr(engines, "BLOCKMAX_MIN_DOCS", 1000)
        assert auto.engine_for(10, 50) == "blockmax"
        assert auto.engine_for(11, 50) == auto.engine_for(10, 101) == "memory"
        assert memory.engine_for(10, 50) == "memory"
        for k in (1, 10, 100):
            assert auto.batch_search_terms(cranfield["encoded"], k=k) == memory.batch_search_terms(
                cranfield["encoded"], k=k)
    with Searcher(index, pretokenized=True, engine="blockmax") as blockmax:
        assert blockmax.engine_for(1000, 500) == "blockmax"


def test_files_that_do_not_match_the_index_are_refused(cranfield, tmp_path):
    index = blockmax_copy(cranfield["vector_index"], tmp_path, order="index")
    folder = index / BLOCK_DIR
    BlockMaxIndex.load(index)
    # a changed byte (same size): the CRC names the file
    saved = (folder / "fwd_imp.npy").read_bytes()
    changed = bytearray(saved)
    changed[-1] ^= 1
    (folder / "fwd_imp.npy").write_bytes(bytes(changed))
    with pytest.raises(BlockMaxError, match="fwd_imp.npy has changed"):
        Searcher(index, pretokenized=True, engine="blockmax")
    # truncated
    (folder / "fwd_imp.npy").write_bytes(saved[:-10])
    with pytest.raises(BlockMaxError, match="fwd_imp.npy is .* bytes, not the"):
        BlockMaxIndex.load(index)
    (folder / "fwd_imp.npy").write_bytes(saved)
    # missing
    (folder / "perm.npy").rename(folder / "perm.npy.away")
    with pytest.raises(BlockMaxError, match="perm.npy is missing"):
        BlockMaxIndex.load(index)
    (folder / "perm.npy.away").rename(folder / "perm.npy")
    BlockMaxIndex.load(index)
    # from another build: the impact table rewritten (another build of the same documents)
    table_meta = index / "impacts" / "table.json"
    meta = json.loads(table_meta.read_text())
    table_meta.write_text(json.dumps({**meta, "bytes": meta["bytes"] + 1}, indent=2) + "\n")
    with pytest.raises(BlockMaxError, match="built from other postings"):
        Searcher(index, pretokenized=True, engine="auto")
    shutil.rmtree(folder)
    with pytest.raises(BlockMaxError, match="has no block-max index"):
        Searcher(index, pretokenized=True, engine="blockmax")


def test_blocks_cut_again_on_the_order_already_written(cranfield, tmp_path):
    index = tmp_path / "index"
    shutil.copytree(cranfield["vector_index"], index)
    with pytest.raises(BlockMaxError, match="has no block-max index"):
        write_blockmax(index, order="keep")
    write_blockmax(index, block=4)
    first = np.load(index / BLOCK_DIR / "perm.npy")
    write_blockmax(index, block=16, order="keep")
    meta = json.loads((index / BLOCK_DIR / "blockmax.json").read_text())
    assert meta["block"] == 16 and meta["order"]["method"] == "bp" and meta["order"]["kept_from_block"] == 4
    assert np.array_equal(np.load(index / BLOCK_DIR / "perm.npy"), first)
    with Searcher(index, pretokenized=True, engine="blockmax") as ours, \
            Searcher(index, pretokenized=True, engine="lucene") as lucene:
        for k in KS:
            assert ours.batch_search_terms(cranfield["encoded"], k=k) == lucene.batch_search_terms(
                cranfield["encoded"], k=k), k
    with pytest.raises(SettingError, match="order must be one of bp, index, keep"):
        write_blockmax(index, order="random")


def test_settings_are_checked_and_never_fall_back(cranfield, tmp_path):
    index = cranfield["vector_index"]
    for bad in ({"alpha": 0}, {"alpha": 1.5}, {"alpha": float("nan")}, {"query_terms": 0}):
        with pytest.raises(SettingError, match="alpha must be in \\(0, 1\\]|query_terms must be at least 1"):
            Searcher(index, pretokenized=True, engine="blockmax", **bad)
    with pytest.raises(SettingError, match="settings of engine='blockmax'"):
        Searcher(index, pretokenized=True, engine="memory", alpha=0.9)
    with pytest.raises(SettingError, match="block must be"):
        write_blockmax(index, block=0)
    for bad in (0, 4097, True):
        with pytest.raises(SettingError, match="group must be 1 to 4,096 blocks"):
            BlockMaxIndex.load(index, group=bad)
    # asked for, not there: an error naming the index, not a quiet search on another engine
    with pytest.raises(BlockMaxError, match="has no block-max index"):
        Searcher(index, pretokenized=True, engine="blockmax")


def test_cli_builds_searches_and_records_approximate_settings(cranfield, tmp_path):
    index = tmp_path / "index"
    shutil.copytree(cranfield["vector_index"], index)
    queries = tmp_path / "queries.jsonl"
    queries.write_text("".join(json.dumps({"id": q, "vector": t}) + "\n" for q, t in cranfield["encoded"].items()))
    cli = [sys.executable, "-m", "splade_lucene", "--quiet"]
    done = subprocess.run([*cli, "blockmax", "--index", str(index), "--block", "4"], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert "bytes a posting" in done.stdout and not list(index.glob(f"{BLOCK_DIR}.writing-*"))
    runs = {}
    for name, options in {"blockmax": ["--engine", "blockmax"], "lucene": ["--engine", "lucene"],
                          "approx": ["--engine", "blockmax", "--alpha", "0.5", "--query-terms", "8"]}.items():
        run = tmp_path / f"{name}.trec"
        proc = subprocess.run([*cli, "search", "--index", str(index), "--queries", str(queries), "--pretokenized",
                               "--output", str(run), "--k", "100", *options], capture_output=True, text=True)
        assert proc.returncode == 0, proc.stderr
        runs[name] = run.read_text()
    assert runs["blockmax"] == runs["lucene"] and runs["approx"] != runs["lucene"]
    meta = json.loads((tmp_path / "approx.trec.json").read_text())
    assert meta["engine"] == "blockmax" and meta["alpha"] == 0.5 and meta["query_terms"] == 8
    assert json.loads((tmp_path / "lucene.trec.json").read_text())["alpha"] == 1.0
    bad = subprocess.run([*cli, "search", "--index", str(index), "--queries", str(queries), "--pretokenized",
                          "--output", str(tmp_path / "bad.trec"), "--alpha", "2"], capture_output=True, text=True)
    assert bad.returncode == 2 and "alpha must be in (0, 1]" in bad.stderr and not (tmp_path / "bad.trec").exists()
