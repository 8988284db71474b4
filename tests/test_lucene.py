"""Index and search on a real collection (Cranfield, 1,400 documents, two of them empty).

Encodes the corpus once with SPLADE-tiny, builds the index from the JsonVectorCollection files and
from the equivalent pseudo-documents, and checks every hit against exact integer dot products.
"""

from __future__ import annotations

import json
import subprocess

import numpy as np
import pytest
import scipy.sparse as sp

from splade_lucene.core import java as _java
from splade_lucene.evaluation.metrics import evaluate
from splade_lucene.formats.collection import COLLECTION_METADATA_FILE
from splade_lucene.formats.metadata import IncompatibleIndexError, read_metadata
from splade_lucene.formats.trec import read_run, write_run
from splade_lucene.indexing.build import build_index
from splade_lucene.indexing.lucene import lucene_stats
from splade_lucene.search.encoders import QueryEncoder
from splade_lucene.search.explain import explain
from splade_lucene.search.searcher import Searcher

K = 1000


def test_every_document_is_indexed(cranfield):
    assert cranfield["summary"].documents == 1400
    assert len(cranfield["vectors"]) == 1400
    for key in ("vector_index", "pseudo_index"):
        assert lucene_stats(cranfield[key])["documents"] == 1400
        assert read_metadata(cranfield[key])["documents"] == 1400


def test_metadata_records_how_the_index_was_built(cranfield):
    meta = read_metadata(cranfield["vector_index"])
    assert meta["model"] == "splade-tiny" and len(meta["model_sha256"]) == 64
    assert meta["scale"] == 100.0 and meta["max_length"] == 512
    cmd = meta["anserini_command"]
    assert "-impact" in cmd and "-pretokenized" in cmd and "JsonVectorCollection" in cmd
    assert meta["versions"]["anserini"] == "1.7.1" and meta["versions"]["java"].startswith("21")


def test_terms_are_not_analyzed(cranfield):
    # Without -pretokenized the English analyzer would stem/stop WordPiece terms (##ing -> ing).
    from jnius import autoclass

    reader = autoclass("io.anserini.index.IndexReaderUtils").getReader(str(cranfield["vector_index"]))
    utils = autoclass("io.anserini.index.IndexReaderUtils")
    terms = {t for v in cranfield["vectors"].values() for t in v}
    for term in [t for t in terms if t.startswith("##")][:20] + [t for t in ("the", "flows", "wing") if t in terms]:
        assert utils.getDF(reader, term) > 0, term
    assert utils.getDF(reader, "flow") == sum(1 for v in cranfield["vectors"].values() if "flow" in v)


def exact_scores(vectors, encoded):
    vocab = {t: i for i, t in enumerate(sorted({t for v in vectors.values() for t in v}))}
    docids = list(vectors)
    rows, cols, vals = [], [], []
    for r, d in enumerate(docids):
        for t, w in vectors[d].items():
            rows.append(r), cols.append(vocab[t]), vals.append(w)
    D = sp.csr_matrix((np.array(vals, dtype=np.int64), (rows, cols)), shape=(len(docids), len(vocab)))
    qids = list(encoded)
    rows, cols, vals = [], [], []
    for r, q in enumerate(qids):
        for t, w in encoded[q].items():
            if t in vocab:
                rows.append(r), cols.append(vocab[t]), vals.append(w)
    Q = sp.csr_matrix((np.array(vals, dtype=np.int64), (rows, cols)), shape=(len(qids), len(vocab)))
    return qids, docids, (Q @ D.T).toarray()


def check_against_exact(results, vectors, encoded):
    qids, docids, S = exact_scores(vectors, encoded)
    col = {d: i for i, d in enumerate(docids)}
    checked = 0
    for qi, qid in enumerate(qids):
        hits = results[qid]
        exact = S[qi]
        positive = int((exact > 0).sum())
        assert len(hits) == min(K, positive), qid
        for hit in hits:
            # Lucene's score is the integer dot product, nudged by 1e-6 per rank on ties.
            assert abs(hit.score - exact[col[hit.docid]]) < 1e-2, (qid, hit)
            checked += 1
        if hits:
            kth = exact[col[hits[-1].docid]]
            must = {docids[i] for i in np.flatnonzero(exact > kth)}
            assert must <= {h.docid for h in hits}, qid
    return checked


def test_every_hit_is_the_exact_integer_dot_product(cranfield):
    with Searcher(cranfield["vector_index"], cranfield["query_encoder"]) as searcher:
        results = searcher.batch_search_terms(cranfield["encoded"], k=K)
    assert check_against_exact(results, cranfield["vectors"], cranfield["encoded"]) > 100_000


