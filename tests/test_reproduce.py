"""Experiment files, grading, the shipped experiments (run in full), determinism, table and plot."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from splade_lucene.evaluation.metrics import METRICS
from splade_lucene.experiments.reproduce import ExperimentFileError, Grade, load_spec, sha256_file

REPO = Path(__file__).resolve().parent.parent
SHIPPED = sorted((REPO / "scripts" / "experiments").glob("*.yaml"))
CONDITIONS = ["bm25", "splade", "hybrid-rrf", "hybrid-linear"]


def test_grading_to_four_decimals():
    assert Grade("d", "c", "nDCG@10", 0.6789, 0.67894).status == "OK"
    failed = Grade("d", "c", "nDCG@10", 0.6789, 0.67896)
    assert failed.status == "FAIL"
    assert failed.line() == "[FAIL] d/c nDCG@10: expected 0.6789, got 0.6790"
    assert Grade("d", "c", "MAP", None, 0.5).status == "UNCHECKED"


def test_seed_variants_and_their_spread(tmp_path):
    """--seeds: every training condition gains one ungraded NAME@seedS per new seed (its own seed and
    repeats add nothing; other conditions untouched), and the spread is the mean and sample sd of the
    figures over a condition's seeds, its own run included."""
    from splade_lucene.experiments.reproduce import spreads, with_seeds

    path = tmp_path / "x.yaml"
    path.write_text("dataset: x\nconditions:\n  b: {type: bm25}\n  t: {type: train, train: {epochs: 2}}\n"
                    "  u: {type: train, train: {seed: 14}, expected: {nDCG@10: 0.5}}\n")
    spec = with_seeds(load_spec(path), [13, 14, 14, 15])
    assert list(spec.conditions) == ["b", "t", "t@seed14", "t@seed15", "u", "u@seed13", "u@seed15"]
    assert spec.conditions["t@seed15"].settings["train"] == {"epochs": 2, "seed": 15}
    assert spec.conditions["u@seed13"].expected == {} and spec.conditions["u"].expected == {"nDCG@10": 0.5}
    assert load_spec(path).conditions["t"].settings["train"] == {"epochs": 2}  # the file's record untouched
    with pytest.raises(ExperimentFileError, match="non-negative integers"):
        with_seeds(load_spec(path), [-1])

    grades = [Grade("x", "t", "nDCG@10", None, 0.4005), Grade("x", "t@seed14", "nDCG@10", None, 0.3653),
              Grade("x", "t@seed15", "nDCG@10", None, 0.3674), Grade("x", "t@seed15", "MAP", None, 0.2),
              Grade("x", "b", "nDCG@10", None, 0.45), Grade("x", "u", "nDCG@10", 0.5, 0.5)]
    (spread,) = spreads(grades, {("x", "t"): 13, ("x", "u"): 14})  # u ran with one seed: no spread
    assert (spread.condition, spread.seeds, spread.values) == ("t", [13, 14, 15], [0.4005, 0.3653, 0.3674])
    mean = (0.4005 + 0.3653 + 0.3674) / 3
    sd = (((0.4005 - mean) ** 2 + (0.3653 - mean) ** 2 + (0.3674 - mean) ** 2) / 2) ** 0.5
    assert spread.mean == pytest.approx(mean, abs=1e-15) and spread.sd == pytest.approx(sd, abs=1e-15)
    assert spread.line() == ("x/t nDCG@10 over 3 seeds: mean 0.3777, sd 0.0197 "
                             "(13: 0.4005, 14: 0.3653, 15: 0.3674)")


def test_chosen_conditions_run_only_in_the_files_that_have_them(tiny_dataset, tmp_path):
    """--conditions with several files: a file without any chosen condition is skipped, not run whole;
    a condition no file has is refused before anything runs."""
    from splade_lucene.experiments.reproduce import reproduce

    absent = tmp_path / "absent.yaml"  # its dataset does not exist: running it would fail
    absent.write_text("dataset: no-such-dataset\nconditions: {a: {type: bm25}}\n")
    small = tmp_path / "small.yaml"
    small.write_text(f"dataset: {tiny_dataset}\nsplit: train\nk: 10\nconditions: {{a2: {{type: bm25}}, "
                     "b: {type: bm25, k1: 1.2}}\n")
    with pytest.raises(ExperimentFileError, match=r"no experiment file has the condition\(s\) \['c'\]"):
        reproduce([absent, small], tmp_path / "out", conditions=["b", "c"], echo=lambda line: None)
    assert not (tmp_path / "out").exists()
    grades = reproduce([absent, small], tmp_path / "out", conditions=["b"], progress=False, echo=lambda line: None)
    assert {g.condition for g in grades} == {"b"} and not (tmp_path / "out" / "scifact" / "a2").exists()


@pytest.mark.parametrize("body, message", [
    ("dataset: x\n", "needs 'dataset' and a 'conditions' mapping"),
    ("dataset: x\nconditions: {a: {type: dense}}\n", "condition 'a' needs 'type'"),
    ("dataset: x\nconditions: {a: {type: bm25, k3: 1}}\n", r"unknown settings \['k3'\]"),
    ("dataset: x\nconditions: {a: {type: bm25, expected: {P@5: 0.1}}}\n", r"unknown metrics \['P@5'\]"),
    ("dataset: x\nconditions: {a: {type: bm25}, h: {type: rrf, runs: [a, b]}}\n", "needs 'runs'"),
    ("dataset: x\ncondition: {}\nconditions: {}\n", r"unknown keys \['condition'\]"),
    ("dataset: [x\n", "not valid YAML"),
    ("dataset: x\nplain: yes please\nconditions: {a: {type: bm25}}\n", "'plain' is true or false"),
])
def test_bad_experiment_files_are_refused_naming_the_file(tmp_path, body, message):
    path = tmp_path / "bad.yaml"
    path.write_text(body)
    with pytest.raises(ExperimentFileError, match=f"bad.yaml: .*{message}"):
        load_spec(path)


