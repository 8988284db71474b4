"""The HTTP API in process (FastAPI's TestClient over the real app and a real Cranfield index): its
answers equal the library's, every refusal is a 4xx naming the field, the API key and the body limit
hold, and no request in a property-based sweep of the request space gets a 5xx."""

from __future__ import annotations

import base64
import json
import string
import threading
from concurrent.futures import ThreadPoolExecutor
from urllib.parse import quote

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from splade_lucene.core.errors import SettingError, SpladeLuceneError
from splade_lucene.serving.service import (
    FIELDS,
    QueryBatcher,
    RequestError,
    ServeConfig,
    ServeSettings,
    check_terms,
    index_specs,
    query_of,
)

KEY = "k3y-for-the-tests-0123456789"


def test_index_specs_and_config_checks(tmp_path):
    (tmp_path / "a").mkdir()
    (tmp_path / "a" / "splade_lucene.json").write_text("{}")
    (tmp_path / "b").mkdir()
    with pytest.raises(SpladeLuceneError, match="has no splade_lucene.json"):
        ServeConfig((("b", str(tmp_path / "b")),))
    assert index_specs([str(tmp_path / "a"), f"b={tmp_path / 'a'}", f"{tmp_path / 'a'}/"]) == (
        ("a", str(tmp_path / "a")), ("b", str(tmp_path / "a")), ("a", f"{tmp_path / 'a'}/"))
    with pytest.raises(SettingError, match="index names must differ"):
        ServeConfig((("a", str(tmp_path / "a")), ("a", str(tmp_path / "a"))))
    with pytest.raises(SettingError, match="no folder"):
        ServeConfig((("a", str(tmp_path / "missing")),))
    with pytest.raises(SettingError, match="at least one index"):
        ServeConfig(())
    with pytest.raises(SettingError, match="workers must be at least 1"):
        ServeSettings(workers=0)
    (tmp_path / "key").write_text("short\n")
    with pytest.raises(SettingError, match="shorter than 16"):
        ServeSettings(api_key_file=str(tmp_path / "key"))
    config = ServeConfig((("a", str(tmp_path / "a")),), settings=ServeSettings(port=0, max_k=7))
    assert ServeConfig.from_json(config.to_json()) == config
    assert ServeSettings().host == "127.0.0.1", "loopback unless told otherwise"


def test_query_checks_name_the_field():
    s = ServeSettings(max_k=100, max_query_chars=50, max_query_terms=3)
    assert query_of({"query": "a b", "k": 5, "fields": "text,terms"}, s).fields == frozenset(FIELDS)
    cases = [({"query": "x", "k": 0}, "k", 422), ({"query": "x", "k": 101}, "k", 422),
             ({"query": "x", "k": True}, "k", 422),
             ({"query": " "}, "query", 422), ({"query": "x" * 51}, "query", 413), ({"query": "x\ud800"}, "query", 422),
             ({}, "query", 422), ({"query": "x", "terms": {"a": 1}}, "query", 422),
             ({"terms": {"a": 0}}, "terms", 422), ({"terms": {"a": 1.5}}, "terms", 422),
             ({"terms": {"a": 1, "b": 1, "c": 1, "d": 1}}, "terms", 413), ({"terms": {"": 1}}, "terms", 422),
             ({"query": "x", "fields": ["text", "vectors"]}, "fields", 422), ({"query": "x", "index": 3}, "index", 422)]
    for body, field, status in cases:
        with pytest.raises(RequestError) as err:
            query_of(body, s)
        assert (err.value.field, err.value.status) == (field, status), body
    assert check_terms({"a": 2 ** 31 - 1}, s) == {"a": 2 ** 31 - 1}


