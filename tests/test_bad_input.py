"""No traceback for bad input: every reader, fed malformed and random files (hypothesis, a fixed
example budget), raises only the package's own error, naming the file (and the line, where there
is one). The command-line side (every subcommand, broken input, exit 2, one line) is in test_cli.py."""

from __future__ import annotations

import json
import uuid
from pathlib import Path

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from splade_lucene.core.errors import SpladeLuceneError
from splade_lucene.experiments.reproduce import load_spec
from splade_lucene.formats.collection import read_corpus, read_encoded_queries, read_queries
from splade_lucene.formats.metadata import read_collection_metadata, read_metadata
from splade_lucene.formats.trec import read_qrels, read_run

BUDGET = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])

# lines that look almost right: the shapes real files have, broken in the ways files break
JSONISH = st.one_of(
    st.just('{"_id": "1", "text": "a"}'), st.just('{"_id": "1", "text": "a"'), st.just('{"_id": 1.5, "text": 2}'),
    st.just('{"_id": "d 1", "text": "x"}'), st.just('{"id": "x", "contents": null}'), st.just("[]"), st.just('"s"'),
    st.just('{"_id": "\\udc80", "text": "\\ud800"}'), st.just('{"_id": "2", "title": {}, "text": "t"}'),
    st.just("\x00\x01"), st.text(max_size=40),
    st.dictionaries(st.sampled_from(["_id", "id", "text", "title", "contents", "x"]),
                    st.one_of(st.none(), st.booleans(), st.integers(), st.floats(), st.text(max_size=8),
                              st.lists(st.integers(), max_size=2)), max_size=4).map(json.dumps),
)
TABULAR = st.one_of(st.just("q1\t0\td1\t1"), st.just("q1 Q0 d1 1 2.5 tag"), st.just("q1 Q0 d1 1 x tag"),
                    st.just("query-id\tcorpus-id\tscore"), st.just("q1\td1\tone"), st.just("q\x01 0 d 1"),
                    st.text(max_size=40))


def lines_of(element):
    return st.lists(element, max_size=6).map(lambda ls: "\n".join(ls) + "\n")


def raw_bytes():
    return st.one_of(st.binary(max_size=200), st.just(b"\xff\xfe{"), st.just(b'{"_id": "1", "text": "\xff"}\n'))


def check(reader, path: Path):
    """The reader either reads the file or raises our error naming it."""
    try:
        result = reader(path)
        if hasattr(result, "__next__"):
            list(result)
    except SpladeLuceneError as exc:
        assert path.name in str(exc), f"{type(exc).__name__} does not name the file: {exc}"
    # anything else propagates and fails the test with its traceback


def fresh(tmp_path: Path, name: str) -> Path:
    folder = tmp_path / uuid.uuid4().hex[:8]
    folder.mkdir()
    return folder / name


@BUDGET
@given(text=lines_of(JSONISH), data=raw_bytes())
def test_corpus_and_jsonl_queries(tmp_path, text, data):
    for content in (text.encode("utf-8", "surrogatepass"), data):
        path = fresh(tmp_path, "corpus.jsonl")
        path.write_bytes(content)
        check(read_corpus, path)
        check(read_queries, path)
        check(read_encoded_queries, path)


@BUDGET
@given(text=lines_of(TABULAR), data=raw_bytes())
def test_tsv_queries_qrels_and_runs(tmp_path, text, data):
    for content in (text.encode("utf-8", "surrogatepass"), data):
        for name, reader in (("queries.tsv", read_queries), ("qrels.tsv", read_qrels), ("run.trec", read_run),
                             ("topics.tsv", read_encoded_queries)):
            path = fresh(tmp_path, name)
            path.write_bytes(content)
            check(reader, path)


YAMLISH = st.one_of(st.just("dataset: x\nconditions:\n  a: {type: nope}\n"), st.just("dataset: [\n"),
                    st.just("dataset: x\nconditions:\n  a: {type: splade, scale: many}\n"),
                    st.just("dataset: x\nconditions:\n  a: {type: rrf, runs: [b]}\n"),
                    st.just("dataset: x\nconditions:\n  a: {type: train, train: {lr: -1}}\n"),
                    st.just("dataset: x\nk: -5\nconditions: {}\n"), st.text(max_size=60))


@BUDGET
@given(text=YAMLISH, data=raw_bytes())
def test_experiment_files(tmp_path, text, data):
    for content in (text.encode("utf-8", "surrogatepass"), data):
        path = fresh(tmp_path, "exp.yaml")
        path.write_bytes(content)
        check(load_spec, path)


