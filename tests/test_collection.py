import gzip
import json

import pytest

from splade_lucene.formats.collection import (
    EMPTY_DOCUMENT_TERM,
    CollectionWriter,
    InputError,
    make_record,
    pseudo_document,
    read_corpus,
    read_queries,
)


def write(path, text, mode="w"):
    path.write_text(text) if mode == "w" else path.write_bytes(text)
    return path


def test_beir_and_jsoncollection(tmp_path):
    p = write(tmp_path / "c.jsonl",
              '{"_id": "1", "title": "Cats", "text": "purr."}\r\n'
              '{"_id": "2", "title": "", "text": "no title"}\n\n'
              '{"id": "3", "contents": "pyserini style"}\n'
              '{"_id": "4", "title": "caf\\u00e9", "text": "x"}\n')
    docs = list(read_corpus(p))
    assert [(d.id, d.text, d.line) for d in docs] == [
        ("1", "Cats purr.", 1), ("2", "no title", 2), ("3", "pyserini style", 4), ("4", "café x", 5)]


def test_gzip_corpus(tmp_path):
    p = tmp_path / "c.jsonl.gz"
    with gzip.open(p, "wt") as fh:
        fh.write('{"_id": "1", "text": "a"}\n')
    assert [d.id for d in read_corpus(p)] == ["1"]


@pytest.mark.parametrize("line, message", [
    ('{"_id": "1", "text": "a"', r"c.jsonl:2: not valid JSON"),
    ('{"text": "a"}', r"c.jsonl:2: missing field '_id'"),
    ('{"_id": "9", "title": "t"}', r"c.jsonl:2: missing field 'text'"),
    ('{"_id": "1", "text": "again"}', r"c.jsonl:2: duplicate document id '1' \(first on line 1\)"),
    ('[1, 2]', r"c.jsonl:2: expected a JSON object"),
])
def test_bad_corpus_lines_name_file_and_line(tmp_path, line, message):
    p = write(tmp_path / "c.jsonl", '{"_id": "1", "text": "ok"}\n' + line + "\n")
    with pytest.raises(InputError, match=message):
        list(read_corpus(p))


def test_not_utf8(tmp_path):
    p = write(tmp_path / "c.jsonl", b'{"_id": "1", "text": "ok"}\n{"_id": "2", "text": "\xff"}\n', "b")
    with pytest.raises(InputError, match=r"c.jsonl:2: not UTF-8"):
        list(read_corpus(p))


def test_queries_jsonl_and_tsv(tmp_path):
    j = write(tmp_path / "q.jsonl", '{"_id": "1", "text": "what is x", "metadata": {}}\n{"_id": "2", "text": ""}\n')
    assert read_queries(j) == [("1", "what is x"), ("2", "")]
    t = write(tmp_path / "q.tsv", "101\tfirst query\r\n102\tsecond\twith tab\n")
    assert read_queries(t) == [("101", "first query"), ("102", "second\twith tab")]
    with pytest.raises(InputError, match="duplicate query id '1'"):
        read_queries(write(tmp_path / "d.tsv", "1\ta\n1\tb\n"))


def test_pseudo_document_repeats_terms_by_weight():
    assert pseudo_document({"cat": 3, "##s": 1}) == "cat cat cat ##s"
    assert pseudo_document({}) == EMPTY_DOCUMENT_TERM


def test_records_refuse_float_weights():
    # Anserini truncates float weights silently (0.7 -> 0); refuse them before writing.
    with pytest.raises(ValueError, match="must be a positive int"):
        make_record("vector", "d", {"cat": 1.99})
    with pytest.raises(ValueError, match="must be a positive int"):
        make_record("pseudo", "d", {"cat": 0})


def test_empty_vector_is_written_with_placeholder(tmp_path):
    with CollectionWriter(tmp_path / "v", "vector", part_size=2) as w:
        for i, terms in enumerate([{"a": 2}, {}, {"b": 1}]):
            w.write(str(i), terms)
    assert (w.count, w.empty) == (3, 1)
    lines = [json.loads(x) for f in sorted((tmp_path / "v").glob("*.jsonl")) for x in f.read_text().splitlines()]
    assert [f.name for f in sorted((tmp_path / "v").glob("*.jsonl"))] == ["part-00000.jsonl", "part-00001.jsonl"]
    assert lines[1] == {"id": "1", "contents": "", "vector": {EMPTY_DOCUMENT_TERM: 1}}
    assert lines[2] == {"id": "2", "contents": "", "vector": {"b": 1}}