def test_query_batcher_encodes_waiting_texts_together():
    """While one batch is being encoded, the texts that arrive wait; the first of them then encodes
    them all in one batch (its own among them), and each request gets its own text's answer."""
    batcher = QueryBatcher(limit=32)
    calls: list[list[str]] = []
    started, release = threading.Event(), threading.Event()

    class Encoder:
        def encode_batch(self, texts):
            calls.append(list(texts))
            if len(calls) == 1:
                started.set()
                release.wait(timeout=60)
            if "bad" in texts:
                raise ValueError("no")
            return [{t: len(t)} for t in texts]

    encoder = Encoder()
    answers: dict[str, object] = {}

    def ask(text):
        try:
            answers[text] = batcher.encode(encoder, text)
        except ValueError as exc:
            answers[text] = exc

    first = threading.Thread(target=ask, args=("first",))
    first.start()
    assert started.wait(timeout=60)  # the first batch is being encoded
    others = [threading.Thread(target=ask, args=(f"q{i}",)) for i in range(15)]
    for t in others:
        t.start()
    while batcher.waiting < 15:  # an outcome: every other text has arrived and waits
        threading.Event().wait(0.001)
    release.set()
    for t in [first, *others]:
        t.join()
    assert calls[0] == ["first"] and sorted(calls[1]) == sorted(f"q{i}" for i in range(15)) and len(calls) == 2
    assert all(answers[t] == {t: len(t)} for t in answers) and len(answers) == 16
    ask("bad")
    assert isinstance(answers["bad"], ValueError) and batcher.waiting == 0


def test_batched_query_texts_are_encoded_as_alone(cranfield):
    """Texts encoded together by concurrent requests get the weights they get alone."""
    encoder = cranfield["query_encoder"]
    texts = [t for _, t in cranfield["queries"][:48]]
    batcher = QueryBatcher(limit=8)
    with ThreadPoolExecutor(12) as pool:
        together = list(pool.map(lambda t: batcher.encode(encoder, t), texts))
    assert together == [encoder.encode(t) for t in texts]


@pytest.fixture(scope="module")
def app_client(cranfield, tmp_path_factory):
    from fastapi.testclient import TestClient

    from splade_lucene.serving.http import create_app

    key = tmp_path_factory.mktemp("key") / "key"
    key.write_text(KEY + "\n")
    config = ServeConfig((("cranfield", str(cranfield["vector_index"])),),
                         settings=ServeSettings(api_key_file=str(key), max_body_bytes=20_000, max_k=1000, threads=1))
    with TestClient(create_app(config), headers={"Authorization": f"Bearer {KEY}"}) as client:
        yield client


@pytest.fixture(scope="module")
def searcher(cranfield):
    from splade_lucene.search.searcher import Searcher

    with Searcher(cranfield["vector_index"], cranfield["query_encoder"]) as s:
        yield s


def test_search_answers_equal_the_library(app_client, searcher, cranfield):
    for qid, text in cranfield["queries"][:15]:
        want = [[h.docid, h.score] for h in searcher.search(text, k=20)]
        got = app_client.get("/search", params={"q": text, "k": 20}).json()
        assert [[h["docid"], h["score"]] for h in got["hits"]] == want
        assert [h["rank"] for h in got["hits"]] == list(range(1, len(want) + 1))
        post = app_client.post("/search", json={"terms": cranfield["encoded"][qid], "k": 20}).json()
        assert [[h["docid"], h["score"]] for h in post["hits"]] == want
    qids = [q for q, _ in cranfield["queries"][:8]]
    batch = app_client.post("/batch_search", json={"k": 5, "queries": [{"qid": q, "terms": cranfield["encoded"][q]}
                                                                       for q in qids]}).json()
    want = searcher.batch_search_terms({q: cranfield["encoded"][q] for q in qids}, k=5)
    assert list(batch["results"]) == qids
    assert {q: [[h["docid"], h["score"]] for h in hits] for q, hits in batch["results"].items()} == \
        {q: [[h.docid, h.score] for h in hits] for q, hits in want.items()}


