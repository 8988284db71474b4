"""ONNX export: the graph (SPLADE head inside) against torch on real SciFact queries and documents,
loaded by plain onnxruntime with no project code, in the pipeline as ``backend="onnx"``, and bad
graphs or folders refused."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
from conftest import need_module

need_module("onnxruntime", "onnx")

from splade_lucene.core.quantize import quantize  # noqa: E402
from splade_lucene.encoding.loading import ModelError  # noqa: E402
from splade_lucene.encoding.model import SpladeEncoder  # noqa: E402


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    from splade_lucene.encoding.onnx import export_onnx

    return export_onnx(None, tmp_path_factory.mktemp("onnx") / "splade-tiny")


def quantized(vectors):
    return [dict(zip(*[z.tolist() for z in quantize(v.ids, v.weights, 100)])) for v in vectors]


def agreement(a, b):
    pairs = equal = worst = 0
    for x, y in zip(a, b):
        for t in set(x) | set(y):
            pairs += 1
            equal += x.get(t) == y.get(t)
            worst = max(worst, abs(x.get(t, 0) - y.get(t, 0)))
    return equal / pairs, worst, pairs


def test_folder_holds_graph_tokenizer_and_record(exported):
    from splade_lucene.encoding.loading import default_model_path, model_weights_sha256

    names = {p.name for p in exported.iterdir()}
    assert {"model.onnx", "tokenizer.json", "splade_onnx.json"} <= names
    meta = json.loads((exported / "splade_onnx.json").read_text())
    assert meta["vocab_size"] == 30522 and meta["outputs"] == ["output_idx", "output_weights"]
    assert meta["model_sha256"] == model_weights_sha256(default_model_path()) == model_weights_sha256(exported)
    assert not list(exported.parent.glob(".*")), "no writing folder or lock is left"


def test_onnx_vectors_equal_torch_on_scifact(exported, datasets, encoder):
    from splade_lucene.formats.collection import read_corpus, read_queries

    queries = [t for _, t in read_queries(datasets / "scifact" / "queries.jsonl")]
    docs = [d.text for i, d in zip(range(48), read_corpus(datasets / "scifact" / "corpus.jsonl"))]
    onnx = SpladeEncoder(str(exported), batch_size=8)
    assert onnx.backend == "onnx"
    for texts in (queries, docs):
        share, worst, pairs = agreement(quantized(encoder.encode(texts)), quantized(onnx.encode(texts)))
        assert share >= 0.999 and worst <= 1, (share, worst, pairs)
        assert pairs > 10_000


PLAIN = r"""
import json, sys
import numpy as np, onnxruntime as ort
from tokenizers import Tokenizer
folder, text = sys.argv[1], sys.argv[2]
tok = Tokenizer.from_file(folder + "/tokenizer.json")
ids = np.array([tok.encode(text).ids], dtype=np.int64)
s = ort.InferenceSession(folder + "/model.onnx", providers=["CPUExecutionProvider"])
idx, w = s.run(["output_idx", "output_weights"], {"input_ids": ids, "token_type_ids": np.zeros_like(ids),
                                                  "attention_mask": np.ones_like(ids)})
vocab = {i: t for t, i in tok.get_vocab().items()}
print(json.dumps({vocab[int(i)]: round(float(x) * 100) for i, x in zip(idx, w) if round(float(x) * 100) > 0}))
"""


def test_plain_onnxruntime_without_project_code(exported, encoder):
    """Batch 1, as Anserini's ONNX query encoders run: output_idx are the term ids themselves."""
    text = "How do kittens learn to hunt?"
    proc = subprocess.run([sys.executable, "-c", PLAIN, str(exported), text], capture_output=True, text=True,
                          timeout=300, cwd=exported)
    assert proc.returncode == 0, proc.stderr
    assert "splade_lucene" not in proc.stderr
    plain = json.loads(proc.stdout)
    ours = {encoder.id_to_term[i]: w for i, w in quantized(encoder.encode([text]))[0].items()}
    share, worst, _ = agreement([plain], [ours])
    assert share >= 0.99 and worst <= 1 and len(plain) > 10