@pytest.mark.parametrize("raw, shown", [
    (r'"doc 1"', "SPACE"), (r'""', "empty"), (r'"doc\t1"', r"'\\t'"), (r'"d\u0000"', r"'\\x00'"),
    (r'"d\u00a0x"', "NO-BREAK SPACE"), (r'"d\udc80"', r"'\\udc80'"), ("true", "must be a string"),
    ("1.5", "must be a string"), ('["a"]', "must be a string"),
])
def test_ids_a_trec_line_cannot_carry_are_refused_naming_file_line_and_id(tmp_path, raw, shown):
    corpus = write(tmp_path / "corpus.jsonl", '{"_id": "ok", "text": "fine"}\n{"_id": ' + raw + ', "text": "x"}\n')
    with pytest.raises(InputError, match=rf"corpus.jsonl:2: .*{shown}"):
        list(read_corpus(corpus))
    queries = write(tmp_path / "queries.jsonl", '{"_id": ' + raw + ', "text": "q"}\n')
    with pytest.raises(InputError, match=rf"queries.jsonl:1: .*{shown}"):
        read_queries(queries)


def test_integer_ids_are_their_decimal_string_and_odd_but_safe_ids_pass(tmp_path):
    from splade_lucene.formats.trec import read_qrels, read_run

    corpus = write(tmp_path / "c.jsonl", '{"_id": 42, "text": "a"}\n{"_id": "zw\\u200bj", "text": "b"}\n'
                                         '{"_id": "\\u05e2\\u05d1", "text": "c"}\n')
    assert [d.id for d in read_corpus(corpus)] == ["42", "zw\u200bj", "\u05e2\u05d1"]
    tsv = write(tmp_path / "q.tsv", "q1\tfirst\nq 2\tsecond\n")
    with pytest.raises(InputError, match=r"q.tsv:2: query id 'q 2' holds SPACE"):
        read_queries(tsv)
    qrels = write(tmp_path / "qrels.tsv", "query-id\tcorpus-id\tscore\nq1\td\x01\t1\n")
    with pytest.raises(InputError, match=r"qrels.tsv:2: doc id 'd\\x01'"):
        read_qrels(qrels)
    run = write(tmp_path / "run.trec", "q1 Q0 d1 1 high tag\n")
    with pytest.raises(InputError, match=r"run.trec:1: score 'high' is not a number"):
        read_run(run)


def test_any_text_json_holds_encodes_or_names_file_and_line(tmp_path):
    from splade_lucene.encoding.model import SpladeEncoder

    texts = {"nul": "a\u0000b", "controls": "x\u0007\u001by", "bmp+": "emoji \U0001F600 and \U00010348",
             "rtl": "\u05e9\u05dc\u05d5\u05dd \u0645\u0631\u062d\u0628\u0627", "zero-width": "zero\u200bwidth\u200d",
             "number": 1984, "empty": ""}
    lines = "".join(json.dumps({"_id": k, "text": v}) + "\n" for k, v in texts.items())
    docs = list(read_corpus(write(tmp_path / "ok.jsonl", lines)))
    vectors = SpladeEncoder().encode([d.text for d in docs])  # none of them raises
    assert len(vectors) == len(texts) and docs[5].text == "1984"
    assert len(vectors[0].ids) > 0 and len(vectors[3].ids) > 0  # NUL dropped, right-to-left text encoded
    bad = write(tmp_path / "bad.jsonl", '{"_id": "1", "text": "ok"}\n{"_id": "2", "text": "lone \\udc80 here"}\n')
    with pytest.raises(InputError, match=r"bad.jsonl:2: the text holds a lone surrogate \('\\udc80' at character 5\)"):
        list(read_corpus(bad))
    with pytest.raises(InputError, match=r"q.jsonl:1: the text holds a lone surrogate"):
        read_queries(write(tmp_path / "q.jsonl", '{"_id": "q", "text": "\\ud800"}\n'))
    with pytest.raises(InputError, match=r"t.jsonl:1: field 'title' must be a string, not list"):
        list(read_corpus(write(tmp_path / "t.jsonl", '{"_id": "1", "title": ["x"], "text": "y"}\n')))
