"""The command line: one handler per subcommand, package errors as one line (exit 2), bugs as tracebacks."""

from __future__ import annotations

import importlib
import inspect
import pkgutil

import pytest

import splade_lucene
from splade_lucene import cli
from splade_lucene.core.errors import SpladeLuceneError


def test_every_error_the_package_defines_has_the_one_base():
    classes = []
    for info in pkgutil.walk_packages(splade_lucene.__path__, "splade_lucene."):
        if info.name.endswith((".distributed", ".__main__")):
            continue  # distributed imports Ray (its errors are the encoder's); __main__ runs the command
        module = importlib.import_module(info.name)
        classes += [c for _, c in inspect.getmembers(module, inspect.isclass)
                    if issubclass(c, Exception) and c.__module__.startswith("splade_lucene")]
    assert len(set(classes)) >= 14
    assert all(issubclass(c, SpladeLuceneError) for c in classes), [c for c in classes
                                                                   if not issubclass(c, SpladeLuceneError)]


def test_every_subcommand_has_its_handler():
    parser = cli.build_parser()
    sub = next(a for a in parser._actions if a.dest == "command")
    assert set(sub.choices) == set(cli.HANDLERS)
    assert parser.parse_args(["evaluate", "--qrels", "q", "--run", "r"]).func is cli.HANDLERS["evaluate"]


