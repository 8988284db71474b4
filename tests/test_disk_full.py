"""A full disk: on a small tmpfs made for the test, encode, index and search each fail with one line
naming the file system and what was being written, leave nothing that looks complete, and succeed
once space is freed, with the output an undisturbed run gives."""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
import uuid
from pathlib import Path

import pytest
from conftest import unavailable

REPO = Path(__file__).resolve().parent.parent


def cli(*args: str) -> list[str]:
    return [sys.executable, "-m", "splade_lucene", "--quiet", *args]


def digests(folder: Path) -> dict[str, str]:
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(folder.iterdir()) if p.is_file()}


@pytest.fixture
def small_fs(tmp_path):
    """A tmpfs of a given size (``mount(size)``, ``grow()`` to free space), unmounted afterwards."""
    if not sys.platform.startswith("linux") or os.geteuid() != 0:
        unavailable("mounting a small file system needs Linux and root (CI runs as root)")
    where = tmp_path / f"fs-{uuid.uuid4().hex[:6]}"
    where.mkdir()

    class FS:
        path = where

        def mount(self, size: str):
            proc = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(where)],
                                  capture_output=True, text=True)
            if proc.returncode != 0:
                unavailable(f"a tmpfs cannot be mounted here: {proc.stderr.strip()}")
            return where

        def grow(self):
            subprocess.run(["mount", "-o", "remount,size=256m", str(where)], check=True)

    fs = FS()
    yield fs
    subprocess.run(["umount", str(where)], capture_output=True)


def one_line_disk_full(proc, fs: Path, written: Path) -> None:
    assert proc.returncode == 2, proc.stderr
    line = proc.stderr.strip()
    assert "\n" not in line and f"no space left on {fs} while writing" in line and str(written) in line, line


def test_encode_on_a_full_disk(datasets, tmp_path, small_fs):
    corpus = tmp_path / "corpus.jsonl"
    with open(datasets / "cranfield" / "corpus.jsonl", encoding="utf-8") as fh:
        corpus.write_text("".join(next(fh) for _ in range(240)), encoding="utf-8")
    args = ["encode", "--corpus", str(corpus), "--part-size", "40"]
    ref = subprocess.run(cli(*args, "--output", str(tmp_path / "ref")), cwd=REPO, capture_output=True, text=True)
    assert ref.returncode == 0, ref.stderr
    fs = small_fs.mount("256k")  # the collection needs about 1 MB
    out = fs / "collection"
    full = subprocess.run(cli(*args, "--output", str(out)), cwd=REPO, capture_output=True, text=True)
    one_line_disk_full(full, fs, out)
    assert not out.exists()  # nothing that looks complete (finished parts wait in .collection.writing)
    small_fs.grow()
    again = subprocess.run(cli(*args, "--output", str(out)), cwd=REPO, capture_output=True, text=True)
    assert again.returncode == 0, again.stderr
    assert digests(out) == digests(tmp_path / "ref")  # byte-identical, collection.meta included


def test_index_build_and_search_on_a_full_disk(cranfield, datasets, tmp_path, small_fs):
    collection = cranfield["base"] / "vector"
    fs = small_fs.mount("1m")  # the index and its impact table need several MB
    index = fs / "index"
    full = subprocess.run(cli("index", "--collection", str(collection), "--index", str(index)), cwd=REPO,
                          capture_output=True, text=True)
    one_line_disk_full(full, fs, index)
    assert sorted(p.name for p in fs.iterdir()) == []  # no index, no temporary folder
    small_fs.grow()
    built = subprocess.run(cli("index", "--collection", str(collection), "--index", str(index)), cwd=REPO,
                           capture_output=True, text=True)
    assert built.returncode == 0, built.stderr
    queries = datasets / "cranfield" / "queries.jsonl"
    ref = tmp_path / "ref.trec"
    search = ["search", "--index", str(cranfield["vector_index"]), "--queries", str(queries)]
    assert subprocess.run(cli(*search, "--output", str(ref)), cwd=REPO, capture_output=True).returncode == 0
    # the index rebuilt after the full disk searches as the undisturbed one does
    rebuilt = tmp_path / "rebuilt.trec"
    assert subprocess.run(cli("search", "--index", str(index), "--queries", str(queries), "--output", str(rebuilt)),
                          cwd=REPO, capture_output=True).returncode == 0
    assert rebuilt.read_bytes() == ref.read_bytes()
    subprocess.run(["umount", str(fs)], check=True)
    fs = small_fs.mount("512k")  # a run of 225 queries x 1000 hits is about 10 MB
    run = fs / "run.trec"
    full = subprocess.run(cli(*search, "--output", str(run)), cwd=REPO, capture_output=True, text=True)
    one_line_disk_full(full, fs, run)
    assert list(fs.iterdir()) == []  # no run file, no temporary one
    small_fs.grow()
    assert subprocess.run(cli(*search, "--output", str(run)), cwd=REPO, capture_output=True).returncode == 0
    assert run.read_bytes() == ref.read_bytes()