def tiny_index(cranfield, folder, docs: dict[str, dict[str, int]]):
    """An index of hand-written vectors, with the Cranfield collection's model metadata."""
    collection = folder / "tiny"
    collection.mkdir()
    with open(collection / "part-00000.jsonl", "w") as fh:
        for docid, terms in docs.items():
            fh.write(json.dumps({"id": docid, "contents": "", "vector": terms}) + "\n")
    meta = json.loads((cranfield["base"] / "vector" / COLLECTION_METADATA_FILE).read_text())
    (collection / COLLECTION_METADATA_FILE).write_text(json.dumps({**meta, "documents": len(docs)}))
    return build_index(collection, folder / "tiny-index", quiet=True).index_dir


def test_no_query_term_dropped_for_idf(cranfield, tmp_path):
    # A term in every document has idf <= 0: Pyserini's default min_idf=0 drops it from the query.
    from pyserini.search.lucene import LuceneImpactSearcher

    index = tiny_index(cranfield, tmp_path, {"a": {"the": 3, "cat": 2}, "b": {"the": 1, "dog": 4}, "c": {"the": 2}})
    query = {"the": 10, "cat": 1}
    with Searcher(index, cranfield["query_encoder"]) as searcher:
        hits = searcher.search_terms(query, k=10)
    assert [(h.docid, round(h.score)) for h in hits] == [("a", 32), ("c", 20), ("b", 10)]

    class Fixed:
        def encode(self, text):
            return query

    dropped = LuceneImpactSearcher(str(index), Fixed()).search("ignored", k=10)
    assert [(h.docid, round(h.score)) for h in dropped] == [("a", 2)]
    kept = LuceneImpactSearcher(str(index), Fixed(), min_idf=-1).search("ignored", k=10)
    assert [(h.docid, round(h.score)) for h in kept] == [("a", 32), ("c", 20), ("b", 10)]


def test_vector_and_pseudo_formats_rank_and_score_identically(cranfield):
    runs = {}
    for key in ("vector_index", "pseudo_index"):
        with Searcher(cranfield[key], cranfield["query_encoder"]) as searcher:
            results = searcher.batch_search_terms(cranfield["encoded"], k=K)
        write_run(results, cranfield["base"] / f"{key}.trec")
        runs[key] = (cranfield["base"] / f"{key}.trec").read_bytes()
    assert runs["vector_index"] == runs["pseudo_index"]
    assert len(runs["vector_index"]) > 0