@pytest.mark.parametrize("path", SHIPPED, ids=[p.stem for p in SHIPPED])
def test_shipped_files_have_every_condition_and_expected_score(path):
    spec = load_spec(path)
    assert list(spec.conditions) == CONDITIONS
    for cond in spec.conditions.values():
        assert set(cond.expected) == set(METRICS), (path.name, cond.name)
    assert [p.stem for p in SHIPPED] == ["cacm", "cranfield", "scifact"]


def test_plain_runs_on_a_copy_without_titles_or_punctuation(datasets, tmp_path, monkeypatch):
    """`plain: true`: the conditions run on a copy of the dataset made by plain_dataset, named NAME-plain."""
    from splade_lucene.experiments.reproduce import reproduce

    spec = tmp_path / "plain.yaml"
    spec.write_text("dataset: cranfield\nplain: true\nremove_query: false\nconditions: {bm25: {type: bm25}}\n")
    monkeypatch.setenv("SPLADE_LUCENE_DATA", str(datasets))
    grades = reproduce([spec], tmp_path / "out", progress=False, echo=lambda line: None)
    copy = tmp_path / "out" / "datasets" / "cranfield-plain"
    first = json.loads((copy / "corpus.jsonl").read_text().splitlines()[0])
    assert first["title"] == "" and first["text"].startswith("experimental investigation of the aerodynamics of a wing")
    manifest = json.loads((tmp_path / "out" / "cranfield-plain" / "bm25" / "manifest.json").read_text())
    assert manifest["dataset"]["folder"] == str(copy) and manifest["dataset"]["name"] == "cranfield-plain"
    assert {g.condition for g in grades} == {"bm25"} and 0.2 < next(g.actual for g in grades
                                                                     if g.metric == "nDCG@10") < 0.4


def test_hybrid_settings_are_the_same_in_every_file():
    settings = {p.stem: {n: c.settings for n, c in load_spec(p).conditions.items() if n.startswith("hybrid")}
                for p in SHIPPED}
    assert len({json.dumps(s, sort_keys=True) for s in settings.values()}) == 1


@pytest.mark.slow
def test_every_shipped_experiment_reproduces(reproduced):
    out, proc, _ = reproduced
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-3000:]
    assert "FAIL" not in proc.stdout
    assert f"{len(SHIPPED) * len(CONDITIONS) * len(METRICS)} of {len(SHIPPED) * len(CONDITIONS) * len(METRICS)} " \
           "checks OK" in proc.stdout
    for dataset in ("scifact", "cranfield", "cacm"):
        for cond in CONDITIONS:
            assert (out / dataset / cond / "run.trec").stat().st_size > 0


@pytest.mark.slow
def test_bm25_reproduces_the_published_scifact_figures(reproduced):
    out, _, _ = reproduced
    metrics = json.loads((out / "scifact" / "bm25" / "metrics.json").read_text())
    assert (round(metrics["nDCG@10"], 4), round(metrics["R@100"], 4), round(metrics["R@1000"], 4)) == \
        (0.6789, 0.9253, 0.9767)


@pytest.mark.slow
def test_manifest_records_how_the_result_was_made(reproduced, datasets):
    out, _, _ = reproduced
    manifest = json.loads((out / "scifact" / "splade" / "manifest.json").read_text())
    assert manifest["settings"]["scale"] == 100 and manifest["settings"]["model"] == "splade-tiny"
    assert len(manifest["model"]["sha256"]) == 64
    assert manifest["dataset"]["sha256"]["corpus.jsonl"] == sha256_file(datasets / "scifact" / "corpus.jsonl")
    for key in ("pyserini", "anserini", "java", "torch", "transformers", "splade-lucene"):
        assert manifest["versions"][key]
    index = manifest["index"]
    assert index["documents"] == 5183 and index["size_bytes"] > 1_000_000 and index["unique_terms"] > 10_000
    assert 100 < index["mean_terms_per_document"] < 1000 and index["mean_terms_per_query"] > 5
    assert index["mean_postings_per_query"] > index["mean_terms_per_query"]
    assert set(manifest["seconds"]) >= {"encode", "index", "search", "evaluate"}
    assert manifest["run_sha256"] == sha256_file(out / "scifact" / "splade" / "run.trec")
    hybrid = json.loads((out / "scifact" / "hybrid-rrf" / "manifest.json").read_text())
    assert hybrid["components"]["splade"]["run_sha256"] == manifest["run_sha256"]


@pytest.mark.slow
def test_rerun_gives_a_byte_identical_run_file(reproduced, cli_experiment):
    # Two independent runs of the Cranfield SPLADE experiment (reproduce, and the command line).
    out, _, _ = reproduced
    cli_out, proc = cli_experiment
    assert proc.returncode == 0
    assert sha256_file(out / "cranfield" / "splade" / "run.trec") == sha256_file(cli_out / "run.trec")


@pytest.mark.slow
def test_report_regenerates_table_and_plot(reproduced):
    out, _, report = reproduced
    assert report.returncode == 0, report.stderr[-3000:]
    table = (out / "results.md").read_text()
    assert table.startswith("| collection | condition | nDCG@10 |")
    assert len(table.splitlines()) == 2 + 3 * 4
    assert "| scifact | bm25 | 0.6789 |" in table
    png = (out / "results.png").read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) > 20_000
