"""Training: the differentiable SPLADE vector, tiny real runs on a slice of SciFact train, resume,
determinism and every bad input the train command must refuse."""

from __future__ import annotations

import json
import re
import subprocess
import sys

import numpy as np
import pytest
import torch
from conftest import need_module
from test_st_folders import assert_close, compare

from splade_lucene.encoding.head import splade_pool
from splade_lucene.encoding.loading import ModelError, default_model_path
from splade_lucene.encoding.model import EncoderSettings, SpladeEncoder
from splade_lucene.formats.collection import read_corpus, read_queries, sha256_file
from splade_lucene.training.data import carve_dev, qrels_pairs
from splade_lucene.training.objective import SpladeModel, lambda_at, lr_at
from splade_lucene.training.settings import TrainingError, TrainSettings
from splade_lucene.training.trainer import train

# a tiny run: short texts, small batches, a few dozen steps
TINY = dict(max_length=64, batch_size=4, epochs=3, lr=2e-4, dev_fraction=0.2, checkpoint_every=2, dev_depth=10)


def test_splade_pool_matches_autograd_reference():
    """The memory-lean pooled head gives the plain formula's values and gradients (float64)."""
    torch.manual_seed(0)
    hidden = torch.randn(3, 9, 6, dtype=torch.float64, requires_grad=True)
    weight = torch.randn(40, 6, dtype=torch.float64, requires_grad=True)
    bias = torch.randn(40, dtype=torch.float64, requires_grad=True)
    mask = torch.ones(3, 9, dtype=torch.bool)
    mask[1, 5:] = False
    mask[2, :2] = False
    out = splade_pool(hidden, mask, weight, bias)
    logits = (hidden @ weight.t() + bias).masked_fill(~mask.unsqueeze(-1), float("-inf"))
    ref = torch.log1p(torch.relu(logits)).amax(dim=1)
    assert torch.allclose(out, ref, atol=1e-12)
    assert (out == 0).any() and (out > 0).any()
    g = torch.randn_like(out)
    ours = torch.autograd.grad((out * g).sum(), (hidden, weight, bias))
    theirs = torch.autograd.grad((ref * g).sum(), (hidden, weight, bias))
    for a, b in zip(ours, theirs):
        assert torch.allclose(a, b, atol=1e-12)


def test_schedules():
    assert lambda_at(0, 1.0, 10) == pytest.approx(0.01)
    assert lambda_at(4, 1.0, 10) == pytest.approx(0.25)
    assert lambda_at(9, 1.0, 10) == lambda_at(50, 1.0, 10) == 1.0
    assert lambda_at(0, 0.5, 0) == 0.5
    assert lr_at(0, 1.0, 4, 20) == pytest.approx(0.25)
    assert lr_at(4, 1.0, 4, 20) == pytest.approx(1.0)
    assert lr_at(19, 1.0, 4, 20) == pytest.approx(1 / 16)


@pytest.fixture(scope="module")
def scifact_texts(datasets):
    docs = list(read_corpus(datasets / "scifact" / "corpus.jsonl"))
    queries = [t for _, t in read_queries(datasets / "scifact" / "queries.jsonl")]
    # short and long documents (some cut at 512 tokens) and real claims
    longest = sorted(docs, key=lambda d: -len(d.text))[:4]
    return [d.text for d in docs[:8] + longest] + queries[:12]


@pytest.mark.parametrize("pooling", ["all", "no-special"])
def test_training_forward_equals_encoder(scifact_texts, pooling):
    """The vector trained is the vector `encode` writes: same tokens, pooling, special tokens, length."""
    path = str(default_model_path())
    encoder = SpladeEncoder(path, max_length=512, pooling=pooling)
    model = SpladeModel(path, pooling=pooling)
    model.model.eval()
    with torch.no_grad():
        dense = model.vectors(scifact_texts, 512).numpy()
    assert any(v.truncated for v in encoder.encode(scifact_texts))
    for row, vec in zip(dense, encoder.encode(scifact_texts)):
        ids = np.flatnonzero(row)
        assert ids.tolist() == vec.ids.tolist()
        np.testing.assert_allclose(row[ids], vec.weights, rtol=1e-6, atol=1e-6)
        assert np.array_equal(np.rint(row[ids] * 100.0), np.rint(vec.weights.astype(np.float64) * 100.0))


@pytest.fixture(scope="module")
def tiny_run(tiny_dataset, tmp_path_factory):
    out = tmp_path_factory.mktemp("runs") / "tiny"
    result = train(tiny_dataset, out, progress=False, plot=out.parent / "tiny.png", **TINY)
    return out, result