@BUDGET
@given(text=st.one_of(st.just("{"), st.just("[1, 2]"), st.just('{"model": 3}'), st.text(max_size=30)),
       data=raw_bytes())
def test_collection_and_index_metadata(tmp_path, text, data):
    for content in (text.encode("utf-8", "surrogatepass"), data):
        folder = fresh(tmp_path, "folder")
        folder.mkdir()
        for name, reader in (("collection.meta", read_collection_metadata), ("splade_lucene.json", read_metadata)):
            (folder / name).write_bytes(content)
            check(lambda p, r=reader: r(p.parent), folder / name)


def outcome(reader, path: Path):
    """What a reader makes of a file: its result, or our error's message with the path written as P."""
    try:
        result = reader(path)
        return list(result) if hasattr(result, "__next__") else result
    except SpladeLuceneError as exc:
        return str(exc).replace(str(path), "P")


@BUDGET
@given(jsonish=lines_of(JSONISH), tabular=lines_of(TABULAR))
def test_a_leading_byte_order_mark_changes_nothing(tmp_path, jsonish, tabular):
    """Windows tools open UTF-8 files with a byte-order mark: every text reader takes it as nothing."""
    for text, readers in ((jsonish, (read_corpus, read_queries, read_encoded_queries)),
                          (tabular, (read_queries, read_qrels, read_run, read_encoded_queries))):
        content = text.encode("utf-8", "surrogatepass")
        plain, marked = fresh(tmp_path, "input.txt"), fresh(tmp_path, "input.txt")
        plain.write_bytes(content)
        marked.write_bytes(b"\xef\xbb\xbf" + content)
        for reader in readers:
            assert outcome(reader, marked) == outcome(reader, plain), reader.__name__


def test_a_byte_order_mark_in_a_real_corpus_queries_and_qrels(tmp_path):
    bom = "\ufeff"
    (tmp_path / "corpus.jsonl").write_text(bom + '{"_id": "d1", "text": "a kitten"}\n', encoding="utf-8")
    (tmp_path / "queries.tsv").write_text(bom + "q1\tcat\n", encoding="utf-8")
    (tmp_path / "qrels.tsv").write_text(bom + "query-id\tcorpus-id\tscore\nq1\td1\t1\n", encoding="utf-8")
    (tmp_path / "exp.yaml").write_text(bom + "dataset: x\nconditions:\n  a: {type: bm25}\n", encoding="utf-8")
    assert [d.id for d in read_corpus(tmp_path / "corpus.jsonl")] == ["d1"]
    assert read_queries(tmp_path / "queries.tsv") == [("q1", "cat")]
    assert read_qrels(tmp_path / "qrels.tsv") == {"q1": {"d1": 1}}
    assert list(load_spec(tmp_path / "exp.yaml").conditions) == ["a"]


SHAPES = st.sampled_from(["fresh", "existing-file", "existing-folder", "inside-a-file", "deep-inside-a-file"])


@BUDGET
@given(shape=SHAPES, kind=st.sampled_from(["file", "folder"]))
def test_any_output_path_is_written_or_refused_naming_it(tmp_path, shape, kind):
    """The library's writers, given any shape of output path, write it or raise OutputPathError naming
    it, and never touch what is already there."""
    from splade_lucene.core.atomic import OutputPathError, output_lock, write_text
    from splade_lucene.formats.trec import write_run

    base = fresh(tmp_path, "base")
    base.mkdir()
    (base / "afile").write_text("kept\n")
    (base / "afolder").mkdir()
    target = {"fresh": base / "new", "existing-file": base / "afile", "existing-folder": base / "afolder",
              "inside-a-file": base / "afile" / "x", "deep-inside-a-file": base / "afile" / "x" / "y"}[shape]
    def lock(path):
        with output_lock(path):
            pass

    writers = [lambda p: write_text(p, "text\n"), lambda p: write_run({"q": []}, p)] if kind == "file" else [lock]
    for write in writers:
        try:
            write(target)
        except OutputPathError as exc:
            assert str(target) in str(exc) or str(base / "afile") in str(exc)
            assert shape != "fresh" and not (shape == "existing-file" and kind == "file") and not (
                shape == "existing-folder" and kind == "folder")
    assert (base / "afile").read_text() == "kept\n" or (shape == "existing-file" and kind == "file")
