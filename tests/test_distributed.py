"""Distributed encoding on a local Ray cluster: the same files as a local run, a killed worker loses
nothing, a run resumes from parts finished in any order, bad input names its line."""

from __future__ import annotations

import gzip
import json
import os
import signal
import threading
import time
from pathlib import Path

import pytest
from conftest import need_module, read_vectors

from splade_lucene.encoding.distributed import corpus_parts, read_part
from splade_lucene.encoding.local import encode_corpus
from splade_lucene.encoding.writing import PROGRESS_FILE, run_settings
from splade_lucene.formats.collection import InputError, read_corpus
from splade_lucene.formats.metadata import CollectionOptions

PART = 50
PARTS = CollectionOptions(part_size=PART)


@pytest.fixture(scope="module")
def corpus(datasets, tmp_path_factory) -> Path:
    """The first 500 Cranfield documents, with a blank line among them."""
    path = tmp_path_factory.mktemp("ray-corpus") / "corpus.jsonl"
    with open(datasets / "cranfield" / "corpus.jsonl", encoding="utf-8") as fh:
        lines = [next(fh) for _ in range(500)]
    path.write_text("".join(lines[:120] + ["\n"] + lines[120:]), encoding="utf-8")
    return path


@pytest.fixture(scope="module")
def local(corpus, encoder, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("ray-local") / "collection"
    encode_corpus(corpus, out, encoder=encoder, progress=False, options=PARTS)
    return out


@pytest.fixture(scope="module")
def cluster():
    """A local Ray cluster of 2 CPUs for this module (the engine reuses a running one)."""
    from splade_lucene.encoding.distributed import start_ray, stop_ray

    ray, started = start_ray(workers=2)
    assert started
    yield ray
    stop_ray(ray)


def files(folder: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(folder.iterdir())}


def test_parts_are_byte_ranges_of_whole_documents(corpus):
    parts = corpus_parts(corpus, PART)
    assert [p["documents"] for p in parts] == [PART] * 10
    assert parts[2]["first_line"] == 101 and parts[3]["first_line"] == 152  # the blank line 121 is skipped
    docs = [d for p in parts for d in read_part(corpus, p)]
    assert [(i, t, line) for i, t, line in docs] == [(d.id, d.text, d.line) for d in read_corpus(corpus)]


def test_ray_output_equals_local_output_file_for_file(cluster, corpus, encoder, local, tmp_path):
    summary = encode_corpus(corpus, tmp_path / "ray", encoder=encoder, progress=False, executor="ray", options=PARTS)
    assert summary.documents == 500
    assert files(tmp_path / "ray") == files(local)  # every part and collection.meta, byte for byte
    assert read_vectors(tmp_path / "ray") == read_vectors(local)


def _descendants_named(word: str) -> list[int]:
    """Processes under this one (Ray's raylet and its workers) whose command line holds ``word``."""
    parents = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                stat = (entry / "stat").read_text()
                parents[int(entry.name)] = int(stat.rsplit(")", 1)[1].split()[1])
            except (OSError, ValueError, IndexError):
                continue
    found = []
    for pid in parents:
        ancestor, hops = parents.get(pid), 0
        while ancestor and ancestor != os.getpid() and hops < 10:
            ancestor, hops = parents.get(ancestor), hops + 1
        if ancestor == os.getpid():
            try:
                if word in (Path("/proc") / str(pid) / "cmdline").read_bytes().decode(errors="replace"):
                    found.append(pid)
            except OSError:
                continue
    return found


@pytest.mark.skipif(not Path("/proc").is_dir(), reason="finds Ray's worker processes through /proc")
def test_a_worker_killed_mid_way_loses_no_document(cluster, corpus, encoder, local, tmp_path):
    out = tmp_path / "ray"
    progress = tmp_path / ".ray.writing" / PROGRESS_FILE
    killed: list[int] = []

    def kill_a_worker() -> None:
        end = time.monotonic() + 600
        while time.monotonic() < end and not killed:
            done = json.loads(progress.read_text())["parts"] if progress.is_file() else []
            workers = _descendants_named("MapWorker")
            if 1 <= len(done) <= 6 and workers:
                os.kill(workers[0], signal.SIGKILL)  # mid-way through its next part
                killed.append(len(done))
            time.sleep(0.05)

    watcher = threading.Thread(target=kill_a_worker, daemon=True)
    watcher.start()
    summary = encode_corpus(corpus, out, encoder=encoder, progress=False, executor="ray", options=PARTS)
    watcher.join(timeout=5)
    assert killed, "no worker was killed while parts remained"
    assert summary.documents == 500
    assert files(out) == files(local)
    ids = [json.loads(line)["id"] for f in sorted(out.glob("*.jsonl")) for line in f.read_text().splitlines()]
    assert len(ids) == len(set(ids)) == 500


def test_resumes_from_parts_finished_out_of_order(cluster, corpus, encoder, local, tmp_path, monkeypatch):
    from splade_lucene.encoding import local as enc

    # a run that stopped after 8 parts, with its real progress.json ...
    original = enc.encode_by_part

    def stop_after_8_parts(*args, **kwargs):
        for n, item in enumerate(original(*args, **kwargs)):
            if n == 8 * PART:
                raise RuntimeError("stopped")
            yield item

    monkeypatch.setattr(enc, "encode_by_part", stop_after_8_parts)
    with pytest.raises(RuntimeError, match="stopped"):
        encode_corpus(corpus, tmp_path / "ray", encoder=encoder, progress=False, options=PARTS)
    monkeypatch.undo()
    # ... reduced to what a killed distributed run leaves: parts 1, 4 and 7, and a part being written
    writing = tmp_path / ".ray.writing"
    state = json.loads((writing / PROGRESS_FILE).read_text())
    assert state["settings"] == run_settings(corpus, encoder, options=PARTS)
    keep = {f"part-{n:05d}.jsonl" for n in (1, 4, 7)}
    state["parts"] = [p for p in state["parts"] if p["file"] in keep]
    (writing / PROGRESS_FILE).write_text(json.dumps(state))
    for path in writing.glob("part-*"):
        if path.name not in keep:
            path.unlink()
    (writing / "part-00009.jsonl.partial").write_text("half a part\n")
    summary = encode_corpus(corpus, tmp_path / "ray", encoder=encoder, progress=False, executor="ray", options=PARTS)
    assert summary.resumed_documents == 3 * PART
    assert files(tmp_path / "ray") == files(local)


def test_bad_input_names_its_line_and_writes_nothing(cluster, corpus, encoder, tmp_path):
    lines = corpus.read_text().splitlines(keepends=True)
    bad = tmp_path / "bad.jsonl"
    bad.write_text("".join(lines[:230] + ["{not json\n"] + lines[230:]))
    with pytest.raises(InputError, match=r"bad.jsonl:231: not valid JSON"):
        encode_corpus(bad, tmp_path / "out", encoder=encoder, progress=False, executor="ray", options=PARTS)
    assert not (tmp_path / "out").exists()
    twice = tmp_path / "twice.jsonl"
    twice.write_text("".join(lines + [lines[0]]))
    with pytest.raises(InputError, match=r"duplicate document id '1' \(line 502; first line 1\)"):
        encode_corpus(twice, tmp_path / "out", encoder=encoder, progress=False, executor="ray", options=PARTS)
    assert not (tmp_path / "out").exists()
    packed = tmp_path / "corpus.jsonl.gz"
    with gzip.open(packed, "wt") as fh:
        fh.write("".join(lines[:10]))
    with pytest.raises(InputError, match="gunzip"):
        encode_corpus(packed, tmp_path / "out", encoder=encoder, progress=False, executor="ray", options=PARTS)
    with pytest.raises(ValueError, match="executor"):
        encode_corpus(corpus, tmp_path / "out", encoder=encoder, progress=False, executor="spark")


def test_command_line_engine_ray(corpus, local, tmp_path):
    """`splade-lucene encode --executor ray` (its own local cluster, one worker) writes the same parts."""
    import subprocess
    import sys

    small = tmp_path / "small.jsonl"
    small.write_text("".join(corpus.read_text().splitlines(keepends=True)[:PART]))
    out = tmp_path / "cli"
    proc = subprocess.run([sys.executable, "-m", "splade_lucene", "--quiet", "encode", "--corpus", str(small),
                           "--output", str(out), "--part-size", str(PART), "--executor", "ray", "--workers", "1"],
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert f"encoded {PART} documents" in proc.stdout
    assert (out / "part-00000.jsonl").read_bytes() == (local / "part-00000.jsonl").read_bytes()
    proc = subprocess.run([sys.executable, "-m", "splade_lucene", "--quiet", "encode", "--corpus", str(small) + ".gz",
                           "--output", str(tmp_path / "gz"), "--executor", "ray"], capture_output=True, text=True)
    assert proc.returncode == 2 and "no such corpus file" in proc.stderr


JVM_BESIDE_RAY = r"""
import json, ray, signal
from jnius import JavaException
from splade_lucene.core.java import autoclass, ensure_jvm, keep_signal_handlers, signal_handlers
from splade_lucene.encoding.distributed import start_ray, stop_ray

ensure_jvm()
jvm = signal_handlers()
out = {"jvm_handles": all(jvm.values())}
with keep_signal_handlers():  # plain Ray, for the record of what it does
    ray.init(num_cpus=1, include_dashboard=False, log_to_driver=False, logging_level="error")
    out["init_replaces"] = all(signal_handlers()[s] != jvm[s] for s in jvm)
    ray.shutdown()
    out["shutdown_leaves_others"] = signal_handlers()[signal.SIGSEGV] != jvm[signal.SIGSEGV]  # reset to the default
out["restored"] = signal_handlers() == jvm
r, _ = start_ray(workers=1)
out["kept_running"] = r.get(r.remote(lambda: 1).remote()) == 1 and signal_handlers() == jvm
stop_ray(r)
out["kept_after"] = signal_handlers() == jvm
# compiled Java code meets null: the JVM's SIGSEGV handler turns it into NullPointerException
ArrayList, thrown = autoclass("java.util.ArrayList"), 0
for _ in range(20000):
    try:
        ArrayList(None)
    except JavaException:
        thrown += 1
out["exceptions"] = thrown
print(json.dumps(out))
"""


def test_ray_leaves_the_jvms_signal_handlers(tmp_path):
    """Plain ray.init puts Ray's crash handlers over the JVM's and ray.shutdown resets them to the
    default action, after which the JVM's next deliberate null dereference kills the process (the
    segfaults that once stopped this suite). start_ray and stop_ray leave them as they were."""
    import subprocess
    import sys

    need_module("ray", "ray")
    proc = subprocess.run([sys.executable, "-c", JVM_BESIDE_RAY], capture_output=True, text=True, timeout=600,
                          cwd=tmp_path)
    assert proc.returncode == 0, f"exit {proc.returncode}: {proc.stderr[-3000:]}"
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    assert out == {"jvm_handles": True, "init_replaces": True, "shutdown_leaves_others": True, "restored": True,
                   "kept_running": True, "kept_after": True, "exceptions": 20000}