def test_hits_carry_texts_and_terms_that_add_up(app_client, searcher, cranfield):
    from splade_lucene.formats.collection import read_corpus

    corpus = {d.id: d for d in read_corpus(_corpus(cranfield))}
    qid, text = cranfield["queries"][0]
    got = app_client.post("/search", json={"query": text, "k": 10, "fields": ["text", "terms"]}).json()
    raw = dict(searcher.ranked_terms(cranfield["encoded"][qid], 10))
    assert {t["term"]: t["weight"] for t in got["query_terms"]} == cranfield["encoded"][qid]
    assert any(t["expansion"] for t in got["query_terms"]) and not all(t["expansion"] for t in got["query_terms"])
    for hit in got["hits"]:
        assert hit["text"] == corpus[hit["docid"]].text
        assert sum(m["contribution"] for m in hit["matched"]) == raw[hit["docid"]]
        words = set(searcher.query_encoder.tokenizer.tokenize(hit["text"]))
        assert all(m["expansion"] == (m["term"] not in words) for m in hit["matched"])
        assert hit["expansions"] and all(t not in words for t in hit["expansions"])
    doc = app_client.get(f"/doc/{got['hits'][0]['docid']}").json()
    assert doc["text"] == got["hits"][0]["text"]
    ex = app_client.get("/explain", params={"q": text, "docid": got["hits"][0]["docid"]}).json()
    assert ex["sum_of_contributions"] == raw[got["hits"][0]["docid"]] == ex["score"]


def _corpus(cranfield):
    from splade_lucene.formats.metadata import read_collection_metadata

    return read_collection_metadata(cranfield["base"] / "vector")["corpus"]


def test_refusals_are_4xx_naming_the_field(app_client):
    as_json = {"content-type": "application/json"}
    cases = [("get", "/search", {"params": {"q": "wing", "k": 0}}, 422, "k"),
             ("get", "/search", {"params": {"q": "wing", "k": "many"}}, 422, "k"),
             ("get", "/search", {"params": {"k": 3}}, 422, "q"),
             ("get", "/search", {"params": {"q": "wing", "index": "nope"}}, 404, "index"),
             ("get", "/search", {"params": {"q": "w" * 2001}}, 413, "query"),
             ("post", "/search", {"content": b"{not json", "headers": as_json}, 400, "body"),
             ("post", "/search", {"content": b'{"query": "\xff\xfe wing"}',
                                  "headers": {"content-type": "application/json"}}, 400, "body"),
             ("post", "/search", {"json": {"query": "wing", "k": 10, "extra": 1}}, 422, "extra"),
             ("post", "/search", {"json": {"terms": {"wing": "3"}}}, 422, "terms.wing"),
             ("post", "/search", {"content": b"x" * 20_001, "headers": as_json}, 413, "body"),
             ("post", "/batch_search", {"json": {"queries": []}}, 422, "queries"),
             ("post", "/batch_search", {"json": {"queries": [{"qid": "a", "query": "x"}] * 2}}, 422, "queries"),
             ("post", "/batch_search", {"json": {"queries": [{"qid": "a", "terms": {"x": -1}}]}}, 422,
              "queries.0.terms"),
             ("get", "/doc/no-such-doc", {}, 404, "docid"),
             ("get", "/explain", {"params": {"q": "wing", "docid": "no-such-doc"}}, 404, "docid"),
             ("get", "/no/such/route", {}, 404, None)]
    for method, path, kwargs, status, field in cases:
        r = getattr(app_client, method)(path, **kwargs)
        assert (r.status_code, r.json().get("field")) == (status, field), (path, kwargs, r.text)
        assert r.json()["error"]

    def chunks():  # no content-length: the limit counts the bytes as they come
        for _ in range(30):
            yield b" " * 1000

    r = app_client.post("/search", content=chunks(), headers={"content-type": "application/json"})
    assert r.status_code == 413 and r.json()["field"] == "body"


