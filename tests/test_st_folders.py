"""sentence-transformers SparseEncoder folders (``modules.json``), checked against sentence-transformers
itself: folders it writes from SPLADE-tiny (max and sum pooling, the ``log1p_relu`` activation, the
inference-free ``Router``) encode here to the same quantized vectors as ``SparseEncoder.encode_document``
and ``encode_query``; anything else in a folder is refused naming it, rather than giving other vectors
silently."""

from __future__ import annotations

import json

import numpy as np
import pytest
from conftest import need_module

from splade_lucene.core.errors import SettingError
from splade_lucene.core.quantize import quantize
from splade_lucene.encoding.loading import ModelError, default_model_path, model_weights_sha256
from splade_lucene.encoding.model import SpladeEncoder
from splade_lucene.formats.collection import read_corpus

SCALE = 100.0


@pytest.fixture(scope="module")
def st():
    need_module("sentence_transformers", "st")
    import sentence_transformers

    return sentence_transformers


@pytest.fixture(scope="module")
def folders(st, tmp_path_factory):
    """Folders written by sentence-transformers from SPLADE-tiny: max and sum pooling (the deprecated
    MLMTransformer module), a Transformer with the fill-mask task and log1p_relu, and the
    inference-free Router (a SparseStaticEmbedding of seeded random weights, [UNK] and the other special
    tokens 0, as an IDF table has them, for queries; the masked LM with max pooling for documents)."""
    import torch
    from sentence_transformers import SparseEncoder
    from sentence_transformers.base.modules import Router, Transformer
    from sentence_transformers.sparse_encoder.modules import MLMTransformer, SparseStaticEmbedding, SpladePooling

    root = tmp_path_factory.mktemp("st")
    base = str(default_model_path())
    made = {
        "max": [MLMTransformer(base), SpladePooling("max")],
        "sum": [MLMTransformer(base), SpladePooling("sum")],
        "log1p_relu": [Transformer(base, transformer_task="fill-mask"),
                       SpladePooling("max", activation_function="log1p_relu")],
    }
    for name, modules in made.items():
        SparseEncoder(modules=modules, device="cpu").save(str(root / name))
    mlm = MLMTransformer(base)
    weights = torch.rand(len(mlm.tokenizer.get_vocab()), generator=torch.Generator().manual_seed(3)) * 3
    weights[sorted(set(mlm.tokenizer.all_special_ids))] = 0
    router = Router.for_query_document(
        query_modules=[SparseStaticEmbedding(tokenizer=mlm.tokenizer, weight=weights, frozen=True)],
        document_modules=[mlm, SpladePooling("max")])
    SparseEncoder(modules=[router], device="cpu").save(str(root / "router"))
    return root


@pytest.fixture(scope="module")
def scifact(datasets):
    """SciFact's 300 test queries and its first 100 documents."""
    from splade_lucene.experiments.experiment import judged_dataset

    _, queries, _ = judged_dataset(datasets / "scifact", "test")
    docs = [d.text for _, d in zip(range(100), read_corpus(datasets / "scifact" / "corpus.jsonl"))]
    return [text for _, text in queries], docs


def quantized(ids, weights, drop) -> dict[int, int]:
    keep = ~np.isin(ids, drop)
    ids, q = quantize(np.asarray(ids)[keep], np.asarray(weights)[keep], SCALE)
    return dict(zip(ids.tolist(), q.tolist()))


def compare(theirs, ours, drop) -> tuple[int, int, int]:
    """(pairs equal, pairs, largest difference) between sentence-transformers' dense rows and our
    vectors, quantized (special tokens left out: this package never weighs them)."""
    equal = total = worst = 0
    for row, vec in zip(theirs, ours):
        a = quantized(np.flatnonzero(row), row[np.flatnonzero(row)], drop)
        b = quantized(vec.ids, vec.weights, drop)
        for term in set(a) | set(b):
            total += 1
            equal += a.get(term, 0) == b.get(term, 0)
            worst = max(worst, abs(a.get(term, 0) - b.get(term, 0)))
    return equal, total, worst


def assert_close(theirs, ours, drop):
    equal, total, worst = compare(theirs, ours, drop)
    assert total > 1000 and equal >= 0.999 * total and worst <= 1, (equal, total, worst)


