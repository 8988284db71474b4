import math

import pytest

from splade_lucene.evaluation.metrics import evaluate
from splade_lucene.formats.trec import read_qrels, read_run

QRELS_BEIR = ("query-id\tcorpus-id\tscore\r\n"
              "q1\td1\t2\r\nq1\td2\t1\r\nq1\td3\t0\r\nq1\td9\t1\r\nq2\td5\t1\r\nq3\td7\t1\r\n")
RUN = """q1 Q0 d3 1 0.9 t
q1 Q0 d1 2 0.8 t
q1 Q0 d2 3 0.8 t
q1 Q0 d4 4 0.1 t
q2 Q0 q2 1 5.0 t
q2 Q0 d5 2 1.0 t
qX Q0 d5 1 1.0 t
"""


@pytest.fixture
def files(tmp_path):
    (tmp_path / "qrels.tsv").write_text(QRELS_BEIR)
    (tmp_path / "run.trec").write_text(RUN)
    return read_qrels(tmp_path / "qrels.tsv"), read_run(tmp_path / "run.trec")


def test_hand_computed(files):
    qrels, run = files
    with pytest.warns(UserWarning, match="1 of 3 judged queries have no hits"):
        ev = evaluate(qrels, run)
    # q1 in trec_eval order (score desc, ties by doc id desc): d3, d2, d1, d4 -> gains 0, 1, 2, 0
    ndcg_q1 = (1 / math.log2(3) + 2 / math.log2(4)) / (2 + 1 / math.log2(3) + 1 / math.log2(4))
    # q2 without remove_query: q2 (not judged) then d5
    ndcg_q2 = (1 / math.log2(3)) / 1
    assert ev.per_query["q1"]["nDCG@10"] == pytest.approx(ndcg_q1, abs=1e-12)
    assert ev.per_query["q1"]["RR@10"] == 0.5
    assert ev.per_query["q1"]["MAP"] == pytest.approx((1 / 2 + 2 / 3) / 3)
    assert ev.per_query["q1"]["R@100"] == pytest.approx(2 / 3)
    assert ev.per_query["q3"] == {"nDCG@10": 0.0, "RR@10": 0.0, "R@100": 0.0, "R@1000": 0.0, "MAP": 0.0}
    # -c: the mean is over the 3 judged queries; qX (not judged) is ignored
    assert ev.metrics["nDCG@10"] == pytest.approx((ndcg_q1 + ndcg_q2) / 3)
    assert ev.metrics["RR@10"] == pytest.approx((0.5 + 0.5) / 3)
    assert (ev.queries_without_run, ev.run_queries_without_qrels) == (1, 1)


def test_remove_query(files):
    qrels, run = files
    ev = evaluate(qrels, run, remove_query=True, warn=False)
    assert ev.per_query["q2"] == {"nDCG@10": 1.0, "RR@10": 1.0, "R@100": 1.0, "R@1000": 1.0, "MAP": 1.0}


def test_cutoffs():
    qrels = {"q": {"d10": 1, "d500": 1}}
    run = {"q": [(f"d{i}", 2000.0 - i) for i in range(1, 1001)]}
    m = evaluate(qrels, run).metrics
    assert m["RR@10"] == pytest.approx(1 / 10)
    assert m["R@100"] == 0.5 and m["R@1000"] == 1.0
    assert m["MAP"] == pytest.approx((1 / 10 + 2 / 500) / 2)


def test_trec_qrels_and_bad_lines(tmp_path):
    (tmp_path / "q.txt").write_text("1 0 a 1\n1 0 b 0\n")
    assert read_qrels(tmp_path / "q.txt") == {"1": {"a": 1, "b": 0}}
    (tmp_path / "bad.txt").write_text("1 0 a 1\n1 a\n")
    with pytest.raises(ValueError, match=r"bad.txt:2: expected 3 \(BEIR\) or 4 \(TREC\) columns"):
        read_qrels(tmp_path / "bad.txt")
    (tmp_path / "bad.run").write_text("1 Q0 a 1 2.0\n")
    with pytest.raises(ValueError, match=r"bad.run:1: a TREC run line has 6 columns"):
        read_run(tmp_path / "bad.run")


def test_judgements_outside_the_run_or_corpus_are_counted_in_warnings(files):
    qrels, run = files
    with pytest.warns(UserWarning) as caught:
        ev = evaluate(qrels, run, corpus_ids={"d1", "d2", "d3", "d4", "d5"})
    messages = [str(w.message) for w in caught]
    # q3 has no hits; d9 (q1) and d7 (q3) are judged but not in the corpus
    assert "1 of 3 judged queries have no hits in the run" in messages[0]
    assert "2 judged documents (in 2 queries) are not in the corpus" in messages[1]
    assert (ev.queries_without_run, ev.judged_docs_not_in_corpus) == (1, 2)
    # the metrics are trec_eval's all the same: the missing documents stay relevant, never retrieved
    assert ev.metrics == evaluate(qrels, run, warn=False).metrics
    assert ev.per_query["q3"]["nDCG@10"] == 0.0 and ev.per_query["q1"]["R@1000"] == pytest.approx(2 / 3)


def test_rr_at_10_is_cut_at_10_in_trec_eval_order():
    # the relevant document is 11th: recip_rank with -M 10 is 0 (pytrec_eval alone would say 1/11)
    run = {"q": [(f"d{i}", 100.0 - i) for i in range(1, 12)]}
    assert evaluate({"q": {"d11": 1}}, run).metrics["RR@10"] == 0.0
    # ties at the cut go by doc id descending: "d9" > "d10" > "d1" as bytes, so d9 is in the top 10
    tied = {"q": [(f"d{i}", 1.0) for i in range(1, 12)]}
    assert evaluate({"q": {"d9": 1}}, tied).metrics["RR@10"] == 1.0
    assert evaluate({"q": {"d1": 1}}, tied).metrics["RR@10"] == 0.0


def test_the_reports_recall_is_the_tables(files):
    from splade_lucene.evaluation.metrics import recall_at_depths

    qrels, run = files
    ev = evaluate(qrels, run, remove_query=True, warn=False)
    assert recall_at_depths(qrels, run, (100, 1000), remove_query=True) == [ev.metrics["R@100"], ev.metrics["R@1000"]]
    assert recall_at_depths(qrels, run, (1,), remove_query=True) == [pytest.approx((0 + 1) / 3)]