def test_api_key_metrics_openapi_and_cors(app_client, cranfield):
    from fastapi.testclient import TestClient

    from splade_lucene.serving.http import create_app

    bare = {"Authorization": ""}
    assert app_client.get("/healthz", headers=bare).status_code == 200
    for headers in (bare, {"Authorization": "Bearer wrong-key-0123456789"}, {"X-API-Key": KEY[:-1]}):
        r = app_client.get("/search", params={"q": "wing"}, headers=headers)
        assert r.status_code == 401 and "WWW-Authenticate" in r.headers
    basic = base64.b64encode(f"anyone:{KEY}".encode()).decode()
    for headers in ({"X-API-Key": KEY, "Authorization": ""}, {"Authorization": f"Basic {basic}"}):
        assert app_client.get("/search", params={"q": "wing"}, headers=headers).status_code == 200
    metrics = app_client.get("/metrics").text
    assert 'route="/search",status="200"' in metrics and 'route="/search",status="401"' in metrics
    assert "splade_lucene_request_seconds_bucket" in metrics and "splade_lucene_index_generation" in metrics
    described = app_client.get("/indexes").json()["indexes"]
    assert [(i["name"], i["documents"], i["engine"], i["texts"]) for i in described] == \
        [("cranfield", len(cranfield["vectors"]), "memory", True)]
    paths = app_client.get("/openapi.json").json()["paths"]
    assert {"/search", "/batch_search", "/doc/{docid}", "/explain", "/healthz", "/metrics",
            "/admin/reload"} <= set(paths)
    origin = {"Origin": "https://example.org"}
    assert "access-control-allow-origin" not in app_client.get("/healthz", headers=origin).headers, "CORS off"
    config = ServeConfig((("c", str(cranfield["vector_index"])),),
                         settings=ServeSettings(cors_origins="https://example.org", threads=1))
    with TestClient(create_app(config)) as client:
        assert client.get("/healthz", headers=origin).headers["access-control-allow-origin"] == "https://example.org"
        assert client.post("/admin/reload").json() == {"status": "reloaded", "generation": 2}
        assert client.get("/search", params={"q": "wing"}).json()["generation"] == 2


json_values = st.recursive(st.none() | st.booleans() | st.integers(-2 ** 40, 2 ** 40) | st.floats(allow_nan=False)
                           | st.text(max_size=30),
                           lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner,
                                                                                        max_size=4), max_leaves=12)
bodies = st.fixed_dictionaries({}, optional={"query": json_values | st.text(max_size=60), "terms": json_values |
                                             st.dictionaries(st.text(string.ascii_lowercase, max_size=6),
                                                             st.integers(-5, 2 ** 32), max_size=5),
                                             "k": json_values | st.integers(-3, 1200), "index": json_values,
                                             "fields": json_values, "qid": json_values, "queries": json_values,
                                             "docid": json_values})


@settings(max_examples=150, deadline=None, derandomize=True, suppress_health_check=list(HealthCheck))
@given(route=st.sampled_from(["/search", "/batch_search", "/explain"]), body=bodies | json_values,
       raw=st.none() | st.binary(max_size=40))
def test_no_request_gets_a_server_error(app_client, route, body, raw):
    content = raw if raw is not None else json.dumps(body).encode()
    r = app_client.post(route, content=content, headers={"content-type": "application/json"})
    assert r.status_code < 500, (route, content, r.text)
    if r.status_code >= 400:
        assert set(r.json()) == {"error", "field"}


@settings(max_examples=80, deadline=None, derandomize=True, suppress_health_check=list(HealthCheck))
@given(path=st.sampled_from(["/search", "/doc/", "/explain", "/"]), params=st.dictionaries(
    st.sampled_from(["q", "k", "index", "fields", "docid"]), st.text(max_size=20), max_size=4),
       tail=st.text(max_size=12) | st.binary(max_size=6))
def test_no_query_string_gets_a_server_error(app_client, path, params, tail):
    r = app_client.get(path + (quote(tail, safe="") if path == "/doc/" else ""), params=params)
    assert r.status_code < 500, (path, params, tail, r.text)