@pytest.mark.parametrize("name", ["max", "sum", "log1p_relu"])
def test_sparse_encoder_folders_encode_as_sentence_transformers(st, folders, scifact, name):
    queries, docs = scifact
    theirs = st.SparseEncoder(str(folders / name), device="cpu")
    ours = SpladeEncoder(str(folders / name))
    drop = ours.tokenizer.all_special_ids
    assert ours.runtime.head.pooling == ("sum" if name == "sum" else "max")
    for texts, encode in ((docs, theirs.encode_document), (queries, theirs.encode_query)):
        dense = encode(texts, convert_to_tensor=True, batch_size=32).to_dense().numpy()
        assert_close(dense, ours.encode(texts), drop)


def test_pooling_is_part_of_the_model_identity(folders, encoder):
    """The same weights under another pooling give other vectors: their sha256 differs, so a
    collection encoded with one is not reused for the other; max of relu is the masked LM itself."""
    shas = {name: model_weights_sha256(folders / name) for name in ("max", "sum", "log1p_relu", "router")}
    assert shas["max"] == shas["router"] == encoder.weights_sha256
    assert len({shas["max"], shas["sum"], shas["log1p_relu"]}) == 3
    text = "kittens sleep in the warm sun"
    plain, summed = encoder.encode([text])[0], SpladeEncoder(str(folders / "sum")).encode([text])[0]
    assert summed.weights.sum() > plain.weights.sum()


def test_inference_free_router_builds_a_learned_index(st, folders, scifact, tmp_path):
    """The Router's documents through its masked LM, its queries through its table: an index built from
    it is in query mode learned, searched with no model, and both sides equal sentence-transformers'."""
    from splade_lucene.evaluation.pipeline import run_pipeline
    from splade_lucene.indexing.query_table import TableQueryEncoder, model_query_mode
    from splade_lucene.search.encoders import QueryEncoder

    queries, docs = scifact
    theirs = st.SparseEncoder(str(folders / "router"), device="cpu")
    ours = SpladeEncoder(str(folders / "router"))
    drop = ours.tokenizer.all_special_ids
    assert model_query_mode(folders / "router") == "learned"
    dense = theirs.encode_document(docs, convert_to_tensor=True, batch_size=32).to_dense().numpy()
    assert_close(dense, ours.encode(docs), drop)

    corpus = tmp_path / "corpus.jsonl"
    corpus.write_text("".join(json.dumps({"_id": f"d{i}", "title": "", "text": t}) + "\n"
                              for i, t in enumerate(docs)), encoding="utf-8")
    topics = [(f"q{i}", t) for i, t in enumerate(queries[:20])]
    qrels = {f"q{i}": {f"d{i}": 1} for i in range(20)}
    result = run_pipeline(corpus, topics, qrels, tmp_path / "out", encoder=ours, progress=False)
    assert result.index_metadata["query_mode"] == "learned"
    table = QueryEncoder.from_index(result.index_dir)
    assert isinstance(table, TableQueryEncoder) and table.mode == "learned"
    dense = theirs.encode_query(queries, convert_to_tensor=True).to_dense().numpy()
    equal, total, worst = compare(dense, table.vectors(queries), drop)
    assert total > 1000 and equal == total and worst == 0
    assert table.encode_batch(queries[:5]) == [
        {ours.id_to_term[i]: w for i, w in quantized(np.flatnonzero(r), r[np.flatnonzero(r)], drop).items()}
        for r in dense[:5]]


def sparse_encoder_folder(tmp_path, modules: list[dict], files: dict[str, dict]):
    folder = tmp_path / "st-model"
    folder.mkdir()
    for f in default_model_path().iterdir():
        if f.is_file():
            (folder / f.name).symlink_to(f)
    (folder / "modules.json").write_text(json.dumps(modules))
    for name, content in files.items():
        (folder / name).parent.mkdir(parents=True, exist_ok=True)
        (folder / name).write_text(json.dumps(content))
    return folder


MLM = {"idx": 0, "name": "0", "path": "", "type": "sentence_transformers.sparse_encoder.modules.MLMTransformer"}
TRANSFORMER = {**MLM, "type": "sentence_transformers.base.modules.transformer.Transformer"}
POOL = {"idx": 1, "name": "1", "path": "1_SpladePooling",
        "type": "sentence_transformers.sparse_encoder.modules.SpladePooling"}
