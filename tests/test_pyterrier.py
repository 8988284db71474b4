"""PyTerrier transformers (splade_lucene.search.pyterrier) against the real PyTerrier: pt.Experiment
over BM25, SPLADE and both hybrids on SciFact gives `reproduce`'s figures and run files; the encoders
give the query and document weights the index and the collection hold."""

from __future__ import annotations

import json

import pytest
from conftest import need_module

from splade_lucene.core.errors import SettingError
from splade_lucene.experiments.experiment import dataset_files
from splade_lucene.formats.trec import read_run

CONDITIONS = ("bm25", "splade", "hybrid-rrf", "hybrid-linear")


@pytest.fixture(scope="module")
def pt():
    return need_module("pyterrier", "pyterrier")


@pytest.fixture(scope="module")
def scifact(reproduced, datasets, pt):
    from splade_lucene.search.pyterrier import BM25Retriever, SpladeRetriever, judged_topics, qrels

    out, proc, _ = reproduced
    assert proc.returncode == 0, proc.stderr[-2000:]
    root = out / "scifact"
    _, queries, qrels_file = dataset_files(datasets / "scifact", "test")
    bm25 = BM25Retriever(root / "bm25" / "index", remove_query=True)
    splade = SpladeRetriever(root / "splade" / "index", remove_query=True)
    yield root, bm25, splade, judged_topics(queries, qrels_file), qrels(qrels_file)
    bm25.close(), splade.close()


def test_experiment_gives_reproduces_figures_and_runs(pt, scifact):
    """pt.Experiment([bm25, splade, RRF, interpolation]) on SciFact's test queries: every result list
    equals reproduce's run file (documents, order, scores as written), and every figure equals
    reproduce's metrics but RR@10 of RRF, whose many tied scores ir_measures' RR@10 orders otherwise than
    trec_eval (``-M 10``)."""
    from ir_measures import AP, RR, R, nDCG

    from splade_lucene.search.pyterrier import Fusion, SpladeQueryEncoder, hits_of_frame

    root, bm25, splade, topics, qrels = scifact
    fused = {"hybrid-rrf": Fusion(bm25, splade, rrf_k=1),
             "hybrid-linear": Fusion(bm25, splade, method="interpolation", alpha=0.7)}
    systems = {"bm25": bm25, "splade": splade, **fused,
               "splade-toks": SpladeQueryEncoder.from_index(root / "splade" / "index") >> splade}
    table = pt.Experiment(list(systems.values()), topics, qrels, names=list(systems),
                          eval_metrics=[nDCG@10, RR@10, R@100, R@1000, AP])
    figures = {row["name"]: row for row in table.to_dict("records")}
    names = {"nDCG@10": "nDCG@10", "RR@10": "RR@10", "R@100": "R@100", "R@1000": "R@1000", "MAP": "AP"}
    for condition in CONDITIONS:
        expected = json.loads((root / condition / "metrics.json").read_text())
        for ours, theirs in names.items():
            got = figures[condition][theirs]
            if (condition, ours) == ("hybrid-rrf", "RR@10"):
                assert got == pytest.approx(expected[ours], abs=5e-4)
            else:
                assert got == pytest.approx(expected[ours], rel=1e-12), (condition, ours)
        digits = 8 if condition.startswith("hybrid") else 6
        run = read_run(root / condition / "run.trec")
        results = hits_of_frame(systems[condition].transform(topics))
        assert set(results) == set(run)
        for qid, hits in results.items():
            assert [(h.docid, round(h.score, digits)) for h in hits] == [(d, round(s, digits)) for d, s in run[qid]]
    assert figures["splade-toks"]["nDCG@10"] == figures["splade"]["nDCG@10"]
    assert not pt.java.started(), "PyTerrier's Java side is never needed"


def test_encoders_give_the_index_and_collection_weights(pt, scifact, datasets):
    import pandas as pd

    from splade_lucene.encoding.model import SpladeEncoder
    from splade_lucene.formats.collection import read_corpus
    from splade_lucene.search.encoders import QueryEncoder
    from splade_lucene.search.pyterrier import SpladeDocEncoder, SpladeQueryEncoder

    root, _, _, topics, _ = scifact
    index = root / "splade" / "index"
    encoded = SpladeQueryEncoder.from_index(index).transform(topics.head(20))
    assert list(encoded["query_toks"]) == QueryEncoder.from_index(index).encode_batch(list(topics["query"][:20]))
    docs = [d for _, d in zip(range(30), read_corpus(datasets / "scifact" / "corpus.jsonl"))]
    frame = pd.DataFrame({"docno": [d.id for d in docs], "title": [d.title for d in docs],
                          "text": [d.text[len(d.title):].strip() if d.title else d.text for d in docs]})
    toks = SpladeDocEncoder(SpladeEncoder()).transform(frame)["toks"]
    written = {}
    for part in sorted((root / "splade" / "collection").glob("*.jsonl")):
        for line in part.read_text(encoding="utf-8").splitlines():
            record = json.loads(line)
            written[record["id"]] = record["vector"]
    assert [written[d.id] for d in docs] == list(toks)


def test_bad_frames_are_refused_naming_the_column(pt, cranfield):
    import pandas as pd

    from splade_lucene.search.pyterrier import Fusion, SpladeQueryEncoder, SpladeRetriever

    splade = SpladeRetriever(cranfield["vector_index"], query_encoder=cranfield["query_encoder"])
    with pytest.raises(SettingError, match="needs the column.* query"):
        splade.transform(pd.DataFrame({"qid": ["1"]}))
    with pytest.raises(SettingError, match=r"repeat a qid \('1'\)"):
        splade.transform(pd.DataFrame({"qid": ["1", "1"], "query": ["a", "b"]}))
    with pytest.raises(SettingError, match="needs the column.* qid"):
        SpladeQueryEncoder(cranfield["query_encoder"]).transform(pd.DataFrame({"query": ["a"]}))
    with pytest.raises(SettingError, match="interpolation fuses exactly two retrievers, not 1"):
        Fusion(splade, method="interpolation")
    with pytest.raises(SettingError, match="method must be"):
        Fusion(splade, splade, method="max")
    ranked = splade.transform(pd.DataFrame({"qid": ["1", "2"], "query": ["wing flutter", "heat transfer"]}))
    assert list(ranked.columns) == ["qid", "query", "docno", "score", "rank"]
    assert ranked.groupby("qid")["rank"].min().tolist() == [0, 0]
    splade.close()