def test_onnx_query_encoder_plugs_into_a_torch_built_index(exported, cranfield):
    from splade_lucene.search.encoders import QueryEncoder
    from splade_lucene.search.searcher import Searcher

    qenc = QueryEncoder(exported, backend="onnx", threads=1)
    queries = cranfield["queries"][:30]
    with Searcher(cranfield["vector_index"], qenc) as s:  # the index's model sha256 matches the export's
        got = s.batch_search(queries, k=10)
    with Searcher(cranfield["vector_index"], cranfield["query_encoder"]) as s:
        want = s.batch_search(queries, k=10)
    same = sum(got[q] == want[q] for q, _ in queries)
    assert same >= 28, f"{same} of 30 queries give the same top 10"


def test_encode_command_with_onnx_backend(exported, tmp_path, datasets):
    from conftest import read_vectors

    corpus = tmp_path / "corpus.jsonl"
    lines = (datasets / "scifact" / "corpus.jsonl").read_text(encoding="utf-8").splitlines(keepends=True)[:20]
    corpus.write_text("".join(lines), encoding="utf-8")
    out = {}
    for backend, model in (("onnx", str(exported)), ("torch", "splade-tiny")):
        proc = subprocess.run([sys.executable, "-m", "splade_lucene", "--quiet", "encode", "--corpus", str(corpus),
                               "--output", str(tmp_path / backend), "--model", model, "--backend", backend],
                              capture_output=True, text=True, timeout=600)
        assert proc.returncode == 0, proc.stderr
        out[backend] = read_vectors(tmp_path / backend)
    share, worst, _ = agreement([out["onnx"][d] for d in out["torch"]], [out["torch"][d] for d in out["torch"]])
    assert share >= 0.999 and worst <= 1
    meta = json.loads((tmp_path / "onnx" / "collection.meta").read_text())
    assert meta["model_sha256"] == json.loads((tmp_path / "torch" / "collection.meta").read_text())["model_sha256"]


def test_bad_graphs_and_folders_refused(exported, tmp_path):
    import shutil

    import onnx
    from onnx import TensorProto, helper

    bad = tmp_path / "bad"
    shutil.copytree(exported, bad)
    graph = helper.make_graph(
        [helper.make_node("Identity", ["input_ids"], ["logits"])], "g",
        [helper.make_tensor_value_info(n, TensorProto.INT64, [1, None])
         for n in ("input_ids", "token_type_ids", "attention_mask")],
        [helper.make_tensor_value_info("logits", TensorProto.INT64, [1, None])])
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)]), str(bad / "model.onnx"))
    with pytest.raises(ModelError, match="expected inputs input_ids, token_type_ids, attention_mask and outputs "
                                         "output_idx, output_weights"):
        SpladeEncoder(str(bad))
    (bad / "model.onnx").write_bytes(b"not a graph")
    with pytest.raises(ModelError, match="onnxruntime cannot load it"):
        SpladeEncoder(str(bad))
    from splade_lucene.encoding.loading import default_model_path

    with pytest.raises(ModelError, match="not an ONNX export"):
        SpladeEncoder(str(default_model_path()), backend="onnx")
    with pytest.raises(ModelError, match="is an ONNX export"):
        SpladeEncoder(str(exported), backend="torch")
    from splade_lucene.core.errors import SettingError

    with pytest.raises(SettingError, match="exported with pooling"):
        SpladeEncoder(str(exported), pooling="no-special")
    (bad / "splade_onnx.json").write_text("{")
    with pytest.raises(ModelError, match="splade_onnx.json"):
        SpladeEncoder(str(bad))


def test_export_refuses_an_existing_folder_and_keeps_it(exported, tmp_path):
    from splade_lucene.core.errors import OutputExistsError
    from splade_lucene.encoding.onnx import export_onnx

    before = (exported / "model.onnx").stat().st_mtime_ns
    with pytest.raises(OutputExistsError):
        export_onnx(None, exported)
    assert (exported / "model.onnx").stat().st_mtime_ns == before
    with pytest.raises(ModelError, match="is an ONNX export already"):
        export_onnx(exported, tmp_path / "again")