def test_bad_input_is_one_line_and_status_2(tmp_path, capsys):
    assert cli.main(["evaluate", "--qrels", str(tmp_path / "none.tsv"), "--run", str(tmp_path / "r")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("splade-lucene evaluate: error: ") and "none.tsv" in err
    bad = tmp_path / "qrels.tsv"
    bad.write_text("q1 0 d1\n")  # three fields: neither TREC nor BEIR qrels
    (tmp_path / "run").write_text("q1 Q0 d1 1 1.0 x\n")
    assert cli.main(["evaluate", "--qrels", str(bad), "--run", str(tmp_path / "run")]) == 2
    assert "qrels.tsv" in capsys.readouterr().err


@pytest.mark.parametrize("seeds, message", [("13,x", "--seeds takes comma-separated integers"),
                                            ("13,-1", "seeds are non-negative integers")])
def test_bad_seeds_are_refused_before_anything_runs(tmp_path, capsys, seeds, message):
    spec = tmp_path / "x.yaml"
    spec.write_text("dataset: x\nconditions: {t: {type: train, train: {epochs: 1}}}\n")
    assert cli.main(["reproduce", str(spec), "--output", str(tmp_path / "out"), "--seeds", seeds]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and message in err
    assert not (tmp_path / "out").exists()


def test_a_bug_is_not_passed_off_as_bad_input(monkeypatch, tmp_path):
    def broken(args, progress):
        return 1 // 0

    monkeypatch.setitem(cli.HANDLERS, "evaluate", broken)
    with pytest.raises(ZeroDivisionError):
        cli.main(["evaluate", "--qrels", str(tmp_path / "q"), "--run", str(tmp_path / "r")])
    # a built-in error that is not one of ours is a bug too
    monkeypatch.setitem(cli.HANDLERS, "evaluate", lambda args, progress: (_ for _ in ()).throw(ValueError("x")))
    with pytest.raises(ValueError):
        cli.main(["evaluate", "--qrels", "q", "--run", "r"])


@pytest.fixture
def broken(tmp_path):
    (tmp_path / "bad.jsonl").write_text('{"_id": "1", "text": "ok"}\n{"_id": "2", "text": \n')
    (tmp_path / "bad.yaml").write_text("dataset: [\n")
    (tmp_path / "bad.qrels").write_text("q1 0 d1\n")
    (tmp_path / "run.trec").write_text("q1 Q0 d1 1 1.0 t\n")
    (tmp_path / "queries.tsv").write_text("q1\thello\n")
    (tmp_path / "topics.jsonl").write_text('{"id": "q1", "vector": {"a": 0.5}}\n')
    (tmp_path / "empty").mkdir()
    (tmp_path / "nometa").mkdir()
    (tmp_path / "nometa" / "part-00000.jsonl").write_text("not json\n")
    (tmp_path / "blank.jsonl").write_text("\n  \n\t\n")
    (tmp_path / "good.qrels").write_text("q1 0 d1 1\n")
    (tmp_path / "blank.tsv").write_text("")
    (tmp_path / "blankdata" / "qrels").mkdir(parents=True)
    (tmp_path / "blankdata" / "corpus.jsonl").write_text(" \n")
    (tmp_path / "blankdata" / "queries.jsonl").write_text('{"_id": "q1", "text": "a query"}\n')
    (tmp_path / "blankdata" / "qrels" / "train.tsv").write_text("query-id\tcorpus-id\tscore\n")
    (tmp_path / "blankdata" / "qrels" / "test.tsv").write_text("query-id\tcorpus-id\tscore\n")
    (tmp_path / "blank.yaml").write_text("\n\n")
    return tmp_path


CASES = [
    ("encode", ["--corpus", "{t}/none.jsonl", "--output", "{t}/c"], "none.jsonl"),
    ("encode", ["--corpus", "{t}/bad.jsonl", "--output", "{t}/c"], "bad.jsonl:2"),
    ("encode", ["--corpus", "{t}/bad.jsonl", "--output", "{t}/c", "--scale", "0"], "scale"),
    ("index", ["--collection", "{t}/none"], "none"),
    ("index", ["--collection", "{t}/empty", "--index", "{t}/i"], "empty"),
    ("index", ["--collection", "{t}/none", "--foreign", "--scale", "100"], "none"),
    ("index", ["--collection", "{t}/nometa", "--foreign"], "--foreign needs --scale"),
    ("index", ["--collection", "{t}/nometa", "--scale", "100"], "--model and --scale state how a --foreign"),
    ("index", ["--collection", "{t}/nometa", "--foreign", "--scale", "100"], "part-00000.jsonl:1"),
    ("merge", ["--index", "{t}/m", "{t}/none"], "none"),
    ("impacts", ["--index", "{t}/empty"], "empty"),
    ("blockmax", ["--index", "{t}/empty"], "empty has no impact table"),
    ("blockmax", ["--index", "{t}/empty", "--block", "0"], "block must be 1 to 4,096"),
    ("blockmax", ["--index", "{t}/empty", "--terms-per-doc", "0"], "terms_per_doc must be at least 1"),
    ("search", ["--index", "{t}/empty", "--queries", "{t}/bad.jsonl", "--output", "{t}/r"], "bad.jsonl:2"),
    ("search", ["--index", "{t}/empty", "--queries", "{t}/topics.jsonl", "--pretokenized", "--output", "{t}/r"],
     "topics.jsonl:1"),
    ("encode-queries", ["--index", "{t}/empty", "--queries", "{t}/bad.jsonl", "--output", "{t}/t"], "bad.jsonl:2"),
    ("encode-queries", ["--index", "{t}/empty", "--queries", "{t}/queries.tsv", "--output", "{t}/t"], "empty"),
    ("export-onnx", ["--model", "{t}/none", "--output", "{t}/o"], "none"),
    ("explain", ["--index", "{t}/none", "--query", "q", "--doc", "1"], "none"),
    ("show-vector", ["text", "--model", "{t}/none"], "none"),
    ("evaluate", ["--qrels", "{t}/bad.qrels", "--run", "{t}/run.trec"], "bad.qrels:1"),
    ("experiment", ["--dataset", "{t}/none", "--output", "{t}/e"], "none"),
    ("train", ["--dataset", "{t}/none", "--output", "{t}/m"], "none"),
    ("train", ["--dataset", "{t}/empty", "--output", "{t}/m", "--lr", "-1"], "--lr"),
    ("reproduce", ["{t}/bad.yaml", "--output", "{t}/o"], "bad.yaml"),
    ("report", ["--output", "{t}/empty"], "empty"),
    ("bm25-index", ["--corpus", "{t}/bad.jsonl", "--index", "{t}/b"], "bad.jsonl:2"),
    ("bm25-index", ["--corpus", "{t}/blank.jsonl", "--index", "{t}/b"], "blank.jsonl holds no documents"),
    ("export", ["--index", "{t}/none", "--uri", "{t}/m.db", "--collection", "c"], "none"),
    ("export", ["--index", "{t}/empty", "--uri", "{t}/m.db", "--collection", "c"], "splade_lucene.json"),
    ("serve", ["--index", "{t}/none"], "no folder"),
    ("serve", ["--index", "{t}/empty"], "has no splade_lucene.json"),
    ("serve", ["--index", "{t}/empty", "--workers", "0"], "workers must be at least 1"),
    ("serve", ["--index", "{t}/empty", "--port", "70000"], "port must be 0-65535"),
    ("serve", ["--index", "a=b={t}/empty"], "no folder"),
    ("mcp", ["--index", "{t}/empty"], "has no splade_lucene.json"),
    ("mcp", ["--index", "{t}/empty", "--workers", "2"], "--workers is for `serve`"),
    ("serve", ["--index", "{t}/empty", "--api-key-file", "{t}/none"], "no API key file"),
    ("serve", ["--index", "{t}/empty", "--api-key-file", "{t}/queries.tsv"], "shorter than 16 characters"),
    # inputs that hold nothing (empty, or blank lines only): an index or a run of nothing is no result
    ("encode", ["--corpus", "{t}/blank.jsonl", "--output", "{t}/c"], "blank.jsonl holds no documents"),
    ("search", ["--index", "{t}/empty", "--queries", "{t}/blank.tsv", "--output", "{t}/r"],
     "blank.tsv holds no queries"),
    ("search", ["--index", "{t}/empty", "--queries", "{t}/blank.jsonl", "--pretokenized", "--output", "{t}/r"],
     "blank.jsonl holds no queries"),
    ("encode-queries", ["--index", "{t}/empty", "--queries", "{t}/blank.jsonl", "--output", "{t}/t"],
     "blank.jsonl holds no queries"),
    ("evaluate", ["--qrels", "{t}/blank.tsv", "--run", "{t}/run.trec"], "blank.tsv: no judgments"),
    ("evaluate", ["--qrels", "{t}/blankdata/qrels/test.tsv", "--run", "{t}/run.trec"], "test.tsv: no judgments"),
    ("evaluate", ["--qrels", "{t}/good.qrels", "--run", "{t}/blank.jsonl"], "blank.jsonl holds no run lines"),
    ("experiment", ["--dataset", "{t}/blankdata", "--output", "{t}/e"], "test.tsv: no judgments"),
    ("train", ["--dataset", "{t}/blankdata", "--output", "{t}/m"], "corpus.jsonl holds no documents"),
    ("reproduce", ["{t}/blank.yaml", "--output", "{t}/o"], "blank.yaml"),
]


@pytest.mark.parametrize("command, args, named", CASES, ids=[f"{c[0]}-{i}" for i, c in enumerate(CASES)])
def test_every_subcommand_refuses_broken_input_in_one_line(broken, capsys, command, args, named):
    code = cli.main(["--quiet", command, *[a.format(t=broken) for a in args]])
    err = capsys.readouterr().err.strip()
    assert code == 2, err
    assert "\n" not in err and err.startswith(f"splade-lucene {command}: error: ") and named in err, err


def test_every_subcommand_is_covered_by_a_broken_input():
    assert {c[0] for c in CASES} == set(cli.HANDLERS)


# ---- outputs that cannot be written --------------------------------------------------------------

WRITERS = [  # each command that writes, its output option last; inputs need not exist: outputs come first
    ("encode", ["--corpus", "{t}/none.jsonl", "--output"], "folder"),
    ("index", ["--collection", "{t}/none", "--index"], "folder"),
    ("merge", ["{t}/none", "--index"], "folder"),
    ("search", ["--index", "{t}/none", "--queries", "{t}/none.tsv", "--output"], "file"),
    ("encode-queries", ["--index", "{t}/none", "--queries", "{t}/none.tsv", "--output"], "file"),
    ("export-onnx", ["--output"], "folder"),
    ("train", ["--dataset", "{t}/none", "--output"], "folder"),
    ("train", ["--dataset", "{t}/none", "--output", "{t}/m", "--plot"], "file"),
    ("experiment", ["--dataset", "{t}/none", "--output"], "folder"),
    ("reproduce", ["{t}/none.yaml", "--output"], "folder"),
    ("report", ["--output", "{t}/none", "--markdown"], "file"),
    ("report", ["--output", "{t}/none", "--plot"], "file"),
]


@pytest.fixture
def in_the_way(tmp_path):
    (tmp_path / "afile").write_text("a file\n")
    (tmp_path / "afolder").mkdir()
    return tmp_path


@pytest.mark.parametrize("command, args, kind", WRITERS, ids=[f"{w[0]}-{i}" for i, w in enumerate(WRITERS)])
@pytest.mark.parametrize("where", ["other-kind", "inside-a-file", "nested-inside-a-file"])
def test_an_output_that_cannot_be_written_is_refused_before_any_work(in_the_way, capsys, command, args, kind, where):
    target = {"other-kind": in_the_way / ("afile" if kind == "folder" else "afolder"),
              "inside-a-file": in_the_way / "afile" / "out", "nested-inside-a-file": in_the_way / "afile" / "a" / "b"}
    code = cli.main(["--quiet", command, *[a.format(t=in_the_way) for a in args], str(target[where])])
    err = capsys.readouterr().err.strip()
    assert code == 2 and "\n" not in err and err.startswith(f"splade-lucene {command}: error: "), err
    assert ("is a file" in err or "is a folder" in err) and "choose another path" in err, err
    assert (in_the_way / "afile").read_text() == "a file\n" and not any((in_the_way / "afolder").iterdir())
    assert sorted(p.name for p in in_the_way.iterdir()) == ["afile", "afolder"]  # nothing written beside


@pytest.mark.parametrize("command", ["impacts", "blockmax"])
def test_impacts_refuses_an_index_it_cannot_write_into(in_the_way, capsys, command):
    code = cli.main(["--quiet", command, "--index", str(in_the_way / "afile")])
    err = capsys.readouterr().err.strip()
    assert code == 2 and "afile" in err and "is a file" in err, err


@pytest.mark.parametrize("command, args, kind", WRITERS, ids=[f"{w[0]}-{i}" for i, w in enumerate(WRITERS)])
def test_an_output_on_a_read_only_file_system_is_refused(read_only_dir, capsys, command, args, kind):
    """As root, permission bits stop no write: a read-only mount does."""
    code = cli.main(["--quiet", command, *[a.format(t=read_only_dir) for a in args], str(read_only_dir / "out")])
    err = capsys.readouterr().err.strip()
    assert code == 2 and "\n" not in err and "read-only file system" in err and str(read_only_dir) in err, err


MINIMAL = {"encode": ["--corpus", "c", "--output", "o"], "experiment": [], "train": ["--dataset", "d", "--output", "o"],
           "search": ["--index", "i", "--queries", "q", "--output", "o"]}


def record_flags():
    from splade_lucene.encoding.model import EncoderSettings
    from splade_lucene.formats.metadata import CollectionOptions
    from splade_lucene.search.engines import SearchSettings
    from splade_lucene.training.settings import TrainSettings

    return [("encode", EncoderSettings, ()), ("encode", CollectionOptions, ()),
            ("experiment", EncoderSettings, ("threads",)), ("experiment", CollectionOptions, ()),
            ("experiment", SearchSettings, ()), ("search", SearchSettings, ()), ("train", TrainSettings, ("pairs",))]


@pytest.mark.parametrize("command,record,skip", record_flags())
def test_a_records_flags_come_from_the_record(command, record, skip):
    """Each option of a settings record is a flag of the commands that take the record, with the
    record's default: a new option needs no flag written by hand."""
    import dataclasses

    parser = cli.build_parser()
    sub = next(a for a in parser._actions if a.dest == "command").choices[command]
    dests = {a.dest for a in sub._actions}
    assert {f.name for f in dataclasses.fields(record)} - set(skip) <= dests
    args = parser.parse_args([command, *MINIMAL[command]])
    given = {"pairs": "qrels"} if "pairs" in skip else {}
    assert cli.settings_from(record, args, skip=tuple(s for s in skip if s != "pairs"), **given) == record()