ROUTER = {"idx": 0, "name": "0", "path": "", "type": "sentence_transformers.base.modules.router.Router"}
STATIC = "sentence_transformers.sparse_encoder.modules.sparse_static_embedding.SparseStaticEmbedding"


def router(query_types: list[str], routes=("query", "document")) -> dict:
    types = {f"query_{i}": t for i, t in enumerate(query_types)}
    types.update({"document_0": MLM["type"], "document_1": POOL["type"]})
    structure = {routes[0]: list(types)[:len(query_types)], routes[1]: ["document_0", "document_1"]}
    return {"router_config.json": {"types": types, "structure": structure}}


@pytest.mark.parametrize("modules, files, named", [
    ([MLM, POOL], {"1_SpladePooling/config.json": {"pooling_strategy": "mean"}}, "mean pooling of relu"),
    ([MLM, POOL], {"1_SpladePooling/config.json": {"activation_function": "gelu"}}, "max pooling of gelu"),
    ([{**MLM, "type": "sentence_transformers.sparse_encoder.modules.SparseAutoEncoder"}, POOL], {},
     "SparseAutoEncoder -> SpladePooling"),
    ([MLM], {}, "modules MLMTransformer are not supported"),
    ([TRANSFORMER, POOL], {"sentence_bert_config.json": {"transformer_task": "feature-extraction"}},
     "transformer_task 'feature-extraction'"),
    ([MLM, POOL], {"config_sentence_transformers.json": {"prompts": {"query": "query: "}}}, "prompts"),
    ([ROUTER], router([STATIC, STATIC]), "query route is SparseStaticEmbedding -> SparseStaticEmbedding"),
    ([ROUTER], router([MLM["type"]]), "query route is MLMTransformer"),
    ([ROUTER], router([STATIC], routes=("text", "document")), r"routes \['document', 'text'\]"),
    (["not a module"], {}, "not a sentence-transformers module list"),
])
def test_other_sparse_encoder_folders_are_refused_naming_why(tmp_path, modules, files, named):
    folder = sparse_encoder_folder(tmp_path, modules, files)
    with pytest.raises(ModelError, match=named):
        SpladeEncoder(str(folder))


def test_what_only_max_pooling_computes_refuses_other_folders(folders):
    """Windows would count shared positions twice in a sum; training and the ONNX export compute max
    pooling of log(1 + relu) only: each refuses another pooling, naming it."""
    from splade_lucene.encoding.loading import load_masked_lm

    with pytest.raises(SettingError, match="without --stride"):
        SpladeEncoder(str(folders / "sum"), stride=128)
    SpladeEncoder(str(folders / "log1p_relu"), stride=128)  # max pooling: windows are fine
    for name, named in (("sum", "sum pooling of relu"), ("log1p_relu", "max pooling of log1p_relu")):
        with pytest.raises(ModelError, match=f"takes {named}: only the encoder's torch backend"):
            load_masked_lm(str(folders / name))


def test_router_query_table_from_an_idf_json(folders, tmp_path):
    """A SparseStaticEmbedding whose config names an idf.json ({token: weight}) gives that table; a token
    outside the vocabulary is refused naming the file."""
    import shutil

    from splade_lucene.indexing.query_table import QueryTableError, model_query_table

    folder = tmp_path / "router-idf"
    shutil.copytree(folders / "router", folder)
    query = folder / "query_0_SparseStaticEmbedding"
    (query / "model.safetensors").unlink()
    (query / "config.json").write_text(json.dumps({"frozen": True, "path": "idf.json"}))
    (query / "idf.json").write_text(json.dumps({"cat": 2.5, "##s": 0.5, "sleep": 1.25}))
    weights, source, _ = model_query_table(folder)
    vocab = SpladeEncoder(str(folder)).tokenizer.get_vocab()
    assert source == str(query / "idf.json") and np.count_nonzero(weights) == 3
    assert (weights[vocab["cat"]], weights[vocab["##s"]], weights[vocab["sleep"]]) == (2.5, 0.5, 1.25)
    (query / "idf.json").write_text(json.dumps({"cat": 2.5, "not-a-wordpiece-token": 1.0}))
    with pytest.raises(QueryTableError, match="1 tokens are not in the vocabulary"):
        model_query_table(folder)