def test_threads_give_the_same_results_and_share_one_searcher(cranfield):
    import threading

    with Searcher(cranfield["vector_index"], cranfield["query_encoder"]) as searcher:
        one = searcher.batch_search_terms(cranfield["encoded"], k=100)
        assert searcher.batch_search_terms(cranfield["encoded"], k=100, threads=3) == one
        assert list(searcher.batch_search_terms(cranfield["encoded"], k=100, threads=3)) == list(one)
        # several Python threads calling one searcher at once
        got: dict[str, list] = {}
        qids = list(cranfield["encoded"])

        def work(part):
            for qid in part:
                got[qid] = searcher.search_terms(cranfield["encoded"][qid], k=100)
        threads = [threading.Thread(target=work, args=(qids[i::4],)) for i in range(4)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    assert got == one


def test_single_and_batch_search_agree(cranfield):
    with Searcher(cranfield["vector_index"], cranfield["query_encoder"]) as searcher:
        qid, text = cranfield["queries"][0]
        assert searcher.search(text, k=50) == searcher.batch_search([(qid, text)], k=50, threads=2)[qid]


@pytest.mark.parametrize("engine", ["memory", "lucene"])
def test_pyserini_impact_searcher_reproduces_our_run(cranfield, engine):
    from pyserini.search.lucene import LuceneImpactSearcher

    index = str(cranfield["vector_index"])
    queries = cranfield["queries"]
    searcher = Searcher(index, engine=engine)
    assert searcher.engine == engine
    ours = searcher.batch_search(queries, k=K)
    theirs = LuceneImpactSearcher(index, QueryEncoder.from_index(index), min_idf=-1)
    got = theirs.batch_search([t for _, t in queries], [q for q, _ in queries], k=K, threads=1)
    for qid, _ in queries:
        # the same documents, order and float scores (Anserini's tie nudges included), to the last bit
        assert [(h.docid, h.score) for h in got[qid]] == [(h.docid, h.score) for h in ours[qid]]


def test_incompatible_encoder_is_refused(cranfield, encoder):
    with pytest.raises(IncompatibleIndexError, match="query scale 100.0 .* scale 51.2"):
        Searcher(cranfield["vector_index"], QueryEncoder(encoder=encoder, scale=51.2))


def test_existing_index_is_refused_without_overwrite(cranfield):
    with pytest.raises(FileExistsError, match="--overwrite"):
        build_index(cranfield["base"] / "vector", cranfield["vector_index"], quiet=True)


def test_metrics_equal_anserini_trec_eval(cranfield, tmp_path):
    with Searcher(cranfield["vector_index"], cranfield["query_encoder"]) as searcher:
        results = searcher.batch_search_terms(cranfield["encoded"], k=K)
    run = tmp_path / "run.trec"
    write_run(results, run)
    qrels = tmp_path / "qrels.txt"
    qrels.write_text("".join(f"{q} 0 {d} {r}\n" for q, docs in cranfield["qrels"].items() for d, r in docs.items()))
    ours = evaluate(cranfield["qrels"], read_run(run)).metrics

    def trec_eval(*args):
        out = subprocess.run([_java.java_executable(), "-cp", str(_java.anserini_jar()), "trec_eval", "-c", *args,
                              str(qrels), str(run)], capture_output=True, text=True, check=True).stdout
        return {line.split()[0]: float(line.split()[2]) for line in out.splitlines() if line.strip()}

    full = trec_eval("-m", "ndcg_cut.10", "-m", "map", "-m", "recall.100,1000")
    rr = trec_eval("-M", "10", "-m", "recip_rank")
    assert round(ours["nDCG@10"], 4) == full["ndcg_cut_10"]
    assert round(ours["MAP"], 4) == full["map"]
    assert round(ours["R@100"], 4) == full["recall_100"]
    assert round(ours["R@1000"], 4) == full["recall_1000"]
    assert round(ours["RR@10"], 4) == rr["recip_rank"]


def test_cranfield_within_0003_of_the_float_reference(cranfield):
    # Reference: scripts/float_reference.py (plain transformers, no code of ours, exact float dot products,
    # BEIR convention: query id hits dropped).
    with Searcher(cranfield["vector_index"], cranfield["query_encoder"]) as searcher:
        results = searcher.batch_search_terms(cranfield["encoded"], k=K)
    run = {q: [(h.docid, h.score) for h in hits] for q, hits in results.items()}
    ndcg = evaluate(cranfield["qrels"], run, remove_query=True).metrics["nDCG@10"]
    assert abs(ndcg - 0.3548) <= 0.003, ndcg


@pytest.mark.parametrize("prune", [None, True, False])
def test_exact_search_agrees_with_the_index(cranfield, prune):
    from splade_lucene.search.exact import exact_search, vectors_matrix

    vocab = {t: i for i, t in enumerate(sorted({t for v in cranfield["vectors"].values() for t in v}))}

    def pairs(terms):
        kept = [(vocab[t], w) for t, w in sorted(terms.items()) if t in vocab]
        return np.array([i for i, _ in kept], dtype=np.int64), np.array([w for _, w in kept], dtype=np.int64)

    docids, qids = list(cranfield["vectors"]), list(cranfield["encoded"])
    queries = vectors_matrix([pairs(cranfield["encoded"][q]) for q in qids], len(vocab))
    docs = vectors_matrix([pairs(cranfield["vectors"][d]) for d in docids], len(vocab))
    exact = exact_search(queries, docs, qids, docids, k=K)
    with Searcher(cranfield["vector_index"], cranfield["query_encoder"], prune=prune) as searcher:
        lucene = searcher.batch_search_terms(cranfield["encoded"], k=K)
    assert check_against_exact(exact, cranfield["vectors"], cranfield["encoded"]) > 100_000
    for qid in qids:
        # same documents with the same integer scores, except among documents tied at the k-th score
        ours = [(round(h.score), h.docid) for h in exact[qid]]
        theirs = [(round(h.score), h.docid) for h in lucene[qid]]
        assert len(ours) == len(theirs), qid
        if ours:
            kth = ours[-1][0]
            assert sorted(x for x in ours if x[0] > kth) == sorted(x for x in theirs if x[0] > kth), qid
        # trec_eval's order: score descending, ties by doc id descending
        assert ours == sorted(ours, reverse=True)


@pytest.mark.parametrize("engine", ["memory", "lucene"])
def test_ties_at_the_cut_pick_anserinis_documents(cranfield, tmp_path, engine):
    # Twelve documents tie on score; their ids sort differently from their Lucene order, so a
    # search that kept the first k by Lucene docid would pick other documents than Anserini.
    from pyserini.search.lucene import LuceneImpactSearcher

    ids = ["m", "b", "z", "a", "q", "c", "y", "k", "d", "x", "e", "w"]
    docs = {"top": {"cat": 9}, **{i: {"cat": 2, "dog": 1} for i in ids}, "low": {"dog": 1}}
    index = tiny_index(cranfield, tmp_path, docs)
    query = {"cat": 3, "dog": 2}

    class Fixed:
        def encode(self, text):
            return query

    theirs = LuceneImpactSearcher(str(index), Fixed(), min_idf=-1)
    with Searcher(index, cranfield["query_encoder"], engine=engine) as searcher:
        for k in (1, 2, 5, 13, 14, 100):
            got = [(h.docid, h.score) for h in searcher.search_terms(query, k=k)]
            assert got == [(h.docid, h.score) for h in theirs.search("ignored", k=k)], k
        five = searcher.search_terms(query, k=5)
    assert [h.docid for h in five] == ["top", "a", "b", "c", "d"]
    assert [h.score for h in five] == pytest.approx([27, 8, 8 - 1e-6, 8 - 2e-6, 8 - 3e-6], abs=3e-7)



@pytest.mark.parametrize("prune", [True, False])
def test_memory_and_lucene_engines_return_the_same_hits(cranfield, prune):
    # every Cranfield query at k = 1, 10 and 1000: the memory engine, pruned or exhaustive, gives Lucene's hits
    results = {}
    for engine in ("auto", "lucene"):
        with Searcher(cranfield["vector_index"], cranfield["query_encoder"], engine=engine, prune=prune) as searcher:
            assert searcher.engine == {"auto": "memory", "lucene": "lucene"}[engine]
            results[engine] = [searcher.batch_search_terms(cranfield["encoded"], k=k, threads=2) for k in (1, 10, K)]
    assert results["auto"] == results["lucene"]
    assert sum(len(hits) for hits in results["auto"][2].values()) > 100_000


def test_impact_table_matches_the_index_term_by_term(cranfield):
    from splade_lucene.indexing.impacts import ImpactTable
    from splade_lucene.indexing.lucene import document_frequencies

    for key in ("vector_index", "pseudo_index"):
        table = ImpactTable.load(cranfield[key])
        stats = lucene_stats(cranfield[key])
        assert table.postings == stats["postings"]
        assert sum(int(table.postings_of(t)[1].sum()) for t in table.terms) == stats["total_impact"]
        assert len(table.term_ids) == stats["unique_terms"]
    sample = sorted(table.term_ids)[::50]
    df = document_frequencies(cranfield["vector_index"], sample)
    assert {t: table.df(t) for t in sample} == df


def test_unusual_query_weights_give_lucenes_answer(cranfield, tmp_path):
    # weights the table does not answer (zero, huge) go to Lucene: both engines agree with Pyserini
    from pyserini.search.lucene import LuceneImpactSearcher

    index = tiny_index(cranfield, tmp_path, {"a": {"cat": 3, "dog": 1}, "b": {"dog": 200}, "c": {"cat": 1}})
    for query in ({"cat": 0, "dog": 2}, {"cat": 10 ** 6, "dog": 1}, {"cat": 2, "bird": 5}):
        class Fixed:
            def encode(self, text):
                return query

        theirs = [(h.docid, h.score) for h in LuceneImpactSearcher(str(index), Fixed(), min_idf=-1).search("q", k=10)]
        for engine in ("memory", "lucene"):
            with Searcher(index, cranfield["query_encoder"], engine=engine) as searcher:
                assert [(h.docid, h.score) for h in searcher.search_terms(query, k=10)] == theirs, (query, engine)


def test_a_table_that_does_not_fit_its_index_is_refused(cranfield, tmp_path):
    import shutil

    from splade_lucene.indexing.impacts import TABLE_DIR, ImpactTableError, write_impact_table

    docs = {"a": {"cat": 3, "dog": 1}, "b": {"dog": 2}, "c": {"cat": 1, "emu": 4}}
    index = tiny_index(cranfield, tmp_path, docs)
    table = index / TABLE_DIR
    before = {p.name: p.read_bytes() for p in table.iterdir()}
    # a collection other than the index's: refused, the existing table kept as it was
    other = tmp_path / "other"
    other.mkdir()
    (other / "part-00000.jsonl").write_text("".join(
        json.dumps({"id": d, "contents": "", "vector": {**v, "cat": 2} if d == "c" else v}) + "\n"
        for d, v in docs.items()))
    with pytest.raises(ImpactTableError, match=r"with other total impacts \['cat'\]"):
        write_impact_table(index, other)
    assert {p.name: p.read_bytes() for p in table.iterdir()} == before
    assert not list(index.glob(f"{TABLE_DIR}.writing-*"))

    # a table from another state of the index: auto searches through Lucene (and says so), memory refuses
    meta = json.loads((table / "table.json").read_text())
    meta["commit"]["version"] += 1
    (table / "table.json").write_text(json.dumps(meta))
    with pytest.warns(UserWarning, match="another state of the index.*searching through Lucene"):
        with Searcher(index, cranfield["query_encoder"]) as searcher:
            assert searcher.engine == "lucene"
            assert [h.docid for h in searcher.search_terms({"cat": 1}, k=10)] == ["a", "c"]
    with pytest.raises(ImpactTableError, match="another state of the index"):
        Searcher(index, cranfield["query_encoder"], engine="memory")
    shutil.rmtree(table)
    with pytest.raises(ImpactTableError, match="has no impact table"):
        Searcher(index, cranfield["query_encoder"], engine="memory")
    with pytest.raises(ValueError, match="engine must be one of"):
        Searcher(index, cranfield["query_encoder"], engine="fast")


def test_index_without_table_and_the_impacts_command(cranfield, tmp_path):
    import sys

    collection = cranfield["base"] / "vector"
    index = build_index(collection, tmp_path / "plain", quiet=True, impact_table=False).index_dir
    assert not (index / "impacts").exists()
    with Searcher(index, cranfield["query_encoder"]) as searcher:
        assert searcher.engine == "lucene"
        before = searcher.batch_search_terms(cranfield["encoded"], k=100)
    proc = subprocess.run([sys.executable, "-m", "splade_lucene", "impacts", "--index", str(index)],
                          capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    assert "impact table written" in proc.stdout
    with Searcher(index, cranfield["query_encoder"]) as searcher:
        assert searcher.engine == "memory"
        assert searcher.batch_search_terms(cranfield["encoded"], k=100) == before


def test_explanations_sum_to_lucenes_scores_on_real_hits(cranfield):
    with Searcher(cranfield["vector_index"], cranfield["query_encoder"]) as searcher:
        checked, expansions = 0, set()
        for qid, terms in list(cranfield["encoded"].items())[:8]:
            for hit in searcher.search_terms(terms, k=5):
                ex = explain(searcher, terms, hit.docid)
                assert ex.total == round(ex.score) == round(hit.score)  # exact, and Lucene's own value
                doc = cranfield["vectors"][hit.docid]
                assert all(t.doc_weight == doc[t.term] and t.query_weight == terms[t.term]
                           and t.contribution == t.query_weight * t.doc_weight for t in ex.terms)
                assert {t.term for t in ex.terms} == set(terms) & set(doc)
                assert ex.doc_terms == doc  # the whole vector, from the impact table
                expansions |= {t.expansion for t in ex.terms}
                checked += 1
        assert checked == 40 and expansions == {True, False}  # every term's text status is known
        missing = next(d for d in cranfield["vectors"] if not set(cranfield["vectors"][d]) & set(terms))
        none = explain(searcher, terms, missing)
        assert (none.score, none.terms, none.total) == (0.0, [], 0)
        with pytest.raises(KeyError, match="no document 'nope'"):
            explain(searcher, terms, "nope")


def test_explain_and_show_vector_commands(cranfield):
    import sys

    index = str(cranfield["vector_index"])
    qid, text = cranfield["queries"][0]
    with Searcher(index) as searcher:
        top = searcher.search(text, k=1)[0]
    run = subprocess.run([sys.executable, "-m", "splade_lucene", "explain", "--index", index, "--query", text,
                          "--doc", top.docid, "--json"], capture_output=True, text=True)
    assert run.returncode == 0, run.stderr
    out = json.loads(run.stdout)
    assert round(out["score"]) == out["sum_of_contributions"] == round(top.score)
    assert set(out["terms"][0]) == {"term", "query_weight", "doc_weight", "contribution", "expansion"}
    table = subprocess.run([sys.executable, "-m", "splade_lucene", "explain", "--index", index, "--query", text,
                            "--doc", top.docid], capture_output=True, text=True).stdout
    assert f"document {top.docid}: Lucene score" in table and "MISMATCH" not in table
    vec = subprocess.run([sys.executable, "-m", "splade_lucene", "show-vector", "a kitten sleeps", "--scale", "100",
                          "--json"], capture_output=True, text=True)
    assert vec.returncode == 0, vec.stderr
    weights = json.loads(vec.stdout)
    assert "kitten" in weights and "cat" in weights and all(isinstance(w, int) for w in weights.values())
