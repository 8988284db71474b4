"""Feed files for OpenSearch, Elasticsearch and Vespa (splade_lucene.indexing.feeds), checked against the
engines' documented formats (no such server runs here) and against the collection the index was
built from: every document's vector, once, with the mapping or schema that takes it; the query helpers
rank as the index does."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest

from splade_lucene.core.errors import OutputExistsError, SettingError
from splade_lucene.indexing.feeds import (
    elasticsearch_query,
    exact_in_feature_field,
    opensearch_query,
    vespa_query_tensor,
    write_feed,
)
from splade_lucene.search.searcher import Searcher


def nine_bits(weight: int) -> float:
    """Lucene FeatureField's stored value: the float32's bits shifted right by 15 and back."""
    bits = np.array([weight], dtype=np.float32).view(np.int32)[0]
    return float(np.array([(int(bits) >> 15) << 15], dtype=np.int32).view(np.float32)[0])


def bulk_documents(folder, files) -> dict[str, dict]:
    docs = {}
    for name in files:
        text = (folder / name).read_text(encoding="utf-8")
        assert text.endswith("\n"), "the bulk API needs the last line to end with a newline"
        lines = text.splitlines()
        assert len(lines) % 2 == 0
        for action, source in zip(lines[::2], lines[1::2]):
            action, source = json.loads(action), json.loads(source)
            assert list(action) == ["index"] and set(action["index"]) == {"_index", "_id"}
            assert action["index"]["_id"] == source["id"] and action["index"]["_id"] not in docs
            docs[source["id"]] = source["vector"]
    return docs


@pytest.fixture(scope="module")
def written(cranfield, encoder):
    """The collection's non-empty vectors (Cranfield has two empty documents, written with a placeholder
    term outside the vocabulary)."""
    vocab = encoder.tokenizer.get_vocab()
    vectors = {d: {t: w for t, w in v.items() if w > 0 and t in vocab} for d, v in cranfield["vectors"].items()}
    return {d: v for d, v in vectors.items() if v}


def test_opensearch_feed_holds_every_vector_once(cranfield, written, tmp_path):
    out = tmp_path / "os"
    record = write_feed(cranfield["vector_index"], out, engine="opensearch", name="cranfield", bulk_docs=500)
    assert record["files"] == ["mapping.json", "bulk-00000.ndjson", "bulk-00001.ndjson", "bulk-00002.ndjson"]
    assert json.loads((out / "mapping.json").read_text()) == {
        "mappings": {"properties": {"id": {"type": "keyword"}, "vector": {"type": "rank_features"}}}}
    docs = bulk_documents(out, record["files"][1:])
    assert docs == written
    assert record["documents"] == len(written) == 1398 and record["empty_left_out"] == 2
    weights = [w for v in written.values() for w in v.values()]
    assert record["weights"] == len(weights) and record["max_weight"] == max(weights)
    assert record["weights_not_exact_in_9_bits"] == sum(nine_bits(w) != w for w in weights)
    assert json.loads((out / "feed.json").read_text()) == record
    assert all(json.loads(line)["index"]["_index"] == "cranfield"
               for line in (out / "bulk-00001.ndjson").read_text().splitlines()[::2])


def test_elasticsearch_feed_with_token_ids(cranfield, written, tmp_path, encoder):
    out = tmp_path / "es"
    record = write_feed(cranfield["vector_index"], out, engine="elasticsearch", name="cranfield", keys="ids")
    assert json.loads((out / "mapping.json").read_text())["mappings"]["properties"]["vector"] == {
        "type": "sparse_vector", "index_options": {"prune": False}}
    vocab = encoder.tokenizer.get_vocab()
    assert bulk_documents(out, record["files"][1:]) == {
        d: {str(vocab[t]): w for t, w in v.items()} for d, v in written.items()}


def test_vespa_feed_and_schema(cranfield, written, tmp_path):
    out = tmp_path / "vespa"
    record = write_feed(cranfield["vector_index"], out, engine="vespa", name="cranfield")
    assert record["files"] == ["cranfield.sd", "feed.jsonl"]
    schema = (out / "cranfield.sd").read_text()
    for piece in ("schema cranfield {", "document cranfield {", "field vector type tensor<float>(t{}) {",
                  "indexing: attribute | summary", "query(q) tensor<float>(t{})",
                  "expression: sum(query(q) * attribute(vector))"):
        assert piece in schema
    assert schema.count("{") == schema.count("}")
    puts = [json.loads(line) for line in (out / "feed.jsonl").read_text(encoding="utf-8").splitlines()]
    assert all(set(p) == {"put", "fields"} and p["put"] == f"id:cranfield:cranfield::{p['fields']['id']}"
               for p in puts)
    assert {p["fields"]["id"]: p["fields"]["vector"] for p in puts} == written


def test_query_helpers_rank_as_the_index(cranfield, written):
    """Scoring the feed's documents as each engine documents it (OpenSearch: the query's float weights
    times the 9-bit doc values; Elasticsearch and Vespa: the dot product) gives the index's top 10,
    ties aside."""
    with Searcher(cranfield["vector_index"], cranfield["query_encoder"]) as searcher:
        for qid, _ in cranfield["queries"][:60]:
            terms = cranfield["encoded"][qid]
            ours = searcher.ranked_terms(terms, 10)
            tokens = opensearch_query(terms, scale=100.0)["query"]["neural_sparse"]["vector"]["query_tokens"]
            assert all(0 < w <= 64 for w in tokens.values())
            es = elasticsearch_query(terms)["query"]["sparse_vector"]
            assert es["field"] == "vector" and es["prune"] is False
            for score in (lambda v: sum(w * nine_bits(v[t]) for t, w in tokens.items() if t in v),
                          lambda v: sum(w * v[t] for t, w in es["query_vector"].items() if t in v)):
                scored = sorted(((score(v), d) for d, v in written.items()), reverse=True)
                tenth = scored[9][0]
                assert {d for s, d in scored if s > tenth + 1e-6} <= {d for d, _ in ours}
                assert {d for s, d in scored[:10]} - {d for d, _ in ours} <= {d for s, d in scored if
                                                                             abs(s - tenth) <= 1e-6}


def test_vespa_query_tensor_quotes_every_label():
    assert vespa_query_tensor({"cat": 12, "##s": 3, "'": 2, ".": 1, "zero": 0}) == "{'cat':12,'##s':3,\"'\":2,'.':1}"
    with pytest.raises(SettingError, match="both quotes"):
        vespa_query_tensor({"'\"": 1})
    assert exact_in_feature_field(511) and exact_in_feature_field(1024) and not exact_in_feature_field(513)


def test_bad_settings_refused_and_nothing_written_is_lost(cranfield, tmp_path):
    index = cranfield["vector_index"]
    out = tmp_path / "feed"
    write_feed(index, out, engine="vespa", name="cran")
    before = (out / "feed.jsonl").read_bytes()
    with pytest.raises(OutputExistsError, match="--overwrite"):
        write_feed(index, out, engine="vespa", name="cran")
    for kwargs, message in (({"engine": "solr"}, "one of opensearch"), ({"keys": "names"}, "keys are one of"),
                            ({"bulk_docs": 0}, "at least 1"), ({"name": "Cran Field"}, "names are lowercase"),
                            ({"engine": "vespa", "name": "9x"}, "starting with a letter"),
                            ({"field": "a.b"}, "field name")):
        with pytest.raises(SettingError, match=message):
            write_feed(index, out, **{"engine": "opensearch", "name": "cran", "overwrite": True, **kwargs})
    assert (out / "feed.jsonl").read_bytes() == before
    assert not list(tmp_path.glob(".feed.*"))
    write_feed(index, out, engine="opensearch", name="cran", overwrite=True)
    assert (out / "mapping.json").is_file() and not (out / "feed.jsonl").exists()


def test_cli_export_writes_feeds(cranfield, tmp_path):
    cli = [sys.executable, "-m", "splade_lucene", "export", "--index", str(cranfield["vector_index"])]
    done = subprocess.run([*cli, "--to", "vespa"], capture_output=True, text=True)
    assert done.returncode == 2 and "--output" in done.stderr and "Traceback" not in done.stderr
    done = subprocess.run([*cli, "--to", "elasticsearch", "--output", str(tmp_path / "cran-es")],
                          capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert "wrote 1398 documents for elasticsearch ('cran-es')" in done.stdout
    assert json.loads((tmp_path / "cran-es" / "feed.json").read_text())["name"] == "cran-es"
