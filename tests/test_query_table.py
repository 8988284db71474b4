"""Inference-free (doc-only) queries: the table's pure parts, and a real index built for them
(Cranfield): the table stored in the index, model-free query encoding, exact search on both engines
and through Pyserini, and every mismatch refused."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

from splade_lucene.indexing.query_table import (
    FOLDER,
    TABLE_FILE,
    QueryTableError,
    TableQueryEncoder,
    check_table,
    idf_weights,
    load_table,
    save_table,
    sha256_table,
    table_vector,
)


def test_idf_is_lucene_bm25_idf_and_zero_for_absent_terms():
    w = idf_weights(np.array([0, 1, 10, 100]), 100)
    assert w[0] == 0
    assert w[1] == pytest.approx(math.log(1 + (100 - 1 + 0.5) / 1.5), rel=1e-6)
    assert w[3] == pytest.approx(math.log(1 + 0.5 / 100.5), rel=1e-6) and w[3] > 0
    assert w.dtype == np.float32 and w[1] > w[2] > w[3]


def test_table_vector_counts_each_token_once_and_drops_special_and_zero():
    weights = np.array([9, 0.5, 0.0, 2.0, 3.0], dtype=np.float32)
    v = table_vector([3, 1, 3, 3, 0, 2, 4], weights, np.array([0, 4]))
    assert v.ids.tolist() == [1, 3] and v.weights.tolist() == [0.5, 2.0]


@pytest.mark.parametrize("bad, message", [
    (np.ones((2, 3), dtype=np.float32), "1-D float"), (np.array([1, 2]), "1-D float"),
    (np.array([1.0, -0.5]), ">= 0"), (np.array([1.0, np.nan]), "finite"), (np.ones(3), "3 entries but"),
])
def test_bad_tables_refused(bad, message):
    with pytest.raises(QueryTableError, match=message):
        check_table(bad, 4 if message == "3 entries but" else None, "t.npy")


def test_tables_are_read_without_pickle(tmp_path):
    np.save(tmp_path / "evil.npy", np.array([{"a": 1}], dtype=object), allow_pickle=True)
    with pytest.raises(QueryTableError, match="evil.npy"):
        load_table(tmp_path / "evil.npy")
    sha = save_table(np.array([0.0, 1.5], dtype=np.float32), tmp_path / "ok.npy")
    assert sha == sha256_table(load_table(tmp_path / "ok.npy", 2))


@pytest.fixture(scope="module")
def idf_index(cranfield, tmp_path_factory):
    from splade_lucene.indexing.build import build_index

    out = tmp_path_factory.mktemp("doc-only") / "index"
    build_index(cranfield["base"] / "vector", out, quiet=True, query_mode="idf")
    return out


def test_index_records_mode_and_table(idf_index, cranfield):
    from splade_lucene.indexing.lucene import document_frequencies

    meta = json.loads((idf_index / "splade_lucene.json").read_text())
    assert meta["query_mode"] == "idf" and meta["query_table_source"] == "index document frequencies"
    weights = load_table(idf_index / FOLDER / TABLE_FILE)
    assert meta["query_table_sha256"] == sha256_table(weights)
    enc = TableQueryEncoder.from_index(idf_index)
    vocab = enc.tokenizer.get_vocab()
    terms = ["flow", "wing", "boundary", "the", "##ing", "heat"]
    df = document_frequencies(idf_index, terms)
    for term in terms:
        assert weights[vocab[term]] == pytest.approx(math.log1p((1400 - df[term] + 0.5) / (df[term] + 0.5)), rel=1e-6)
    assert all(weights[i] == 0 for i in enc.tokenizer.all_special_ids)
    assert json.loads((cranfield["vector_index"] / "splade_lucene.json").read_text())["query_mode"] == "full"


def test_queries_are_the_distinct_tokens_weighted_by_the_table(idf_index):
    enc = TableQueryEncoder.from_index(idf_index)
    weights = load_table(idf_index / FOLDER / TABLE_FILE)
    text = "What is the flow of heat in the boundary layer of a flat plate? [SEP] flow"
    got = enc.encode(text)
    ids = enc.tokenizer(text, add_special_tokens=False)["input_ids"]
    special = set(enc.tokenizer.all_special_ids)
    want = {enc.tokenizer.convert_ids_to_tokens(i): round(float(weights[i]) * 100) for i in set(ids) - special}
    assert got == {t: w for t, w in want.items() if w > 0}
    assert "[SEP]" not in got and got["flow"] == round(float(weights[enc.tokenizer.vocab["flow"]]) * 100)
    assert enc.encode("") == {} and enc.encode(" ?! ") == {}


def test_search_is_exact_on_both_engines_and_through_pyserini(idf_index, cranfield):
    from pyserini.search.lucene import LuceneImpactSearcher

    from splade_lucene.search.encoders import QueryEncoder
    from splade_lucene.search.searcher import Searcher

    queries = cranfield["queries"]
    with Searcher(idf_index, engine="memory") as mem, Searcher(idf_index, engine="lucene") as luc:
        assert isinstance(mem.query_encoder, TableQueryEncoder)
        a = mem.batch_search(queries, k=100)
        b = luc.batch_search(queries, k=100)
        assert a == b
        encoded = dict(zip([q for q, _ in queries], mem.query_encoder.encode_batch([t for _, t in queries])))
    docs = cranfield["vectors"]
    for qid, hits in list(a.items())[:40]:
        for h in hits[:10]:
            exact = sum(w * docs[h.docid].get(t, 0) for t, w in encoded[qid].items())
            assert abs(h.score - exact) < 1e-3 * max(1, len(hits))
    pyserini = LuceneImpactSearcher(str(idf_index), QueryEncoder.from_index(idf_index), min_idf=-1)
    for qid, text in queries[:20]:
        theirs = [(h.docid, round(h.score, 4)) for h in pyserini.search(text, k=10)]
        assert theirs == [(h.docid, round(h.score, 4)) for h in a[qid][:10]]


def test_wrong_modes_refused(idf_index, cranfield, encoder, tmp_path):
    import shutil

    from splade_lucene.indexing.build import build_index
    from splade_lucene.search.encoders import QueryEncoder
    from splade_lucene.search.searcher import Searcher

    with pytest.raises(QueryTableError, match="inference-free"):
        Searcher(idf_index, QueryEncoder(encoder=encoder))
    with pytest.raises(QueryTableError, match="its queries take no model"):
        QueryEncoder.from_index(idf_index, model="splade-tiny")
    with pytest.raises(QueryTableError, match="query mode 'full'"):
        TableQueryEncoder.from_index(cranfield["vector_index"])
    with pytest.raises(QueryTableError, match="query_weights.npy"):
        build_index(cranfield["base"] / "vector", tmp_path / "learned", quiet=True, query_mode="learned")
    assert not (tmp_path / "learned").exists()
    from splade_lucene.core.errors import SettingError

    with pytest.raises(SettingError, match="query mode must be one of"):
        build_index(cranfield["base"] / "vector", tmp_path / "x", quiet=True, query_mode="bm25")
    # a table changed after the index was built no longer matches its recorded sha256
    copy = tmp_path / "copy"
    shutil.copytree(idf_index, copy)
    weights = load_table(copy / FOLDER / TABLE_FILE)
    weights[1000] += 1
    np.save(copy / FOLDER / TABLE_FILE, weights)
    with pytest.raises(QueryTableError, match="sha256"):
        TableQueryEncoder.from_index(copy)
    # a mode this version does not know (a newer writer, or an edited file) is named, with the known ones
    meta = json.loads((copy / "splade_lucene.json").read_text())
    (copy / "splade_lucene.json").write_text(json.dumps({**meta, "query_mode": "bm25"}))
    with pytest.raises(QueryTableError, match="query mode 'bm25', which this version does not know "
                                              r"\(expected one of full, idf, learned\)"):
        Searcher(copy)