def test_tiny_run_writes_a_checkpoint_every_command_loads(tiny_run, tiny_dataset, tmp_path):
    from transformers import AutoModelForMaskedLM

    out, result = tiny_run
    assert {"config.json", "model.safetensors", "tokenizer.json", "training.json"} <= {p.name for p in out.iterdir()}
    assert not list(out.parent.glob(".tiny.*")), "work and writing folders are removed"
    model, info = AutoModelForMaskedLM.from_pretrained(out, output_loading_info=True)
    assert not info["missing_keys"] and not info["unexpected_keys"]
    # the model differs from its base, and the manifest says so
    manifest = json.loads((out / "training.json").read_text())
    assert manifest["model_sha256"] == sha256_file(out / "model.safetensors") != manifest["base_model"]["sha256"]
    assert manifest["base_model"]["sha256"] == sha256_file(default_model_path() / "model.safetensors")
    assert manifest["dataset"]["files"]["qrels"]["sha256"] == sha256_file(tiny_dataset / "qrels" / "train.tsv")
    assert manifest["settings"]["seed"] == 13 and manifest["settings"]["lr"] == TINY["lr"]
    assert len(manifest["steps"]) == manifest["derived"]["steps"] == 3 * (32 // 4)
    assert [d["step"] for d in manifest["dev"]] == [8, 16, 24]
    assert manifest["kept"]["nDCG@10"] == max(d["nDCG@10"] for d in manifest["dev"])
    assert len(manifest["dev_queries"]) == 8 and manifest["train_queries"] == 32
    assert all({"rank", "flops_q", "flops_d", "nonzero_d"} <= set(s) for s in manifest["steps"])
    assert (out.parent / "tiny.png").stat().st_size > 10_000


def test_trained_model_is_a_sentence_transformers_sparse_encoder(tiny_run, tiny_dataset):
    """The folder `train` writes loads in sentence-transformers as a SparseEncoder that encodes as ours."""
    st = need_module("sentence_transformers", "st")
    out, _ = tiny_run
    texts = [d.text for _, d in zip(range(60), read_corpus(tiny_dataset / "corpus.jsonl"))]
    texts += [t for _, t in read_queries(tiny_dataset / "queries.jsonl")]
    ours = SpladeEncoder(str(out), max_length=64)
    theirs = st.SparseEncoder(str(out), device="cpu").encode_document(texts, convert_to_tensor=True)
    assert_close(theirs.to_dense().numpy(), ours.encode(texts), ours.tokenizer.all_special_ids)


def test_batches_never_hold_dev_queries(tiny_dataset, tmp_path):
    from splade_lucene.training.trainer import Trainer

    trainer = Trainer(tiny_dataset, tmp_path / "m", TrainSettings(**{**TINY, "negatives": "none"}), progress=False)
    trainer.load_data()
    seen = set()
    for step in range(trainer.total_steps):
        qids, positives, docs = trainer.set.batch(step)
        assert len(qids) == 4 and docs == positives
        seen.update(qids)
    assert seen == set(trainer.train_qids) and not seen & set(trainer.dev_qids) and len(trainer.dev_qids) == 8


def test_trained_model_serves_encode_index_and_pyserini(tiny_run, tiny_dataset, tmp_path):
    """--model models/NAME everywhere: an experiment, and Pyserini's LuceneImpactSearcher on its index."""
    import shutil

    from splade_lucene.experiments.experiment import run_experiment
    from splade_lucene.search.encoders import QueryEncoder
    from splade_lucene.search.searcher import Searcher

    out, _ = tiny_run
    dataset = tmp_path / "data"
    shutil.copytree(tiny_dataset, dataset)
    (dataset / "qrels" / "dev.tsv").write_text((dataset / "qrels" / "train.tsv").read_text())
    result = run_experiment(dataset, tmp_path / "exp", model=out, split="dev", encoder=EncoderSettings(max_length=64),
                            progress=False)
    assert result.metrics["nDCG@10"] > 0.3
    from pyserini.search.lucene import LuceneImpactSearcher

    queries = read_queries(tiny_dataset / "queries.jsonl")[:5]
    pyserini = LuceneImpactSearcher(str(result.index_dir), QueryEncoder.from_index(result.index_dir), min_idf=-1)
    with Searcher(result.index_dir) as ours:
        assert ours.query_encoder.encoder.model_path == str(out)
        for qid, text in queries:
            theirs = [(h.docid, round(h.score, 4)) for h in pyserini.search(text, k=10)]
            assert theirs == [(h.docid, round(h.score, 4)) for h in ours.search(text, k=10)]


def test_loss_falls(tiny_run):
    """Over three epochs of the same batches, the ranking loss of the last epoch is below the first's."""
    steps = json.loads((tiny_run[0] / "training.json").read_text())["steps"]
    first, last = np.mean([s["rank"] for s in steps[:8]]), np.mean([s["rank"] for s in steps[-8:]])
    assert last < 0.8 * first, (first, last)


def test_flops_weight_makes_vectors_sparser(tiny_dataset, tmp_path):
    """Higher lambda: fewer non-zero terms (documents and queries)."""
    runs = {}
    for lam in (0.0, 0.5):
        r = train(tiny_dataset, tmp_path / f"lam{lam}", progress=False, lambda_q=lam, lambda_d=lam,
                  lambda_warmup_steps=0, **{**TINY, "epochs": 2})
        runs[lam] = r.manifest
    for key in ("nonzero_d", "nonzero_q"):
        plain = np.mean([s[key] for s in runs[0.0]["steps"][-4:]])
        sparse = np.mean([s[key] for s in runs[0.5]["steps"][-4:]])
        assert sparse < 0.8 * plain, (key, plain, sparse)
    assert runs[0.5]["dev"][-1]["mean_terms_per_document"] < runs[0.0]["dev"][-1]["mean_terms_per_document"]


def test_dev_part_fixed_by_seed(tiny_dataset):
    data = qrels_pairs(tiny_dataset, "train")
    a, b, c = carve_dev(data, 0.25, 1), carve_dev(data, 0.25, 1), carve_dev(data, 0.25, 2)
    assert a == b and a != c
    assert len(a[1]) == 10 and not set(a[0]) & set(a[1]) and len(a[0]) + len(a[1]) == len(data.queries)


# -- bad input: each a clear error, nothing written --------------------------------------------------

def _bad(dataset, out, match, **kw):
    with pytest.raises((TrainingError, ValueError, FileExistsError, ModelError), match=match):
        train(dataset, out, progress=False, **{**TINY, **kw})
    assert not out.exists()


def test_dataset_without_training_split(datasets, tmp_path):
    _bad(datasets / "cranfield", tmp_path / "m", r"no training split train\.tsv .*test")


def test_test_split_refused(datasets, tmp_path):
    _bad(datasets / "scifact", tmp_path / "m", "test split is for evaluation only", split="test")


def test_qrels_naming_unknown_query_or_document(tiny_dataset, tmp_path):
    import shutil

    for row, match in (("no-such-query\t4983\t1\n", "query 'no-such-query' is not in"),
                       ("0\tno-such-doc\t1\n", "judges document 'no-such-doc'")):
        bad = tmp_path / "bad"
        shutil.rmtree(bad, ignore_errors=True)
        shutil.copytree(tiny_dataset, bad)
        with open(bad / "qrels" / "train.tsv", "a") as fh:
            fh.write(row)
        if row.startswith("0\t"):  # the query exists in queries.jsonl
            first = (tiny_dataset / "qrels" / "train.tsv").read_text().splitlines()[1].split("\t")[0]
            (bad / "qrels" / "train.tsv").write_text((bad / "qrels" / "train.tsv").read_text().replace(
                "0\tno-such-doc", f"{first}\tno-such-doc"))
        _bad(bad, tmp_path / "m", match)


def test_split_smaller_than_batch(tiny_dataset, tmp_path):
    _bad(tiny_dataset, tmp_path / "m", "fewer than --batch-size 64", batch_size=64)


def test_model_without_mlm_head_refused_unless_asked(tmp_path):
    from transformers import AutoModel

    dense = tmp_path / "dense"
    AutoModel.from_pretrained(default_model_path()).save_pretrained(dense)  # BERT body, no MLM head
    for name in ("tokenizer.json", "tokenizer_config.json"):
        (dense / name).write_bytes((default_model_path() / name).read_bytes())
    with pytest.raises(ModelError, match="no complete masked-LM head .*cls.predictions"):
        SpladeEncoder(str(dense))
    with pytest.raises(ModelError, match="no complete masked-LM head"):
        SpladeModel(str(dense))
    model = SpladeModel(str(dense), new_head=True)
    assert model.vectors(["a short text"], 32).shape == (1, 30522)


def test_output_holding_a_model_refused_before_training(tiny_run, tiny_dataset):
    out, _ = tiny_run
    before = sha256_file(out / "model.safetensors")
    with pytest.raises(FileExistsError, match="already holds a model; pass --overwrite"):
        train(tiny_dataset, out, progress=False, **TINY)
    assert sha256_file(out / "model.safetensors") == before


def test_nan_loss_stops_and_keeps_last_checkpoint(tiny_dataset, tmp_path, monkeypatch):
    from splade_lucene.training import objective as training

    real = training.flops
    calls = {"n": 0}

    def poisoned(vectors):  # the 7th step's FLOPS term goes NaN (two calls a step)
        calls["n"] += 1
        value = real(vectors)
        return value * float("nan") if calls["n"] >= 13 else value

    monkeypatch.setattr(training, "flops", poisoned)
    out = tmp_path / "m"
    with pytest.raises(TrainingError, match=r"loss is nan at step 7 .*last good checkpoint \(step 6\) is kept"):
        train(tiny_dataset, out, progress=False, **TINY)
    assert not out.exists()
    assert [p.name for p in sorted((tmp_path / ".m.training").glob("checkpoint-*.pt"))] == [
        "checkpoint-0000004.pt", "checkpoint-0000006.pt"]  # the newest two
    state = torch.load(tmp_path / ".m.training" / "checkpoint-0000006.pt", weights_only=True)
    assert state["step"] == 6 and len(json.loads(state["history"])["steps"]) == 6


def test_cli_bad_input_one_line_exit_2(datasets, tmp_path):
    proc = subprocess.run([sys.executable, "-m", "splade_lucene", "train", "--dataset", str(datasets / "cranfield"),
                           "--output", str(tmp_path / "m")], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 2
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("splade-lucene train: error:") and "train.tsv" in lines[0]


def test_settings_checked():
    with pytest.raises(ValueError, match="--batch-size must be at least 2"):
        TrainSettings(batch_size=1).check()
    with pytest.raises(ValueError, match="--lr must be a positive number"):
        TrainSettings(lr=float("nan")).check()
    with pytest.raises(ValueError, match="--dev-fraction must be in"):
        TrainSettings(dev_fraction=1.0).check()


def test_train_condition_in_an_experiment_file(tiny_dataset, tmp_path):
    """An experiment file's `train` condition fine-tunes, then runs and grades the splade pipeline with
    the trained model; a second run reuses the model while its settings and data are unchanged."""
    import shutil

    from splade_lucene.experiments.reproduce import load_spec, reproduce

    dataset = tmp_path / "tiny"
    shutil.copytree(tiny_dataset, dataset)
    (dataset / "qrels" / "dev.tsv").write_text((dataset / "qrels" / "train.tsv").read_text())
    settings = {k: v for k, v in TINY.items() if k != "max_length"}
    spec = tmp_path / "tiny.yaml"
    spec.write_text(json.dumps({
        "dataset": str(dataset), "split": "dev", "k": 100,
        "conditions": {"ft": {"type": "train", "max_length": 64, "train": settings,
                              "expected": {"nDCG@10": 1.5}}}}))  # no ranking scores 1.5: must FAIL
    assert load_spec(spec).conditions["ft"].settings["train"]["lr"] == TINY["lr"]
    out = tmp_path / "out"
    grades = reproduce([spec], out, progress=False, echo=lambda line: None)
    manifest = json.loads((out / "tiny" / "ft" / "manifest.json").read_text())
    assert manifest["training"]["reused"] is False and manifest["training"]["settings"]["max_length"] == 64
    assert manifest["model"]["sha256"] == manifest["training"]["model_sha256"]
    nd = next(g for g in grades if g.metric == "nDCG@10")
    # the graded figure is the run's own, computed apart from the grading (trec_eval's definitions)
    from splade_lucene.evaluation.metrics import evaluate
    from splade_lucene.formats.trec import read_qrels, read_run

    own = evaluate(read_qrels(dataset / "qrels" / "dev.tsv"), read_run(out / "tiny" / "ft" / "run.trec"),
                   remove_query=True, warn=False).metrics["nDCG@10"]
    assert nd.actual == pytest.approx(own, abs=1e-12) and 0 < own < 1 and nd.status == "FAIL"
    run = sha256_file(out / "tiny" / "ft" / "run.trec")
    spec.write_text(spec.read_text().replace("1.5", f"{own:.4f}"))  # now the figure it gets: OK
    grades = reproduce([spec], out, progress=False, echo=lambda line: None)
    assert next(g for g in grades if g.metric == "nDCG@10").status == "OK"
    again = json.loads((out / "tiny" / "ft" / "manifest.json").read_text())
    assert again["training"]["reused"] is True and sha256_file(out / "tiny" / "ft" / "run.trec") == run
    # --seeds: the condition again with another seed (its own, 13, adds nothing), ungraded, and the spread
    said: list[str] = []
    grades = reproduce([spec], out, progress=False, echo=said.append, seeds=[13, 14])
    assert sorted({g.condition for g in grades}) == ["ft", "ft@seed14"]
    assert {g.status for g in grades if g.condition == "ft@seed14"} == {"UNCHECKED"}
    variant = json.loads((out / "tiny" / "ft@seed14" / "manifest.json").read_text())
    assert variant["training"]["settings"]["seed"] == 14 and variant["training"]["reused"] is False
    assert variant["training"]["model_sha256"] != again["training"]["model_sha256"]
    other = next(g.actual for g in grades if g.condition == "ft@seed14" and g.metric == "nDCG@10")
    assert said[-1].startswith("tiny/ft nDCG@10 over 2 seeds: ") and f"13: {own:.4f}, 14: {other:.4f}" in said[-1]


@pytest.mark.parametrize("train, message", [
    ({"lrr": 1}, r"unknown training settings \['lrr'\]"),
    ({"max_length": 64}, "set 'max_length' beside 'train'"),
])
def test_bad_train_condition_refused(tmp_path, train, message):
    from splade_lucene.experiments.reproduce import ExperimentFileError, load_spec

    path = tmp_path / "bad.yaml"
    path.write_text(json.dumps({"dataset": "x", "conditions": {"t": {"type": "train", "train": train}}}))
    with pytest.raises(ExperimentFileError, match=message):
        load_spec(path)


def test_generated_queries_as_pairs(datasets, tmp_path):
    import gzip

    from splade_lucene.formats.collection import InputError
    from splade_lucene.training.data import generated_query_pairs

    data = generated_query_pairs(datasets / "arguana", datasets / "arguana" / "generated-queries.jsonl.gz")
    assert len(data.queries) + sum(data.dropped.values()) == 25_844
    qid = next(iter(data.queries))
    assert data.positives[qid] == [data.groups[qid]] and data.judged[qid] == {data.groups[qid]}
    train_q, dev_q = carve_dev(data, 0.02, 13)
    assert not {data.groups[q] for q in train_q} & {data.groups[q] for q in dev_q}  # split by document
    bad = tmp_path / "gen.jsonl.gz"
    with gzip.open(bad, "wt") as fh:
        fh.write('{"_id": "test-environment-aeghhgwpe-pro02b", "query": "meat"}\n{"_id": "nope", "query": "x"}\n')
    with pytest.raises(InputError, match=r"gen.jsonl.gz:2: document 'nope' is not in"):
        generated_query_pairs(datasets / "arguana", bad)


def test_pseudo_queries_titles_else_sentences(datasets):
    from splade_lucene.training.data import PSEUDO_MIN_WORDS, common_words, pseudo_query_pairs

    cran = pseudo_query_pairs(datasets / "cranfield", 13)
    first = next(q for q in cran.queries if cran.positives[q] == ["1"])
    assert cran.queries[first] == "experimental investigation of the aerodynamics of a wing in a slipstream ."
    short = "documents with fewer than 8 words besides the pseudo-query"
    assert cran.dropped == {"documents without words": 2}  # the two empty documents
    # the title (twice in the indexed text: title field, then the text's first line) is taken out of its positive
    assert cran.positive_texts[first].startswith("an experimental study of a wing in a propeller slipstream")
    assert cran.queries[first] not in cran.positive_texts[first]
    cacm = pseudo_query_pairs(datasets / "cacm", 13, spans=False)
    assert len(cacm.queries) + sum(cacm.dropped.values()) == 3204
    # a title-only CACM record leaves an author, a date and codes: no pair, but still in the corpus
    assert cacm.dropped[short] > 1000 and len(cacm.corpus) == 3204
    assert all(sum(sum(c.isalpha() for c in w) >= 2 for w in t.split()) >= PSEUDO_MIN_WORDS
               for t in cacm.positive_texts.values())
    texts = {d.id: d.text for d in read_corpus(datasets / "cacm" / "corpus.jsonl")}
    for q in list(cacm.queries)[::200]:
        query, doc = cacm.queries[q], texts[cacm.positives[q][0]]
        assert query in doc and sum(any(c.isalpha() for c in w) for w in query.split()) >= 4
        assert query not in cacm.positive_texts[q]
    assert pseudo_query_pairs(datasets / "cacm", 13, spans=False).queries == cacm.queries != pseudo_query_pairs(
        datasets / "cacm", 14, spans=False).queries
    # spans of words stand in where the drawn sentence leaves too little (or no sentence reads as
    # one); every pair drawn from a sentence is unchanged
    spans = pseudo_query_pairs(datasets / "cacm", 13)
    assert len(spans.queries) > len(cacm.queries) + 100
    before = {cacm.positives[q][0]: cacm.queries[q] for q in cacm.queries}
    after = {spans.positives[q][0]: spans.queries[q] for q in spans.queries}
    from_sentences = {d: query for d, query in before.items() if query != " ".join(texts[d].split()[:16])}
    assert len(from_sentences) > 1800 and all(after[d] == query for d, query in from_sentences.items())
    # a title-only record (a title, names, the labels every record carries, dates, codes) gives no span:
    # its positive must keep 8 prose words that are not in most documents
    assert common_words(texts.values()) == {"cacm", "jb", "pm", "of", "the"}
    for q in spans.queries:
        if spans.positives[q][0] not in before:
            assert sum(not re.search(r"\d", w) and len(re.findall(r"[^\W\d_]", w)) >= 2 and w.lower() not in
                       {"cacm", "jb", "pm", "of", "the"} for w in spans.positive_texts[q].split()) >= PSEUDO_MIN_WORDS


@pytest.mark.parametrize("name", ["cranfield", "arguana"])
def test_pseudo_queries_never_a_title_other_documents_carry(datasets, name):
    """A title several documents carry (ArguAna's topic tags; Cranfield's "note on creep buckling of
    columns ." 17 times) is no query: such a document gets one of its own sentences, never the title;
    a title of one document is still its query."""
    from collections import Counter

    from splade_lucene.training.data import pseudo_query_pairs

    docs = {d.id: d for d in read_corpus(datasets / name / "corpus.jsonl")}
    counts = Counter(d.title.strip() for d in docs.values() if d.title.strip())
    data = pseudo_query_pairs(datasets / name, 13)
    query_of = {data.positives[q][0]: text for q, text in data.queries.items()}
    tagged = [d for d in query_of if counts[docs[d].title.strip()] > 1]
    assert len(tagged) == {"cranfield": 48, "arguana": 2699}[name]
    assert all(query_of[d] not in counts for d in tagged)
    assert all(query_of[d] in docs[d].text for d in tagged)
    assert all(query_of[d] == docs[d].title.strip() for d in query_of if counts[docs[d].title.strip()] == 1)


def assert_span_pairs(data, texts: dict[str, str]) -> None:
    """Each pair of a document without sentence punctuation: its query a run of 4 to 16 of its words,
    its positive the words before and after, at least 8 of them with letters."""
    from splade_lucene.training.data import PSEUDO_MIN_WORDS

    for q, query in data.queries.items():
        words, span = texts[data.positives[q][0]].split(), query.split()
        assert 4 <= len(span) <= 16
        starts = [i for i in range(len(words)) if words[i:i + len(span)] == span]
        assert any(" ".join(words[:i] + words[i + len(span):]) == data.positive_texts[q] for i in starts)
        assert sum(sum(c.isalpha() for c in w) >= 2 for w in data.positive_texts[q].split()) >= PSEUDO_MIN_WORDS
        if query not in re.split(r"(?<=[.!?])\s+", texts[data.positives[q][0]]):
            # a span reads as prose: no word with a digit, three quarters of them with two letters or more
            assert not re.search(r"\d", query)
            assert 4 * sum(len(re.findall(r"[^\W\d_]", w)) >= 2 for w in span) >= 3 * len(span)


@pytest.mark.parametrize("name", ["cacm", "cranfield"])
def test_pseudo_queries_from_text_without_titles_or_punctuation(datasets, tmp_path, name):
    """Copies without titles, lowercased, without punctuation: each text is one "sentence", all of it,
    which left nothing for the positive; spans of words that read as prose make a pair of nearly every
    Cranfield document, and of CACM's except its records without an abstract (a title, names, dates
    and codes)."""
    from splade_lucene.experiments.experiment import plain_dataset
    from splade_lucene.training.data import pseudo_query_pairs

    plain = plain_dataset(datasets / name, tmp_path / name)
    docs = {d.id: d for d in read_corpus(plain / "corpus.jsonl")}
    assert all(not d.title and d.text == d.text.lower() and not re.search(r"[^\w\s]", d.text) for d in docs.values())
    assert (plain / "qrels" / "test.tsv").read_bytes() == (datasets / name / "qrels" / "test.tsv").read_bytes()
    data = pseudo_query_pairs(plain, 13)
    assert len(data.queries) >= {"cacm": 0.55, "cranfield": 0.95}[name] * len(docs)
    assert_span_pairs(data, {d: doc.text for d, doc in docs.items()})
    assert pseudo_query_pairs(plain, 13).queries == data.queries != pseudo_query_pairs(plain, 14).queries
    if name == "cranfield":
        with pytest.raises(TrainingError, match=r"no document gives a pseudo-query \(1,398 documents with fewer "
                                                r"than 8 words .*; 2 documents without words\): a text without"):
            pseudo_query_pairs(plain, 13, spans=False)


def test_pseudo_queries_from_one_sentence_documents(datasets, tmp_path):
    """SciFact's titles as documents of one sentence each (no title field): spans of their words where
    they are long enough; documents too short for any pair are counted by reason and named when no
    document gives one."""
    from splade_lucene.training.data import pseudo_query_pairs

    docs = [d for _, d in zip(range(400), read_corpus(datasets / "scifact" / "corpus.jsonl"))]
    folder = tmp_path / "titles"
    folder.mkdir()
    (folder / "corpus.jsonl").write_text("".join(json.dumps({"_id": d.id, "text": d.title}) + "\n" for d in docs))
    data = pseudo_query_pairs(folder, 13)
    long_enough = [d for d in docs if len(d.title.split()) >= 16]
    assert len(long_enough) > 40 and len(data.queries) >= len(long_enough)
    assert_span_pairs(data, {d.id: d.title for d in docs})
    (folder / "corpus.jsonl").write_text('{"_id": "a", "text": "too short to split"}\n{"_id": "b", "text": "..."}\n'
                                         '{"_id": "c", "text": "twelve words here but only eight of them 1 2 3 4"}\n')
    with pytest.raises(TrainingError, match=r"\(1 documents too short for a span of words \(12 words needed\); "
                                            r"1 documents without a span of words that reads as prose and leaves "
                                            r"enough; 1 documents without words\)"):
        pseudo_query_pairs(folder, 13)


def test_pseudo_query_dev_pool_holds_the_documents_without_their_queries(datasets, tmp_path):
    from splade_lucene.training.trainer import Trainer

    settings = TrainSettings(pairs="pseudo", dev_fraction=0.05, dev_depth=5, negatives_depth=5)
    trainer = Trainer(datasets / "cranfield", tmp_path / "m", settings, progress=False)
    trainer.load_data()
    trainer.prepare()
    pool = {d.id: d.text for d in read_corpus(trainer.dev / "corpus.jsonl")}
    full = {d.id: d.text for d in read_corpus(datasets / "cranfield" / "corpus.jsonl")}
    assert len(trainer.dev_qids) == 70
    for q in trainer.dev_qids:
        doc = trainer.data.positives[q][0]
        # the dev task is the training task: find the document from its title, which it no longer holds
        assert trainer.data.queries[q] in full[doc] and trainer.data.queries[q] not in pool[doc]
        assert pool[doc] == trainer.data.positive_texts[q]
    others = set(pool) - {trainer.data.positives[q][0] for q in trainer.dev_qids}
    assert others and all(pool[d] == full[d] for d in others)  # BM25's pool documents are whole


@pytest.mark.parametrize("mode", ["learned", "idf"])
def test_inference_free_training(tiny_dataset, tmp_path, mode):
    """--query-mode: queries weighted by a table (IDF of the training corpus, divided by its mean over
    the training queries' tokens; learned: trained from there), FLOPS on the documents only, and the
    index of the trained model is built for its mode by default."""
    from splade_lucene.experiments.experiment import run_experiment
    from splade_lucene.indexing.query_table import TableQueryEncoder, corpus_idf, load_table, sha256_table
    from splade_lucene.search.encoders import QueryEncoder
    from splade_lucene.search.searcher import Searcher

    settings = {**TINY, "query_mode": mode} if mode == "learned" else {**TINY, "query_mode": mode, "max_steps": 4}
    out = tmp_path / "m"
    result = train(tiny_dataset, out, progress=False, **settings)
    manifest = result.manifest
    assert manifest["settings"]["query_mode"] == mode and manifest["query_table_scale"] > 0
    for step in manifest["steps"]:  # no query FLOPS in the loss
        assert step["loss"] == pytest.approx(step["rank"] + step["lambda_d"] * step["flops_d"], rel=1e-4, abs=1e-6)
    encoder = SpladeEncoder(str(out), max_length=64)
    if mode == "learned":
        table = load_table(out / "query_weights.npy", encoder.vocab_size)
        assert manifest["query_table_sha256"] == sha256_table(table)
        corpus = [d.text for d in read_corpus(tiny_dataset / "corpus.jsonl")]
        start = corpus_idf(encoder.tokenizer, corpus, encoder.vocab_size, 64) / manifest["query_table_scale"]
        seen = set()
        for _, text in read_queries(tiny_dataset / "queries.jsonl"):
            seen.update(encoder.tokenizer(text, add_special_tokens=False)["input_ids"])
        unseen = np.setdiff1d(np.arange(encoder.vocab_size), sorted(seen))
        assert np.allclose(table[unseen], start[unseen], rtol=1e-5, atol=1e-6), "only query tokens are trained"
        assert np.abs(table[sorted(seen)] - start[sorted(seen)]).max() > 1e-3
    else:
        assert not (out / "query_weights.npy").exists() and manifest["query_table_sha256"] is None
    # an experiment with the model: its index is built for the model's mode, searched with no model
    result = run_experiment(tiny_dataset, tmp_path / "exp", model=out, split="train",
                            encoder=EncoderSettings(max_length=64), progress=False)
    qenc = QueryEncoder.from_index(result.index_dir)
    assert isinstance(qenc, TableQueryEncoder) and qenc.mode == mode
    if mode == "learned":
        assert qenc.table_sha256 == manifest["query_table_sha256"]
        # the folder is also sentence-transformers' inference-free Router: the same vectors both sides
        st = need_module("sentence_transformers", "st")
        queries = [t for _, t in read_queries(tiny_dataset / "queries.jsonl")]
        docs = [d.text for _, d in zip(range(40), read_corpus(tiny_dataset / "corpus.jsonl"))]
        theirs = st.SparseEncoder(str(out), device="cpu")
        drop = encoder.tokenizer.all_special_ids
        assert_close(theirs.encode_document(docs, convert_to_tensor=True).to_dense().numpy(), encoder.encode(docs),
                     drop)
        equal, total, _ = compare(theirs.encode_query(queries, convert_to_tensor=True).to_dense().numpy(),
                                  qenc.vectors(queries), drop)
        assert total > 100 and equal == total
    assert result.metrics["nDCG@10"] > 0.3
    with Searcher(result.index_dir) as s:
        assert s.query_encoder.table_sha256 == qenc.table_sha256


def test_pseudo_queries_drawn_again_each_epoch(tiny_dataset, tmp_path):
    """--pseudo-draws N: each document gets up to N pseudo-queries (its title, then its other sentences,
    then spans), epoch e trains draw e mod N; the first draws are the pairs of N = 1 and the only ones
    carved into train and dev, so dev parts are the same whatever N."""
    from splade_lucene.training.data import TrainingSet, carve_dev, pseudo_query_pairs

    one, three = pseudo_query_pairs(tiny_dataset, 13), pseudo_query_pairs(tiny_dataset, 13, draws=3)
    assert {q: three.queries[q] for q in three.groups} == one.queries
    assert carve_dev(three, 0.2, 13) == carve_dev(one, 0.2, 13)
    assert sum(len(v) for v in three.variants.values()) > 1.5 * len(three.groups)
    corpus = {d.id: d.text for d in read_corpus(tiny_dataset / "corpus.jsonl")}
    for q, variants in three.variants.items():
        texts = [three.queries[q], *(three.queries[v] for v in variants)]
        assert len(variants) <= 2 and len(set(texts)) == len(texts)
        for v in variants:
            doc = three.positives[v][0]
            assert three.positives[q] == [doc] and " ".join(three.queries[v].split()) in " ".join(corpus[doc].split())
            assert three.queries[v] not in three.positive_texts[v]
    settings = TrainSettings(pairs="pseudo", pseudo_draws=3, batch_size=4, dev_fraction=0.2, negatives="none")
    data = TrainingSet(tiny_dataset, settings)
    per_epoch = data.steps_per_epoch
    for epoch in range(4):
        order = data.batch_queries(epoch * per_epoch + 1)
        drawn = data.batch(epoch * per_epoch + 1)[0]
        for q, d in zip(order, drawn):
            variants = data.data.variants.get(q, [])
            draw = epoch % (len(variants) + 1)
            assert d == (q if draw == 0 else variants[draw - 1]) and data.data.positives[d] == data.data.positives[q]
        if epoch in (0, 1):  # the first draws in epoch 0, a second draw in epoch 1 wherever there is one
            assert [d == q for d, q in zip(drawn, order)] == [epoch == 0 or not data.data.variants.get(q)
                                                              for q in order]
    # a run into its second epoch (its second draws, their BM25 negatives) on the first 48 documents
    small = tmp_path / "small"
    small.mkdir()
    lines = (tiny_dataset / "corpus.jsonl").read_text(encoding="utf-8").splitlines(keepends=True)
    (small / "corpus.jsonl").write_text("".join(lines[:48]), encoding="utf-8")
    result = train(small, tmp_path / "m", progress=False, **{**TINY, "pairs": "pseudo", "pseudo_draws": 2,
                                                             "epochs": 2, "dev_fraction": 0.0, "max_steps": 13})
    assert result.manifest["settings"]["pseudo_draws"] == 2 and len(result.manifest["steps"]) == 13
    assert result.manifest["derived"]["steps_per_epoch"] == 12


def test_teacher_bm25_is_lucenes(reproduced, datasets):
    """The teacher's BM25, computed from the analyzer's terms, is the score Lucene gives (the
    SciFact BM25 index `reproduce` builds: the first 60 test queries' top 10)."""
    from splade_lucene.formats.trec import read_qrels
    from splade_lucene.search.bm25 import BM25Searcher, analyze
    from splade_lucene.training.teacher import BM25Stats, bm25_score, lucene_length

    # SmallFloat.byte4ToInt(intToByte4(n)): exact below 24, then four significant bits
    assert [lucene_length(n) for n in (0, 23, 24, 39, 40, 41, 47, 100, 1000)] == [0, 23, 24, 39, 40, 40, 46, 96, 984]
    docs = {d.id: d.text for d in read_corpus(datasets / "scifact" / "corpus.jsonl")}
    terms = dict(zip(docs, analyze(list(docs.values()))))
    stats = BM25Stats(list(terms.values()))
    queries = dict(read_queries(datasets / "scifact" / "queries.jsonl"))
    qids = list(read_qrels(datasets / "scifact" / "qrels" / "test.tsv"))[:60]
    searcher = BM25Searcher(reproduced[0] / "scifact" / "bm25" / "index")
    try:
        pairs = [(h.score, bm25_score(analyze([queries[q]])[0], terms[h.docid], stats))
                 for q in qids for h in searcher.search(queries[q], k=10)]
    finally:
        searcher.close()
    assert len(pairs) == 600 and all(abs(mine - lucene) <= 1e-4 * lucene for lucene, mine in pairs)
    # a document's kept term counts score as its terms do
    from collections import Counter

    query = analyze([queries[qids[0]]])[0]
    assert all(bm25_score(query, Counter(terms[d]), stats) == bm25_score(query, terms[d], stats)
               for d in list(docs)[:200])


def test_hybrid_teacher_logits():
    from splade_lucene.training.teacher import hybrid_logits

    bm25 = np.array([[3.0, 1.0, 0.0, 9.0], [2.0, 2.0, 2.0, 2.0]])
    base = np.array([[10.0, 20.0, 0.0, 5.0], [1.0, 5.0, 3.0, 2.0]])
    out = np.array([[False, False, False, True], [False, False, False, False]])
    got = hybrid_logits(bm25, base, out, alpha=0.7, temperature=0.1)
    # row 0: bm25 over the first three (9 left out) 1, 1/3, 0; base 0.5, 1, 0; row 1: bm25 all equal -> 0
    assert np.allclose(got[0, :3], [(0.7 + 0.15) * 10, (0.7 / 3 + 0.3) * 10, 0.0]) and got[0, 3] == -np.inf
    assert np.allclose(got[1], [0.0, 3.0, 1.5, 0.75])  # base 0, 1, 0.5, 0.25 times 0.3 / 0.1
    assert np.allclose(hybrid_logits(bm25, base, out, alpha=1.0, temperature=1.0)[0, :3], [1, 1 / 3, 0])


def test_distillation_from_the_hybrid(tiny_dataset, tmp_path):
    """--teacher hybrid: a KL term is logged and learned from; with --distill-weight 0 the run is the
    run without a teacher, weight for weight (the teacher draws no randomness)."""
    with pytest.raises(ValueError, match="--teacher-alpha must be in"):
        TrainSettings(teacher="hybrid", teacher_alpha=1.5).check()
    with pytest.raises(ValueError, match="--teacher-temperature must be a positive number"):
        TrainSettings(teacher="hybrid", teacher_temperature=0).check()
    with pytest.raises(ValueError, match="--teacher must be one of"):
        TrainSettings(teacher="cross-encoder").check()
    quick = {**TINY, "max_steps": 3, "dev_fraction": 0.0, "threads": 1}
    taught = train(tiny_dataset, tmp_path / "t", progress=False, teacher="hybrid", **quick)
    assert all(np.isfinite(s["kl"]) and s["kl"] > 0 for s in taught.manifest["steps"])
    plain = train(tiny_dataset, tmp_path / "p", progress=False, **quick)
    muted = train(tiny_dataset, tmp_path / "m", progress=False, teacher="hybrid", distill_weight=0.0, **quick)
    assert sha256_file(plain.output / "model.safetensors") == sha256_file(muted.output / "model.safetensors")
    assert sha256_file(plain.output / "model.safetensors") != sha256_file(taught.output / "model.safetensors")


def test_trained_with_reads_settings_added_since_as_their_defaults(tiny_run, tmp_path):
    """A model trained before a setting existed was trained with its default: an experiment file need
    not train it again; any other value, or a changed recorded one, does."""
    import shutil

    from splade_lucene.training.settings import make_settings
    from splade_lucene.training.trainer import trained_with

    out, result = tiny_run
    settings = make_settings(**TINY)
    assert trained_with(out, settings)
    old = tmp_path / "old"
    shutil.copytree(out, old)
    manifest = json.loads((old / "training.json").read_text())
    for name in ("teacher", "teacher_alpha", "teacher_temperature", "distill_weight", "pseudo_draws"):
        del manifest["settings"][name]
    (old / "training.json").write_text(json.dumps(manifest))
    assert trained_with(old, settings)
    assert not trained_with(old, make_settings(**TINY, teacher="hybrid"))
    assert not trained_with(old, make_settings(**{**TINY, "lr": 1e-4}))
    manifest["settings"]["seed"] = 14
    (old / "training.json").write_text(json.dumps(manifest))
    assert not trained_with(old, settings)
    # pseudo-query pairs: the same settings under older rules draw other pairs, so a model is reused
    # only where its manifest records today's rules (none recorded: the first rules)
    from splade_lucene.training.data import PSEUDO_RULES

    pseudo = make_settings(**TINY, pairs="pseudo")
    manifest["settings"] = {**manifest["settings"], "seed": settings.seed, "pairs": "pseudo"}
    manifest["dataset"]["pseudo_rules"] = PSEUDO_RULES
    (old / "training.json").write_text(json.dumps(manifest))
    assert trained_with(old, pseudo)
    del manifest["dataset"]["pseudo_rules"]
    (old / "training.json").write_text(json.dumps(manifest))
    assert not trained_with(old, pseudo)
    assert json.loads((out / "training.json").read_text())["dataset"]["pseudo_rules"] is None  # qrels pairs
