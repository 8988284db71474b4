"""The one way files and folders are written: beside the target, fsynced, renamed."""

from __future__ import annotations

import pytest

from splade_lucene.core.atomic import atomic_file, move_into_place, write_text
from splade_lucene.formats.trec import Hit, write_run


def test_a_failed_write_leaves_the_old_file_and_no_temporary(tmp_path):
    target = tmp_path / "metrics.json"
    write_text(target, "old\n")
    with pytest.raises(RuntimeError):
        with atomic_file(target) as fh:
            fh.write("half of the new")
            raise RuntimeError("disk gone")
    assert target.read_text() == "old\n" and sorted(p.name for p in tmp_path.iterdir()) == ["metrics.json"]
    with atomic_file(target, "wb") as fh:
        fh.write(b"new\n")
    assert target.read_bytes() == b"new\n" and len(list(tmp_path.iterdir())) == 1


def test_a_run_file_is_whole_or_the_previous_one(tmp_path):
    run = tmp_path / "runs" / "run.trec"
    write_run({"q1": [Hit("d1", 2.0)]}, run)
    first = run.read_text()
    assert first == "q1 Q0 d1 1 2.000000 splade-lucene\n"

    class Exploding(dict):
        def items(self):
            yield "q1", [Hit("d2", 3.0)]
            raise OSError("no space left on device")

    with pytest.raises(OSError):
        write_run(Exploding(), run)
    assert run.read_text() == first and sorted(p.name for p in run.parent.iterdir()) == ["run.trec"]


def test_a_folder_is_replaced_whole(tmp_path):
    target, new = tmp_path / "index", tmp_path / "index.building-1"
    target.mkdir()
    (target / "a").write_text("old")
    new.mkdir()
    (new / "b").write_text("new")
    move_into_place(new, target)
    assert [p.name for p in target.iterdir()] == ["b"] and sorted(p.name for p in tmp_path.iterdir()) == ["index"]
    other = tmp_path / "fresh.tmp"
    other.mkdir()
    move_into_place(other, tmp_path / "deeper" / "fresh")
    assert (tmp_path / "deeper" / "fresh").is_dir()
